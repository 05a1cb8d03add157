"""`NegMergeUnlearner`: the whole unlearning run as one Python object, trl-style.

Built from a live model (or a path / Hub id), its processor and `datasets` objects, configured
by the recipe's section objects (`GridSpec`, `NegMergeConfig`, `EvaluationConfig`). Its stages
(`prepare_data`, `prepare_original`, `train_grid`, `merge`, `choose_lambda`, `evaluate`, `run`)
can be called one by one or all at once; each runs the ones before it that have not run, and
resumes from the output folder as `hf-negmerge unlearn` does (θ₀ cached, finished grid runs
reused). This is the one implementation of the stages: `pipeline.run_unlearning` (and with it the
CLI) builds an unlearner from a recipe and calls `run`.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from .config import NegMergeConfig
from .data import DataConfig, UnlearningData, build_unlearning_data, is_in_memory
from .errors import ConfigError
from .lambda_search import LambdaSelection
from .merging import MergeResult
from .models import ModelConfig
from .originals import (
    describe_original,
    model_label_names,
    note_validation_source,
    prepare_original,
    prepare_retrained,
)
from .output_folder import WORK_DIR
from .published_paths import portable_paths
from .recipe import EvaluationConfig, UnlearnRecipe, load_recipe
from .results import RunResults, UnlearningOutcome
from .training.grid import GridSpec
from .training.runner import GridResult

#: Where a live model handed to the unlearner is saved (inside work/), so θ₀ has a folder.
GIVEN_MODEL_DIR = "given_model"
_GIVEN_MODEL_MARKER = "hf_negmerge_given_model.json"


@dataclass
class UnlearningResult:
    """What `NegMergeUnlearner.run` gives the main process: the live model and metrics.json's numbers.

    `model` is the unlearned model (θ₀ − λ·τ), of the class θ₀ was loaded as (the class given);
    `metrics` is metrics.json as `RunResults`; `outcome` is everything measured, with the merged
    vector. The output folder holds what `hf-negmerge unlearn` writes.
    """

    model: Any
    metrics: RunResults
    outcome: UnlearningOutcome
    output_dir: Path

    def save_pretrained(self, save_directory: str | Path) -> Path:
        """Write the output folder's published files into `save_directory` (a new or tool-written folder)."""
        return copy_output_folder(self.output_dir, save_directory)

    def push_to_hub(self, repo_id: str, **kwargs: Any) -> str:
        """Push the output folder (model, card, config, vector); keywords as `push_unlearned_model`."""
        from .hub.push import push_unlearned_model

        return push_unlearned_model(self.output_dir, repo_id, **kwargs)


def copy_output_folder(source: str | Path, target: str | Path) -> Path:
    """The complete output folder `source`'s published files, published into `target` atomically."""
    from .output_folder import check_output_dir, claim_output_folder, publish_outputs, verify_output_folder

    source, target = Path(source), check_output_dir(target)
    if target.exists() and target.resolve() == source.resolve():
        return target
    names = sorted(verify_output_folder(source).files)

    def build(staging: Path) -> None:
        for name in names:
            shutil.copy2(source / name, staging / name)

    with claim_output_folder(target):
        publish_outputs(target, build)
    return target


