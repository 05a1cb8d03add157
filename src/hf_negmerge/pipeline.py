"""The whole unlearning run: data → θ₀ → grid → merges → λ search → test evaluation → outputs.

Every stage that costs time is resumable: θ₀ is cached by its settings, finished grid runs are
skipped, and the final artifacts are written only once everything has been measured.

Output folder (`recipe.output_dir`), pushable as is (`work/` is ignored by `hf-negmerge push`):

    config.json, model.safetensors, preprocessor_config.json, (tokenizer files), hf_negmerge_classifier.json
                                 the unlearned classifier, loadable with from_pretrained
    negmerge_config.json         how it was merged
    merged_task_vector.safetensors   τ of the chosen method (θ_u = θ₀ − λ·τ)
    metrics.json, report.md      measured results (validation curve, test numbers, comparison)
    comparison.md, comparison.json
    lambda_curves.png, kept_fraction.png, loss_curves.png
    training_log.jsonl           loss and learning rate per optimizer step of every grid run
    lambda_curves.jsonl          validation accuracies per (method, λ)
    recipe.yaml                  the resolved recipe
    README.md                    model card
    hf_negmerge_outputs.json     every file above with its sha256, written last: the completeness
                                 marker `push` checks, and the record of what a rerun may replace
    work/grid/                   the fine-tuning runs (resumable), work/original/ when θ₀ was built here
    work/unlearn.lock            held by the running `unlearn` (its pid inside)
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from .config import NegMergeConfig
from .data import UnlearningData, build_unlearning_data, load_image_dataset
from .errors import ConfigError
from .evaluation import Predictions, avg_gap, mia_efficacy, predict
from .key_space import KeyNames
from .lambda_search import LambdaPoint, LambdaSearchConfig, LambdaSelection, search_lambda
from .merging import merge_task_vectors
from .recipe import UnlearnRecipe, check_sources
from .results import METRICS_FILE, MethodOutcome, UnlearningOutcome, best_single_run
from .task_vector import TaskVector, select_keys

logger = logging.getLogger(__name__)

WORK_DIR = "work"


def _originals_cache(recipe: UnlearnRecipe) -> Path:
    """Where trained θ₀ (and Retrain) folders are cached, keyed by their settings."""
    return Path(recipe.original.cache_dir) if recipe.original.cache_dir else default_cache_dir() / "originals"


def default_cache_dir() -> Path:
    root = os.environ.get("HF_NEGMERGE_CACHE") or Path(
        os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")
    )
    return Path(root) / "hf_negmerge"


# ---------------------------------------------------------------------------------------------
# Evaluation on pre-encoded splits: each image is preprocessed once, however many λ are tried.


@dataclass
class EncodedSplit:
    name: str
    pixel_values: torch.Tensor
    labels: torch.Tensor

    def batches(self, batch_size: int) -> Iterator[dict[str, torch.Tensor]]:
        for start in range(0, len(self.labels), batch_size):
            yield {
                "pixel_values": self.pixel_values[start : start + batch_size],
                "labels": self.labels[start : start + batch_size],
            }


def encode_split(classifier: Any, dataset: Any, name: str, batch_size: int = 256) -> EncodedSplit:
    pixels, labels = [], []
    for start in range(0, len(dataset), batch_size):
        rows = dataset[start : start + batch_size]
        pixels.append(classifier.preprocess([image.convert("RGB") for image in rows["image"]]))
        labels.append(torch.as_tensor(rows["label"], dtype=torch.long))
    return EncodedSplit(name, torch.cat(pixels), torch.cat(labels))


class Evaluator:
    """Applies θ₀ − λ·τ to one working copy of the classifier and scores encoded splits.

    Control splits (another dataset, e.g. ImageNet) are scored with their own zero-shot head,
    built once from the control class names and, when given, the control set's own prompt
    templates (else the forget set's); the image encoder is shared.
    """

    CONTROL_SPLITS = ("control_val", "control_test")

    def __init__(
        self,
        classifier: Any,
        splits: dict[str, EncodedSplit],
        batch_size: int,
        control_class_names: list[str] | None = None,
        control_templates: list[str] | None = None,
    ) -> None:
        self.classifier = classifier.eval()
        self.splits = splits
        self.batch_size = batch_size
        self._base_state = {key: value.clone() for key, value in classifier.model.state_dict().items()}
        self._heads: dict[str, torch.Tensor] = {}
        if control_class_names is not None and any(name in splits for name in self.CONTROL_SPLITS):
            if not hasattr(classifier, "compute_head"):
                raise ConfigError(
                    f"A control dataset with its own classes needs a zero-shot (CLIP) model; "
                    f"{type(classifier).__name__} has a fixed classification head."
                )
            self._heads = {
                "forget": classifier.zero_shot_head,
                "control": classifier.compute_head(control_class_names, control_templates),
            }

    def set_weights(self, vector: TaskVector | None, scale: float) -> None:
        self.classifier.model.load_state_dict(self._base_state)
        if vector is not None and scale != 0.0:
            vector.apply_to(self.classifier.model, scale=-scale)

    def predict(self, split: str) -> Predictions:
        if self._heads:
            self.classifier.zero_shot_head = self._heads[
                "control" if split in self.CONTROL_SPLITS else "forget"
            ]
        return predict(self.classifier, self.splits[split].batches(self.batch_size))

    def accuracy(self, split: str) -> float:
        return self.predict(split).accuracy()


def control_head_text(
    recipe: UnlearnRecipe, data: UnlearningData
) -> tuple[list[str] | None, list[str] | None]:
    """(names, templates) the control head is built from: data.control_prompt_names (else the
    control dataset's class names) and data.control_prompt_templates (else the forget set's)."""
    names, templates = recipe.data.control_head_text()
    if names is None or data.control_test is None:
        return data.control_class_names, templates
    if data.control_class_names is not None:
        num_classes = len(data.control_class_names)
    else:
        from .data import label_ids

        num_classes = int(max(label_ids(data.control_test).max(), label_ids(data.control_val).max())) + 1
    if len(names) != num_classes:
        raise ConfigError(
            f"data.control_prompt_names has {len(names)} names but the control dataset "
            f"{recipe.data.control_dataset!r} has {num_classes} classes; give one name per label id."
        )
    return names, templates


# ---------------------------------------------------------------------------------------------
# Stages.


def original_training_split(recipe: UnlearnRecipe, data: UnlearningData) -> Any:
    """What θ₀ trains on: the train split minus the held-out retain validation rows.

    Validation rows must be unseen by θ₀, or the retain constraint of the λ search measures
    memorised samples and lets through a λ that hurts held-out accuracy. Rows carved out of the
    train split as test rows (data.test_split: null) are left out too.
    """
    from datasets import concatenate_datasets

    from .data import SOURCE_INDEX_COLUMN, align_to_labels, class_names_of

    if data.retain_train is not None:
        return concatenate_datasets([data.forget_train, _retain_without_validation(data)])
    train = load_image_dataset(
        recipe.data.dataset,
        split=recipe.data.train_split,
        image_column=recipe.data.image_column,
        label_column=recipe.data.label_column,
        class_names=recipe.data.class_names,
        label_mapping=recipe.data.label_mapping,
    )
    if data.class_names is not None and class_names_of(train) != data.class_names:
        train = align_to_labels(train, data.class_names, "θ₀ training split")
    if data.test_carved:
        held_out = set(data.forget_test[SOURCE_INDEX_COLUMN])
        if recipe.data.validation_from == "test":
            held_out |= set(data.forget_val[SOURCE_INDEX_COLUMN])
        train = train.filter(lambda _, index: index not in held_out, with_indices=True)
    return train


def _retain_without_validation(data: UnlearningData) -> Any:
    """retain_train minus the retain validation rows (which the data stage carves inside it)."""
    from .data import SOURCE_INDEX_COLUMN

    if data.retain_val is None:
        return data.retain_train
    held_out = set(data.retain_val[SOURCE_INDEX_COLUMN])
    return data.retain_train.filter(lambda index: index not in held_out, input_columns=SOURCE_INDEX_COLUMN)


ORIGINAL_SOURCE_FILE = "hf_negmerge_source.json"


def model_label_names(recipe: UnlearnRecipe) -> list[str] | None:
    """The labels θ₀'s head already has, in id order; the data's classes are mapped onto them by name.

    None when the head is made from the data's class names: tiny models, a CLIP zero-shot head
    built from a pretrained folder, or a ViT/ResNet whose head is replaced (model.replace_head).
    """
    from .models import CLASSIFIER_METADATA_FILE, CLASSIFIER_REGISTRY
    from .models._source import fetch_file, resolve_weights_source
    from .models.vit import pretrained_labels

    if recipe.original.path is not None:
        metadata = fetch_file(resolve_weights_source(recipe.original.path), CLASSIFIER_METADATA_FILE)
        if metadata is None:
            raise ConfigError(
                f"original.path={recipe.original.path!r} has no {CLASSIFIER_METADATA_FILE}: it was not "
                "saved by hf-negmerge. For a plain pretrained model folder set model.name_or_path instead."
            )
        return list(json.loads(metadata.read_text(encoding="utf-8"))["class_names"])
    model = recipe.model
    if (
        model.name_or_path is None
        or not CLASSIFIER_REGISTRY[model.architecture].has_trained_head
        or model.replace_head
    ):
        return None
    return pretrained_labels(resolve_weights_source(model.name_or_path, model.revision))


def note_validation_source(recipe: UnlearnRecipe, data: UnlearningData) -> None:
    """Warn when validation rows may be rows a user's pretrained θ₀ was trained on."""
    pretrained = recipe.original.path is not None or (
        recipe.model.name_or_path is not None and not recipe.original.train
    )
    if pretrained and recipe.data.validation_split is None and recipe.data.validation_from == "train":
        data.validation_warning = (
            f"validation rows were carved from data.train_split={recipe.data.train_split!r}, which the "
            "pretrained original model may have been trained on: λ is then chosen on memorised rows. Set "
            "data.validation_split to a held-out split, or data.validation_from: test."
        )
        logger.warning(data.validation_warning)


def _source_record(recipe: UnlearnRecipe, class_names: list[str]) -> dict[str, Any]:
    """What work/original is built from: the model's settings, its weights' hash, the class names."""
    from .models._source import resolve_weights_source, source_weights_sha256

    model = recipe.model
    sha256 = None
    if model.name_or_path is not None:
        sha256 = source_weights_sha256(resolve_weights_source(model.name_or_path, model.revision))
    return {
        "name_or_path": model.name_or_path,
        "sha256": sha256,
        "model": model.to_dict(),
        "class_names": class_names,
    }


def prepare_original(recipe: UnlearnRecipe, data: UnlearningData, work: Path, progress: bool) -> Path:
    """θ₀'s classifier folder: given, trained here (cached), or built from `model` and saved.

    A folder built from `model` in an earlier run is reused only if the model's weights and
    settings are unchanged; otherwise the runs beside it belong to another θ₀ and this refuses.
    """
    from .checkpoints import atomic_write_text
    from .models import build_classifier
    from .training.pretrain import prepare_original_model

    if recipe.model.replace_head and not recipe.original.train:
        raise ConfigError(
            "model.replace_head: true gives the model a new, randomly initialised head, so θ₀ would score "
            "at chance. Set original.train: true to train θ₀ here, or keep the model's head and map the "
            "dataset's classes onto its labels (data.label_mapping)."
        )
    if recipe.original.path is not None:
        return Path(recipe.original.path)
    if data.class_names is None:
        raise ConfigError("The forget dataset has no class names; set data.class_names (CLIP needs them).")
    if recipe.original.train:
        return prepare_original_model(
            recipe.model,
            original_training_split(recipe, data),
            _originals_cache(recipe),
            epochs=recipe.original.epochs,
            learning_rate=recipe.original.learning_rate,
            batch_size=recipe.original.batch_size,
            seed=recipe.seed,
            class_names=data.class_names,
            progress=progress,
        )
    target = work / "original"
    source = json.loads(json.dumps(_source_record(recipe, data.class_names)))
    if (target / "hf_negmerge_classifier.json").is_file():
        record_path = target / ORIGINAL_SOURCE_FILE
        recorded = json.loads(record_path.read_text(encoding="utf-8")) if record_path.is_file() else None
        if recorded == source:
            return target
        if recorded is None:
            changed = f"{target} has no {ORIGINAL_SOURCE_FILE}, so what it was built from cannot be checked"
        elif recorded["sha256"] != source["sha256"]:
            changed = (
                f"θ₀ weights changed: {str(recorded['sha256'])[:16]} → {str(source['sha256'])[:16]} "
                f"(model.name_or_path={source['name_or_path']!r}, was {recorded['name_or_path']!r})"
            )
        else:
            keys = sorted(k for k in source["model"] if source["model"][k] != recorded["model"].get(k))
            changed = (
                f"θ₀ settings changed: model.{', model.'.join(keys)}"
                if keys
                else (f"θ₀ class names changed: {recorded['class_names']} → {source['class_names']}")
            )
        raise ConfigError(
            f"{recipe.output_dir} was built from another original model: {changed}. Its runs belong to "
            "that model; choose another output_dir."
        )
    build_classifier(recipe.model, data.class_names).save_pretrained(target)
    atomic_write_text(target / ORIGINAL_SOURCE_FILE, json.dumps(source, indent=2) + "\n")
    return target


def describe_original(recipe: UnlearnRecipe, base_dir: Path) -> dict[str, Any]:
    """What θ₀ actually was, for metrics.json: where it came from and the sha256 of its weights."""
    from .models._source import resolve_weights_source, source_weights_sha256, weights_sha256
    from .training.packaged import packaged_original_record

    model = recipe.model
    record: dict[str, Any] = {"sha256": weights_sha256(base_dir)}
    if recipe.original.path is not None:
        record.update(base_model=recipe.original.path, source="original.path")
    elif recipe.original.train:
        record.update(base_model=str(base_dir), source="original.train", trained_from=model.name_or_path)
        record.update(packaged_original_record(base_dir))  # θ₀ shipped in the package: say so
    elif model.name_or_path is not None:
        record.update(base_model=model.name_or_path, source="model.name_or_path", folder=str(base_dir))
        record["source_sha256"] = source_weights_sha256(
            resolve_weights_source(model.name_or_path, model.revision)
        )
    else:
        record.update(base_model=str(base_dir), source="model (tiny, built from config)")
    return record


def prepare_retrained(recipe: UnlearnRecipe, data: UnlearningData, progress: bool) -> Path | None:
    """A model trained from scratch like θ₀ but without the forget set (the 'Retrain' reference)."""
    from .training.pretrain import prepare_original_model

    if data.retain_train is None:
        logger.warning("Retrain reference skipped: scenario %r has no retain set.", data.scenario)
        return None
    retain = _retain_without_validation(data)  # the same rows θ₀ saw, less the forget set
    cache = _originals_cache(recipe)
    return prepare_original_model(
        recipe.model,
        retain,
        cache,
        epochs=recipe.evaluation.retrain_epochs or recipe.original.epochs,
        learning_rate=recipe.original.learning_rate,
        batch_size=recipe.original.batch_size,
        seed=recipe.seed,
        class_names=data.class_names,
        progress=progress,
    )


def _encode_all(classifier: Any, data: UnlearningData, recipe: UnlearnRecipe) -> dict[str, EncodedSplit]:
    wanted = ["forget_val", "forget_test", "retain_val", "retain_test", "test", "control_val", "control_test"]
    if recipe.mia_enabled:
        wanted.append("retain_train")
    splits = data.splits()
    if data.retain_train is not None and (recipe.mia_enabled or data.retain_test is data.retain_train):
        # RA and the MIA members are rows θ₀ trained on (SalUn's retain set excludes its validation
        # rows): drop the retain validation rows, keeping row order (members = the first rows).
        trained_retain = _retain_without_validation(data)
        if data.retain_test is data.retain_train:  # 'random': RA is measured on the retain set itself
            splits["retain_test"] = trained_retain
        splits["retain_train"] = trained_retain
    return {
        name: encode_split(classifier, splits[name], name, recipe.evaluation.batch_size)
        for name in wanted
        if name in splits
    }


def _constraint_split(evaluator: Evaluator) -> str:
    for name in ("retain_val", "control_val"):
        if name in evaluator.splits:
            return name
    raise ConfigError("λ selection needs a retain or control validation split; this scenario has neither.")


def _test_metrics(evaluator: Evaluator, mia: bool) -> dict[str, float]:
    names = {
        "forget_test": "forget_accuracy",
        "retain_test": "retain_accuracy",
        "test": "test_accuracy",
        "control_test": "control_accuracy",
    }
    predictions = {split: evaluator.predict(split) for split in names if split in evaluator.splits}
    metrics = {names[split]: result.accuracy() for split, result in predictions.items()}
    if "forget_accuracy" in metrics:
        metrics["unlearn_accuracy"] = 100.0 - metrics["forget_accuracy"]
    if mia and {"forget_test", "test"} <= predictions.keys() and "retain_train" in evaluator.splits:
        members = evaluator.predict("retain_train")
        metrics["mia_efficacy"] = mia_efficacy(members, predictions["test"], predictions["forget_test"])
    return metrics


def _search(
    evaluator: Evaluator,
    vector: TaskVector,
    config: LambdaSearchConfig,
    original_point: LambdaPoint,
    bar: Any,
) -> LambdaSelection:
    constraint = _constraint_split(evaluator)

    def evaluate_at(scale: float) -> LambdaPoint:
        if scale != 0.0:
            evaluator.set_weights(vector, scale)
        point = (
            original_point
            if scale == 0.0
            else LambdaPoint(scale, evaluator.accuracy("forget_val"), evaluator.accuracy(constraint))
        )
        bar.update(1)
        return point

    return search_lambda(
        evaluate_at,
        config.scales,
        original_point,
        retain_ratio=config.retain_ratio,
        fallback=config.fallback,
        progress=False,  # the evaluation's one bar (`bar`) counts the points of every method
    )


def _outcome(
    evaluator: Evaluator,
    vector: TaskVector,
    config: NegMergeConfig,
    label: str,
    original_point: LambdaPoint,
    recipe: UnlearnRecipe,
    bar: Any,
    kept_fraction: float | None = None,
    run_id: str | None = None,
) -> MethodOutcome:
    bar.set_description_str(f"λ search {label}")
    selection = _search(evaluator, vector, config, original_point, bar)
    bar.set_description_str(f"test {label}")
    evaluator.set_weights(vector, selection.scale)
    test = _test_metrics(evaluator, recipe.mia_enabled)
    bar.update(1)
    return MethodOutcome(config.method, label, selection, test, kept_fraction, run_id)


def evaluation_count(recipe: UnlearnRecipe, num_runs: int) -> tuple[int, int]:
    """(λ points scored on validation, test evaluations) for the main method and its comparison.

    Task arithmetic is scored once per grid run (evaluation.per_run_task_arithmetic) or for the
    first run only; a fixed merge.scale scores the main method at that one λ.
    """
    points = len(recipe.merge.lambda_grid)
    searches = [1 if recipe.merge.scale is not None else points]
    for method in recipe.comparison:
        if method == recipe.merge.method:
            continue
        runs = num_runs if recipe.evaluation.per_run_task_arithmetic else 1
        searches += [points] * (runs if method == "task_arithmetic" else 1)
    return sum(searches), len(searches)


def _load_vectors(
    grid_dir: Path, run_ids: list[str], config: NegMergeConfig, key_names: KeyNames
) -> Callable[[], Iterator[TaskVector]]:
    """The runs' task vectors restricted to the merge's include/exclude tensors, so single-run
    task arithmetic is compared on the same parameters as the merges (patterns in either
    naming, resolved with the base model's `key_names`)."""
    from .training.runner import RUNS_DIR, TASK_VECTOR_FILE

    def vectors() -> Iterator[TaskVector]:
        for run_id in run_ids:
            path = grid_dir / RUNS_DIR / run_id / TASK_VECTOR_FILE
            if not path.is_file():
                raise ConfigError(
                    f"{path} is missing: an earlier run with no comparison methods did not keep the runs' "
                    "task vectors. Use a new output_dir to compare methods."
                )
            vector = TaskVector.load(path)
            keys = select_keys(vector.keys(), config.include, config.exclude, key_names)
            yield TaskVector({key: vector[key] for key in keys}, vector.metadata)

    return vectors


# ---------------------------------------------------------------------------------------------
# Entry points.


def describe_plan(recipe: UnlearnRecipe, budget: bool = False) -> str:
    """What a run would do, from the recipe alone: nothing is downloaded or trained.

    Local paths and split names are checked first (ConfigError naming the recipe key), so a
    typo fails here rather than after θ₀ or the grid has trained. With `budget` (`--dry-run`)
    the plan adds its cost (`plan_budget`): steps, evaluations, downloads, disk and time.
    """
    from .recipe import check_sources
    from .tracking import check_trackers
    from .training.grid import rows_for_warmup, warmup_key

    notes = check_sources(recipe)
    check_trackers(recipe.evaluation.log_with)
    points = recipe.grid.expand()
    model = recipe.model.name_or_path or f"tiny {recipe.model.architecture} built from config"
    lines = [
        f"data: {recipe.data.dataset!r} (scenario {recipe.data.scenario!r}"
        + (f", forget classes {recipe.data.forget_classes}" if recipe.data.forget_classes else "")
        + (f", control {recipe.data.control_dataset!r}" if recipe.data.control_dataset else "")
        + ")",
        f"model: {model} ({recipe.model.architecture})"
        + (
            " — θ₀ trained here first on the train split minus validation rows (cached)"
            if recipe.original.train
            else ""
        ),
    ]
    lines += _clip_plan(recipe)
    lines += [f"grid: {len(points)} fine-tuning run(s) on the forget set"]
    lines += [f"  - {point.id}: {json.dumps(point.overrides, sort_keys=True)}" for point in points]
    warming = [point for point in points if point.hyperparameters.warmup_steps > 0]
    if warming:
        longest = max(warming, key=lambda point: rows_for_warmup(point.hyperparameters)).hyperparameters
        lines.append(
            f"  warm-up of {longest.warmup_steps} optimizer steps ends before a run does only with more than "
            f"{rows_for_warmup(longest) - 1} forget-train rows (batch {longest.batch_size}, {longest.epochs} "
            f"epochs); with fewer, lower {warmup_key(warming)} or raise the epochs (the run warns once)"
        )
    lines += [
        f"merge: {recipe.merge.method} (consensus_fraction={recipe.merge.consensus_fraction}); "
        f"λ grid {recipe.merge.lambda_grid[0]:g}..{recipe.merge.lambda_grid[-1]:g} ({len(recipe.merge.lambda_grid)} points), "
        f"retain ratio {recipe.merge.retain_ratio}",
        f"comparison: {', '.join(recipe.comparison) or 'none'}",
        f"evaluation: MIA {'on' if recipe.mia_enabled else 'off'}, retrain reference "
        f"{'on' if recipe.evaluation.retrain else 'off'}",
        f"outputs: {recipe.output_dir} (model, {METRICS_FILE}, report.md, plots, README.md); runs in "
        f"{Path(recipe.output_dir) / WORK_DIR / 'grid'}",
    ]
    lines += [f"note: {note}" for note in notes]
    if budget:
        lines += plan_budget(recipe).lines()
    return "\n".join(lines)


def _clip_plan(recipe: UnlearnRecipe) -> list[str]:
    """The plan's lines on a CLIP's trained part and the text of its control head."""
    model, data = recipe.model, recipe.data
    if model.architecture != "clip":
        return []
    trained = "vision tower" + (
        " except its attention q/k/v/out projections" if model.freeze_attention else ""
    )
    trained += " + visual_projection" if model.train_projection else ""
    lines = [f"  trained: {trained}; text tower and zero-shot head frozen"]
    if data.control_dataset is not None:
        names, templates = data.control_head_text()

        def described(value: Any, count: int | None, fallback: str) -> str:
            if value is None:
                return fallback
            return f"{value!r} ({count})" if isinstance(value, str) else f"{count} given"

        lines.append(
            "  control head: templates "
            + described(data.control_prompt_templates, templates and len(templates), "the forget set's")
            + ", class names "
            + described(data.control_prompt_names, names and len(names), "the control dataset's")
        )
    return lines


# Optimizer steps per second on one CPU thread, measured with the default recipe's tiny models
# (docs/benchmarks.md, "Throughput for --dry-run"); None: not measured.
STEPS_PER_SECOND: dict[str, float | None] = {"vit": 23.0, "clip": None}  # grid runs (batch 32)
ORIGINAL_STEPS_PER_SECOND: dict[str, float | None] = {"vit": 30.0, "clip": None}  # θ₀, pre-encoded
SECONDS_PER_EVALUATION: dict[str, float | None] = {"vit": 0.2, "clip": None}  # one λ point or test
BYTES_PER_PARAMETER = 4  # run task vectors are stored in float32


@dataclass
class PlanBudget:
    """The cost of a recipe, as far as it is known without training (None: unknown)."""

    runs: list[tuple[str, int, int | None]]  # (run id, epochs, optimizer steps)
    forget_rows: int | None
    original_steps: int | None
    evaluations: int
    test_evaluations: int
    trained_parameters: int | None
    keep_run_vectors: bool
    downloads: list[str]
    tiny: str | None  # the architecture whose measured throughput applies (tiny models on CPU)
    parameters_are_total: bool = False  # from Hub metadata: every parameter, an upper bound

    @property
    def total_steps(self) -> int | None:
        steps = [run_steps for _, _, run_steps in self.runs]
        return None if None in steps else sum(steps)  # type: ignore[arg-type]

    @property
    def vector_bytes(self) -> int | None:
        if self.trained_parameters is None:
            return None
        return BYTES_PER_PARAMETER * self.trained_parameters * len(self.runs)

    def seconds(self) -> float | None:
        """Rough time on one CPU thread for tiny models; None where no throughput was measured."""
        rates = [table.get(self.tiny or "") for table in (STEPS_PER_SECOND, ORIGINAL_STEPS_PER_SECOND)]
        per_evaluation = SECONDS_PER_EVALUATION.get(self.tiny or "")
        if self.total_steps is None or None in rates or per_evaluation is None:
            return None
        evaluations = self.evaluations + self.test_evaluations
        return (
            self.total_steps / rates[0]  # type: ignore[operator]
            + (self.original_steps or 0) / rates[1]  # type: ignore[operator]
            + evaluations * per_evaluation
        )

    def lines(self) -> list[str]:
        rows = f"{self.forget_rows} forget-train rows" if self.forget_rows is not None else "rows unknown"
        lines = [f"budget ({rows}):"]
        if self.original_steps is not None:
            lines.append(f"  θ₀: {self.original_steps} optimizer steps (skipped when cached)")
        groups: dict[tuple[int, int | None], list[str]] = {}
        for run_id, epochs, steps in self.runs:
            groups.setdefault((epochs, steps), []).append(run_id)
        for (epochs, steps), run_ids in groups.items():
            who = run_ids[0] if len(run_ids) == 1 else f"{len(run_ids)} runs ({run_ids[0]} … {run_ids[-1]})"
            each = "" if len(run_ids) == 1 else " each"
            lines.append(
                f"  {who}: {epochs} epochs, {steps if steps is not None else '?'} optimizer steps{each}"
            )
        total = self.total_steps
        lines.append(
            f"  total: {total} optimizer steps over {len(self.runs)} runs"
            if total is not None
            else f"  total: unknown optimizer steps over {len(self.runs)} runs (Hub data: row count unknown "
            "without downloading)"
        )
        lines.append(
            f"  evaluations: {self.evaluations} λ points on validation + {self.test_evaluations} test "
            "evaluations (methods + single runs × λ points)"
        )
        lines += [f"  download: {item}" for item in self.downloads]
        size = self.vector_bytes
        kept = (
            "kept" if self.keep_run_vectors else "deleted after each fold (no comparison method reads them)"
        )
        lines.append(
            f"  disk: run task vectors {'≤' if self.parameters_are_total else '≈'} {_size(size)} "
            f"({len(self.runs)} × {self.trained_parameters:,} "
            f"{'parameters of the whole model' if self.parameters_are_total else 'parameters'} × "
            f"{BYTES_PER_PARAMETER} bytes), {kept}"
            if size is not None
            else f"  disk: run task vectors ≈ {BYTES_PER_PARAMETER} bytes × trained parameters × "
            f"{len(self.runs)} runs (parameter count unknown offline), {kept}"
        )
        if self.keep_run_vectors:
            lines.append("    (comparison: [] does not keep them; the merge itself needs only a running sum)")
        seconds = self.seconds()
        lines.append(
            f"  time: ≈ {seconds / 60:.1f} min on 1 CPU thread (docs/benchmarks.md throughput table)"
            if seconds is not None
            else "  time: no measured throughput for this model and device (docs/benchmarks.md); "
            "time one run with grid.axes limited to one point"
        )
        return lines


def _size(size: int) -> str:
    for unit in ("bytes", "KB", "MB", "GB"):
        if size < 1000 or unit == "GB":
            return f"{size:.0f} {unit}" if unit == "bytes" else f"{size:.1f} {unit}"
        size /= 1000
    raise AssertionError("unreachable")


def keeps_run_vectors(recipe: UnlearnRecipe) -> bool:
    """Whether the runs' task vectors must stay on disk: only comparison methods read them again."""
    return any(method != recipe.merge.method for method in recipe.comparison)


def plan_budget(recipe: UnlearnRecipe) -> PlanBudget:
    """Count what a recipe costs. Local and built-in data are loaded (cheap) to count rows; Hub
    data and models are looked up only when online (sizes from Hub metadata), never downloaded."""
    from .data.loading import _is_builtin, _is_hub_id, hub_is_offline
    from .training.grid import optimizer_steps

    def on_hub(source: Any) -> bool:
        return _is_hub_id(source) and not _is_builtin(source)

    points = recipe.grid.expand()
    hub_sources = [
        source for source in (recipe.data.dataset, recipe.data.control_dataset) if source is not None
    ]
    local_data = not any(on_hub(source) for source in hub_sources)
    hub_model = recipe.model.name_or_path is not None and on_hub(recipe.model.name_or_path)
    forget_rows = original_steps = parameters = None
    data = None
    if local_data and not hub_model:
        # Row counts only: no image is decoded and no label is mapped onto θ₀'s head (neither changes
        # the counts). Data the real run would refuse leaves the budget unknown here; the run says why.
        try:
            data = build_unlearning_data(dataclasses.replace(recipe.data, image_check_limit=0))
        except ConfigError as error:
            logger.info("Budget without row counts: %s", error)
    if data is not None:
        forget_rows = len(data.forget_train)
        if recipe.original.train and recipe.original.path is None:
            rows = len(original_training_split(recipe, data))
            original_steps = recipe.original.epochs * -(-rows // recipe.original.batch_size)
        if recipe.model.name_or_path is None and data.class_names is not None:
            parameters = _trained_parameters(recipe, data.class_names)
    runs = [
        (
            point.id,
            point.hyperparameters.epochs,
            optimizer_steps(point.hyperparameters, forget_rows) if forget_rows is not None else None,
        )
        for point in points
    ]
    evaluations, tests = evaluation_count(recipe, len(points))
    downloads: list[str] = []
    offline = hub_is_offline()
    if hub_model:
        size, count = (None, None) if offline else _hub_size(recipe.model.name_or_path, "model")
        downloads.append(_describe_download("model", recipe.model.name_or_path, size, offline))
        parameters = parameters if count is None else count
    for source in hub_sources:
        if on_hub(source):
            size, _ = (None, None) if offline else _hub_size(source, "dataset")
            downloads.append(_describe_download("dataset", source, size, offline))
    tiny = recipe.model.architecture if recipe.model.name_or_path is None else None
    return PlanBudget(
        runs,
        forget_rows,
        original_steps,
        evaluations,
        tests,
        parameters,
        keeps_run_vectors(recipe),
        downloads,
        tiny,
        parameters_are_total=hub_model and parameters is not None,
    )


def _trained_parameters(recipe: UnlearnRecipe, class_names: list[str]) -> int:
    """Elements of the tensors a run's task vector holds: what `mark_trainable` leaves trainable."""
    from .models import build_classifier

    classifier = build_classifier(recipe.model, class_names)
    classifier.mark_trainable()
    return sum(parameter.numel() for parameter in classifier.model.parameters() if parameter.requires_grad)


def _hub_size(repo_id: str, repo_type: str) -> tuple[Any, int | None]:
    """(download size in bytes or an access note, parameter count) from Hub metadata; nothing fetched."""
    from huggingface_hub import HfApi
    from huggingface_hub.errors import GatedRepoError, HfHubHTTPError

    api = HfApi()
    try:
        info = (api.model_info if repo_type == "model" else api.dataset_info)(repo_id, files_metadata=True)
    except GatedRepoError:
        return "gated: your token cannot read it (accept its terms on the Hub, then `hf auth login`)", None
    except (HfHubHTTPError, OSError) as error:
        return f"metadata unavailable ({type(error).__name__})", None
    size = sum(sibling.size or 0 for sibling in info.siblings or [])
    count = getattr(getattr(info, "safetensors", None), "total", None)
    if getattr(info, "gated", False):
        return f"{_size(size)}, gated: your token can read it", count
    return size, count


def _describe_download(kind: str, repo_id: str, size: Any, offline: bool) -> str:
    if offline:
        return f"{kind} {repo_id!r}: size unknown offline (HF_HUB_OFFLINE), gated access not checked"
    if isinstance(size, int):
        return f"{kind} {repo_id!r}: {_size(size)} (all files; already cached files are not fetched again)"
    return f"{kind} {repo_id!r}: {size}"


def run_unlearning(
    recipe: UnlearnRecipe, progress: bool = True, overwrite: bool = False
) -> UnlearningOutcome | None:
    """Run (or resume) the whole recipe and write its output folder.

    The folder is checked and locked before any work: a folder the tool did not write is used
    only with `overwrite=True` (`--overwrite`), and even then none of its files is replaced.
    Under `accelerate launch` the grid points are shared among the processes; the main process
    then evaluates and writes the outputs, and the others return None.
    """
    from accelerate import PartialState

    from .outputs import check_output_dir, claim_output_folder

    output_dir = check_output_dir(recipe.output_dir)
    check_sources(recipe)  # the same path and split checks as --dry-run, before any work
    from .tracking import check_trackers

    check_trackers(recipe.evaluation.log_with)  # a missing tracker package fails now, not at the end
    if not progress:
        import datasets
        import transformers

        transformers.utils.logging.disable_progress_bar()
        datasets.disable_progress_bars()
    started = time.perf_counter()
    # cpu=True when there is no GPU: otherwise torchrun / accelerate launch CPU processes each
    # see a single-process world and all of them would run the whole grid.
    state = PartialState(cpu=not torch.cuda.is_available())
    with state.main_process_first():  # the main process claims (checks, locks) the folder first
        claim = claim_output_folder(output_dir, overwrite) if state.is_main_process else None
    try:
        return _run_claimed(recipe, progress, state, output_dir, started)
    finally:
        if claim is not None:
            claim.release()


def _run_claimed(
    recipe: UnlearnRecipe, progress: bool, state: Any, output_dir: Path, started: float
) -> UnlearningOutcome | None:
    """The run itself, once the main process holds the output folder's lock."""
    from .models import ImageClassifier
    from .training.runner import run_grid

    seconds: dict[str, float] = {}
    work = output_dir / WORK_DIR
    work.mkdir(parents=True, exist_ok=True)
    data = build_unlearning_data(recipe.data, model_label_names(recipe))
    note_validation_source(recipe, data)
    with state.main_process_first():  # θ₀ is trained once; the other processes then load it
        base_dir = prepare_original(recipe, data, work, progress and state.is_main_process)
    original_model = describe_original(recipe, base_dir)
    seconds["original"] = time.perf_counter() - started

    tick = time.perf_counter()
    grid = run_grid(
        base_dir,
        data,
        recipe.grid,
        work / "grid",
        merge_config=recipe.merge,
        keep_task_vectors=keeps_run_vectors(recipe),
        keep_checkpoints=recipe.keep_checkpoints,
        progress=progress,
        base_description=f"{original_model['source']}={original_model['base_model']}",
    )
    seconds["grid"] = time.perf_counter() - tick
    if not state.is_main_process:  # grid points were sharded; evaluation and outputs are the main process's
        return None

    tick = time.perf_counter()
    classifier = ImageClassifier.from_pretrained(base_dir)
    control_head = control_head_text(recipe, data)
    evaluator = Evaluator(
        classifier, _encode_all(classifier, data, recipe), recipe.evaluation.batch_size, *control_head
    )
    evaluator.set_weights(None, 0.0)
    constraint = _constraint_split(evaluator)
    original_point = LambdaPoint(0.0, evaluator.accuracy("forget_val"), evaluator.accuracy(constraint))
    original = _test_metrics(evaluator, recipe.mia_enabled)

    from .console import bar as progress_bar

    bar = progress_bar(sum(evaluation_count(recipe, len(grid.run_ids))), "evaluate", progress, unit="eval")
    main = _outcome(
        evaluator,
        grid.task_vector,
        recipe.merge,
        recipe.merge.method,
        original_point,
        recipe,
        bar,
        kept_fraction=grid.merge.stats.kept_fraction,
    )
    key_names = KeyNames.of(classifier.model)
    vectors = _load_vectors(grid.output_dir, grid.run_ids, recipe.merge, key_names)
    comparison: list[MethodOutcome] = []
    per_run: list[MethodOutcome] = []
    for method in recipe.comparison:
        if method == recipe.merge.method:
            continue
        config = dataclasses.replace(recipe.merge, method=method, scale=None)
        if method == "task_arithmetic":
            run_ids = grid.run_ids if recipe.evaluation.per_run_task_arithmetic else grid.run_ids[:1]
            per_run = [
                _outcome(
                    evaluator,
                    vector,
                    config,
                    f"task_arithmetic[{run_id}]",
                    original_point,
                    recipe,
                    bar,
                    run_id=run_id,
                )
                for run_id, vector in zip(run_ids, vectors(), strict=False)
            ]
            best = best_single_run(per_run)
            comparison.append(dataclasses.replace(best, label=f"task_arithmetic (best: {best.run_id})"))
            continue
        bar.set_description_str(f"merge {method}")
        merged = merge_task_vectors(vectors(), config, key_names)
        comparison.append(
            _outcome(
                evaluator,
                merged.task_vector,
                config,
                method,
                original_point,
                recipe,
                bar,
                kept_fraction=merged.stats.kept_fraction,
            )
        )
    bar.close()
    seconds["evaluation"] = time.perf_counter() - tick

    retrain = None
    if recipe.evaluation.retrain:
        retrained_dir = prepare_retrained(recipe, data, progress)
        if retrained_dir is not None:
            retrained = Evaluator(
                ImageClassifier.from_pretrained(retrained_dir),
                evaluator.splits,
                recipe.evaluation.batch_size,
                *control_head,
            )
            retrain = _test_metrics(retrained, recipe.mia_enabled)
            for outcome in [main, *comparison]:
                if {
                    "retain_accuracy",
                    "forget_accuracy",
                    "test_accuracy",
                    "mia_efficacy",
                } <= outcome.test.keys():
                    outcome.test["avg_gap"] = avg_gap(outcome.test, retrain)

    outcome = UnlearningOutcome(
        output_dir,
        original,
        main,
        comparison,
        per_run,
        retrain,
        grid.merge,
        data.summary(),
        grid.run_ids,
        seconds,
        original_model,
    )
    outcome.assess(recipe.data.scenario)  # statuses, and warnings for a λ at the grid's edge or a tiny vector
    evaluator.set_weights(grid.task_vector, main.selection.scale)
    seconds["total"] = time.perf_counter() - started
    write_outputs(recipe, outcome, evaluator.classifier, base_dir)
    if recipe.evaluation.log_with:
        from .outputs import lambda_log_rows, run_logs
        from .tracking import send_to_trackers

        send_to_trackers(
            recipe.evaluation.log_with,
            work / "trackers",
            run_logs(outcome),
            lambda_log_rows(outcome),
            {"method": recipe.merge.method, "runs": len(grid.run_ids), "scale": main.selection.scale},
        )
    return outcome


def write_outputs(recipe: UnlearnRecipe, outcome: UnlearningOutcome, unlearned: Any, base_dir: Path) -> None:
    """Build every artifact in a staging folder, then publish them in one step (outputs.py)."""
    from .outputs import build_output_files, publish_outputs

    publish_outputs(
        outcome.output_dir,
        lambda staging: build_output_files(recipe, outcome, unlearned, base_dir, staging),
    )


__all__ = [
    "Evaluator",
    "MethodOutcome",
    "UnlearningOutcome",
    "describe_plan",
    "run_unlearning",
]