class NegMergeUnlearner:
    """Unlearn a forget set from a model by NegMerge: fine-tune a grid, merge, negate, choose λ.

    `model`: a live transformers model (`ViTForImageClassification`, `CLIPModel`,
    `ResNetForImageClassification`, or a peft model, whose adapters are merged into θ₀) or a local
    folder / Hub id. `processor`: its image processor (for CLIP a `CLIPProcessor`, which carries
    the tokenizer). Data: `dataset` (a `DatasetDict` with `train` and `test` splits, or any
    source `DataConfig.dataset` accepts) or `train_dataset` + `test_dataset`, with
    `forget_classes` (class forgetting) or `forget_fraction` (random forgetting); or a full
    `data=DataConfig(...)`. Left out, `grid`, `config` and `comparison` are the built-in default
    recipe's. Under `accelerate launch` the grid is shared among the processes and only the main
    process evaluates: `run`, `evaluate` and `choose_lambda` return None on the others.
    """

    def __init__(
        self,
        model: Any,
        processor: Any = None,
        dataset: Any = None,
        *,
        train_dataset: Any = None,
        test_dataset: Any = None,
        forget_classes: list[int | str] | None = None,
        forget_fraction: float | None = None,
        image_column: str = "image",
        label_column: str = "label",
        data: DataConfig | None = None,
        grid: GridSpec | None = None,
        config: NegMergeConfig | None = None,
        evaluation: EvaluationConfig | None = None,
        comparison: list[str] | None = None,
        model_config: ModelConfig | None = None,
        output_dir: str | Path = "negmerge-output",
        seed: int = 0,
        keep_checkpoints: bool = False,
        progress: bool = True,
        overwrite: bool = False,
    ) -> None:
        default = load_recipe()
        data = _data_config(
            default.data,
            data,
            dataset,
            train_dataset,
            test_dataset,
            forget_classes,
            forget_fraction,
            image_column,
            label_column,
        )
        given_dir = Path(output_dir) / WORK_DIR / GIVEN_MODEL_DIR
        live_model, model_section = _model_section(model, processor, model_config, given_dir)
        recipe = UnlearnRecipe(
            output_dir=str(output_dir),
            seed=seed,
            data=data,
            model=model_section,
            grid=grid if grid is not None else default.grid,
            merge=config if config is not None else default.merge,
            comparison=list(comparison) if comparison is not None else list(default.comparison),
            evaluation=evaluation if evaluation is not None else EvaluationConfig(),
            keep_checkpoints=keep_checkpoints,
        )
        self._setup(recipe, progress, overwrite, live_model, processor)

    @classmethod
    def from_recipe(
        cls, recipe: UnlearnRecipe, progress: bool = True, overwrite: bool = False
    ) -> NegMergeUnlearner:
        """The unlearner of a recipe (what `hf-negmerge unlearn` and `run_unlearning` run)."""
        unlearner = cls.__new__(cls)
        unlearner._setup(recipe, progress, overwrite, None, None)
        return unlearner

    def _setup(
        self, recipe: UnlearnRecipe, progress: bool, overwrite: bool, live_model: Any, processor: Any
    ) -> None:
        self.recipe = recipe
        self.progress = progress
        self.overwrite = overwrite
        self._live_model = live_model
        self._processor = processor
        self._state: Any = None  # accelerate's PartialState while a stage runs
        self._started: float | None = None
        self._seconds: dict[str, float] = {}
        self._data: UnlearningData | None = None
        self._base_dir: Path | None = None
        self._original_model: dict[str, Any] | None = None
        self._grid: GridResult | None = None
        self._evaluation: Any = None
        self._outcome: UnlearningOutcome | None = None
        self._result: UnlearningResult | None = None

    @property
    def output_dir(self) -> Path:
        return Path(self.recipe.output_dir)

    # ------------------------------------------------------------------ stages (public)

    def prepare_data(self) -> UnlearningData:
        """The forget / retain / validation / test splits."""
        with self._session():
            return self._prepare_data()

    def prepare_original(self) -> Path:
        """θ₀'s classifier folder (given, built from the model, or trained and cached)."""
        with self._session():
            return self._prepare_original()

    def train_grid(self) -> GridResult:
        """Fine-tune every grid point on the forget set (finished runs are reused)."""
        with self._session():
            return self._train_grid()

    def merge(self) -> MergeResult:
        """The merged task vector τ of `config.method` (folded in as the grid's runs finish)."""
        with self._session():
            return self._train_grid().merge

    def choose_lambda(self) -> LambdaSelection | None:
        """λ of the main method, chosen on validation under the retain (or control) constraint."""
        with self._session():
            outcome = self._evaluate()
            return None if outcome is None else outcome.main.selection

    def evaluate(self) -> UnlearningOutcome | None:
        """Every method's λ search and test metrics (θ₀, the main method, the comparison)."""
        with self._session():
            return self._evaluate()

    def run(self) -> UnlearningResult | None:
        """All stages, then the output folder (`hf-negmerge unlearn`'s files); None off the main process."""
        with self._session():
            return self._run()

    def save_pretrained(self, save_directory: str | Path) -> Path | None:
        """`run`, then the output folder's files written into `save_directory`."""
        result = self.run()
        return None if result is None else result.save_pretrained(save_directory)

    def push_to_hub(self, repo_id: str, **kwargs: Any) -> str | None:
        """`run`, then the output folder pushed to `repo_id` (keywords as `push_unlearned_model`)."""
        result = self.run()
        return None if result is None else result.push_to_hub(repo_id, **kwargs)

    # ------------------------------------------------------------------ the session around a stage

    @contextlib.contextmanager
    def _session(self) -> Iterator[None]:
        """Thread policy, source checks and the output folder's claim, held while stages run."""
        if self._state is not None:  # a stage called from inside another one
            yield
            return
        from accelerate import PartialState

        from .output_folder import check_output_dir, claim_output_folder, naming_full_disk
        from .plan import warn_before_training
        from .source_checks import check_sources
        from .threads import policy_threads
        from .tracking import check_trackers

        with policy_threads():
            output_dir = check_output_dir(self.recipe.output_dir)
            # the same path and split checks as --dry-run, before any work; a live model is saved later
            checked = self.recipe
            if self._live_model is not None:
                checked = dataclasses.replace(
                    checked, model=dataclasses.replace(checked.model, name_or_path=None)
                )
            check_sources(checked)
            check_trackers(self.recipe.evaluation.log_with)  # a missing tracker package fails now
            if self._grid is None:
                warn_before_training(self.recipe)  # what the plan warns about, for API callers
            if not self.progress:
                import datasets
                import transformers

                transformers.utils.logging.disable_progress_bar()
                datasets.disable_progress_bars()
            if self._started is None:
                self._started = time.perf_counter()
            # cpu=True when there is no GPU: otherwise torchrun / accelerate launch CPU processes each
            # see a single-process world and all of them would run the whole grid.
            state = PartialState(cpu=not torch.cuda.is_available())
            with naming_full_disk(output_dir):
                if self._grid is None:
                    with (
                        state.main_process_first()
                    ):  # the main process claims (checks, locks) the folder first
                        claim = (
                            claim_output_folder(output_dir, self.overwrite) if state.is_main_process else None
                        )
                else:  # the grid's end ended the process group: no barrier after it, only the main one goes on
                    claim = claim_output_folder(output_dir, self.overwrite) if state.is_main_process else None
                self._state = state
                try:
                    yield
                finally:
                    self._state = None
                    if claim is not None:
                        claim.release()

    # ------------------------------------------------------------------ stages (inside a session)

    def _prepare_data(self) -> UnlearningData:
        if self._data is None:
            (self.output_dir / WORK_DIR).mkdir(parents=True, exist_ok=True)
            self._save_live_model()
            data = build_unlearning_data(self.recipe.data, model_label_names(self.recipe))
            note_validation_source(self.recipe, data)
            self._data = data
        return self._data

    def _prepare_original(self) -> Path:
        if self._base_dir is None:
            data = self._prepare_data()
            state = self._state
            with state.main_process_first():  # θ₀ is trained once; the other processes then load it
                base_dir = prepare_original(
                    self.recipe, data, self.output_dir / WORK_DIR, self.progress and state.is_main_process
                )
            # what θ₀ was, as published: local paths relative to the output folder
            self._original_model = portable_paths(describe_original(self.recipe, base_dir), self.output_dir)
            self._seconds["original"] = time.perf_counter() - self._started
            self._base_dir = base_dir
        return self._base_dir

    def _train_grid(self) -> GridResult:
        if self._grid is None:
            from .evaluation.engine import keeps_run_vectors
            from .training.runner import run_grid

            base_dir = self._prepare_original()
            original = self._original_model
            tick = time.perf_counter()
            self._grid = run_grid(
                base_dir,
                self._data,
                self.recipe.grid,
                self.output_dir / WORK_DIR / "grid",
                merge_config=self.recipe.merge,
                keep_task_vectors=keeps_run_vectors(self.recipe),
                keep_checkpoints=self.recipe.keep_checkpoints,
                progress=self.progress,
                base_description=f"{original['source']}={original['base_model']}",
            )
            self._seconds["grid"] = time.perf_counter() - tick
        return self._grid

    def _evaluate(self) -> UnlearningOutcome | None:
        grid = self._train_grid()
        if not self._state.is_main_process:  # grid points were sharded; evaluation is the main process's
            return None
        if self._outcome is None:
            from .evaluation.engine import evaluate_methods, score_retrain
            from .models import ImageClassifier

            recipe, data = self.recipe, self._data
            tick = time.perf_counter()
            classifier = ImageClassifier.from_pretrained(self._base_dir)
            evaluation = evaluate_methods(recipe, data, classifier, grid, self.progress)
            self._seconds["evaluation"] = time.perf_counter() - tick

            retrain = None
            retrained_dir = (
                prepare_retrained(recipe, data, self.progress) if recipe.evaluation.retrain else None
            )
            if retrained_dir is not None:
                retrain = score_retrain(evaluation, ImageClassifier.from_pretrained(retrained_dir), recipe)

            outcome = UnlearningOutcome(
                self.output_dir,
                evaluation.original,
                evaluation.main,
                evaluation.comparison,
                evaluation.per_run,
                retrain,
                grid.merge,
                portable_paths(data.summary(), self.output_dir),
                grid.run_ids,
                self._seconds,
                self._original_model,
            )
            outcome.assess(
                recipe.data.scenario
            )  # statuses; warnings: weak θ₀, λ at the grid edge, tiny vector
            evaluation.evaluator.set_weights(grid.task_vector, evaluation.main.selection.scale)
            self._evaluation, self._outcome = evaluation, outcome
        return self._outcome

    def _run(self) -> UnlearningResult | None:
        outcome = self._evaluate()
        if outcome is None:
            return None
        if self._result is None:
            unlearned = self._evaluation.evaluator.classifier
            self._seconds["total"] = time.perf_counter() - self._started
            write_outputs(self.recipe, outcome, unlearned, self._base_dir)
            if self.recipe.evaluation.log_with:
                send_to_trackers(self.recipe, outcome, self.output_dir / WORK_DIR)
            self._result = UnlearningResult(
                unlearned.model, RunResults.load(self.output_dir), outcome, self.output_dir
            )
        return self._result

    def _save_live_model(self) -> None:
        """The live model and its processor into work/given_model, θ₀'s source (by the main process)."""
        if self._live_model is None:
            return
        from .checkpoints import atomic_output_dir

        with self._state.main_process_first():
            if self._state.is_main_process:
                target = Path(self.recipe.model.name_or_path)
                with atomic_output_dir(target, overwrite=True, owned_marker=_GIVEN_MODEL_MARKER) as staging:
                    self._live_model.save_pretrained(staging)
                    self._processor.save_pretrained(staging)


def write_outputs(recipe: UnlearnRecipe, outcome: UnlearningOutcome, unlearned: Any, base_dir: Path) -> None:
    """Build every artifact in a staging folder (outputs), then publish them in one step (output_folder)."""
    from .output_folder import publish_outputs
    from .outputs import build_output_files

    publish_outputs(
        outcome.output_dir,
        lambda staging: build_output_files(recipe, outcome, unlearned, base_dir, staging),
    )


def send_to_trackers(recipe: UnlearnRecipe, outcome: UnlearningOutcome, work: Path) -> None:
    """The runs' losses and the λ curves to the recipe's trackers (evaluation.log_with)."""
    from .outputs import lambda_log_rows, run_logs
    from .tracking import send_to_trackers as send

    send(
        recipe.evaluation.log_with,
        work / "trackers",
        run_logs(outcome),
        lambda_log_rows(outcome),
        {"method": recipe.merge.method, "runs": len(outcome.run_ids), "scale": outcome.main.selection.scale},
    )


def _data_config(
    default: DataConfig,
    data: DataConfig | None,
    dataset: Any,
    train_dataset: Any,
    test_dataset: Any,
    forget_classes: list[int | str] | None,
    forget_fraction: float | None,
    image_column: str,
    label_column: str,
) -> DataConfig:
    """The run's DataConfig from the keyword arguments (or `data` as given); errors name the argument."""
    given = [
        name
        for name, value in (
            ("dataset", dataset),
            ("train_dataset", train_dataset),
            ("forget_classes", forget_classes),
            ("forget_fraction", forget_fraction),
        )
        if value is not None
    ]
    if data is not None:
        if given:
            raise ConfigError(
                f"NegMergeUnlearner: data=DataConfig(...) says everything about the data; leave out {given} "
                "(set them in the DataConfig)."
            )
        if not isinstance(data, DataConfig):
            raise ConfigError(f"NegMergeUnlearner: data must be a DataConfig, got {type(data).__name__}.")
        return data
    if (train_dataset is None) != (test_dataset is None):
        raise ConfigError(
            "NegMergeUnlearner: give train_dataset and test_dataset together (or one dataset=)."
        )
    if train_dataset is not None:
        if dataset is not None:
            raise ConfigError("NegMergeUnlearner: give dataset= or train_dataset + test_dataset, not both.")
        import datasets

        for name, value in (("train_dataset", train_dataset), ("test_dataset", test_dataset)):
            if not isinstance(value, datasets.Dataset):
                raise ConfigError(
                    f"NegMergeUnlearner: {name} must be a datasets.Dataset, got {type(value).__name__}."
                )
        dataset = datasets.DatasetDict({"train": train_dataset, "test": test_dataset})
    if dataset is None:
        raise ConfigError("NegMergeUnlearner needs data: dataset=DatasetDict(...) (or data=DataConfig(...)).")
    if forget_classes is not None and forget_fraction is not None:
        raise ConfigError(
            "NegMergeUnlearner: forget_classes and forget_fraction both say what to forget; give one "
            "(forget_classes: those classes; forget_fraction: a random share of the training rows)."
        )
    if forget_classes is None and forget_fraction is None:
        raise ConfigError(
            "NegMergeUnlearner: say what to forget: forget_classes=[...] or forget_fraction=0.1."
        )
    if is_in_memory(dataset):
        _check_columns(dataset, image_column, label_column)
    if forget_classes is not None:
        forget = {"scenario": "class", "forget_classes": forget_classes}
        _check_forget_classes(dataset, forget_classes, label_column)
    else:
        forget = {"scenario": "random", "forget_fraction": forget_fraction}
    try:
        return DataConfig(
            dataset=dataset,
            image_column=image_column,
            label_column=label_column,
            validation_fraction=default.validation_fraction,
            **forget,
        )
    except ConfigError as error:
        raise ConfigError(f"NegMergeUnlearner: {error}") from error


def _check_columns(dataset: Any, image_column: str, label_column: str) -> None:
    """Every split holds the image and label columns: the error names the split and the column."""
    parts = dataset.items() if isinstance(dataset, dict) else [("dataset", dataset)]
    for split, part in parts:
        for role, column in (("image_column", image_column), ("label_column", label_column)):
            if column not in part.column_names:
                raise ConfigError(
                    f"NegMergeUnlearner: split {split!r} of the dataset has no column {column!r} ({role}); "
                    f"its columns: {part.column_names}. Name the right one with {role}=..."
                )


def _check_forget_classes(dataset: Any, forget_classes: Any, label_column: str) -> None:
    """Class names to forget must be classes of an in-memory dataset that names its classes."""
    import datasets

    if not is_in_memory(dataset):
        return
    part = next(iter(dataset.values())) if isinstance(dataset, dict) else dataset
    feature = part.features.get(label_column)
    if not isinstance(feature, datasets.ClassLabel):
        return  # plain ids or string labels: resolved when the data stage reads them
    wanted = forget_classes if isinstance(forget_classes, list | tuple) else [forget_classes]
    unknown = [
        item
        for item in wanted
        if (isinstance(item, str) and item not in feature.names)
        or (isinstance(item, int) and not 0 <= item < feature.num_classes)
    ]
    if unknown:
        raise ConfigError(
            f"NegMergeUnlearner: forget_classes {unknown} are not classes of the dataset; its classes: "
            f"{feature.names}."
        )


# transformers `model_type` -> the registered architecture that handles it
_ARCHITECTURES = {"vit": "vit", "clip": "clip", "resnet": "resnet"}


def _model_section(
    model: Any, processor: Any, model_config: ModelConfig | None, given_dir: Path
) -> tuple[Any, ModelConfig]:
    """(the live model to save, or None; the recipe's model section) for what was given as `model`.

    A live model is saved into `given_dir` when a stage first runs; θ₀ is built from that folder.
    """
    options = dataclasses.asdict(model_config) if model_config is not None else {}
    if isinstance(model, str | Path):
        from transformers import AutoConfig

        from .models._source import resolve_weights_source

        source = resolve_weights_source(str(model), options.get("revision"))
        model_type = AutoConfig.from_pretrained(source.location, **source.load_kwargs).model_type
        options.update(architecture=_architecture(model_type, str(model)), name_or_path=str(model))
        return None, ModelConfig(**options)
    live = _dense_model(model)
    config = getattr(live, "config", None)
    if config is None or not hasattr(live, "save_pretrained"):
        raise ConfigError(
            f"NegMergeUnlearner: model must be a transformers model (or a path / Hub id), got {type(model).__name__}."
        )
    architecture = _architecture(getattr(config, "model_type", None), type(live).__name__)
    if processor is None or not hasattr(processor, "save_pretrained"):
        raise ConfigError(
            "NegMergeUnlearner: processor= is needed with a live model: its image processor "
            "(e.g. AutoImageProcessor.from_pretrained(...); for CLIP a CLIPProcessor with its tokenizer)."
        )
    if architecture == "clip" and getattr(processor, "tokenizer", None) is None:
        raise ConfigError(
            "NegMergeUnlearner: a CLIP model needs a processor that carries its tokenizer (a CLIPProcessor): "
            "the zero-shot head is built from the class names' text."
        )
    options.update(architecture=architecture, name_or_path=str(given_dir))
    return live, ModelConfig(**options)


def _architecture(model_type: str | None, what: str) -> str:
    if model_type not in _ARCHITECTURES:
        raise ConfigError(
            f"NegMergeUnlearner: {what} (model_type {model_type!r}) is not an architecture hf-negmerge "
            f"unlearns; supported model types: {sorted(_ARCHITECTURES)}."
        )
    return _ARCHITECTURES[model_type]


def _dense_model(model: Any) -> Any:
    """A peft model's adapters merged into a copy (θ₀ is the model as it predicts); others as given."""
    from peft import PeftModel

    if isinstance(model, PeftModel):
        return copy.deepcopy(model).merge_and_unload()
    return model


__all__ = [
    "GIVEN_MODEL_DIR",
    "NegMergeUnlearner",
    "UnlearningResult",
    "copy_output_folder",
    "send_to_trackers",
    "write_outputs",
]
