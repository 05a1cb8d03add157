"""The pipeline's evaluation stage: every method's λ search and test metrics on pre-encoded splits.

Each split is preprocessed once (`data.encode_split`; beyond a small total in memory, into files in
the run's work folder, so memory does not grow with the splits); one working copy of θ₀ is reset to
θ₀ − λ·τ for each (method, λ), so the λ searches of all methods cost forward passes only. The
numbers themselves come from `evaluation.predict` and `evaluation.mia`; the selection rule from
`lambda_search`. CLIP's control head is built by the model (`compute_head`, the one zero-shot head
builder) and swapped in for the control splits.
"""

from __future__ import annotations

import dataclasses
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from ..config import NegMergeConfig
from ..console import bar as progress_bar
from ..data import EncodedSplit, UnlearningData, encode_split, label_ids
from ..errors import ConfigError
from ..key_space import KeyNames
from ..lambda_search import LambdaPoint, LambdaSearchConfig, LambdaSelection, search_lambda
from ..merging import merge_task_vectors
from ..originals import retain_without_validation
from ..output_folder import WORK_DIR
from ..results import MethodOutcome, best_single_run
from ..task_vector import TaskVector, select_keys
from .gap import avg_gap
from .mia import mia_efficacy
from .predict import Predictions, predict

if TYPE_CHECKING:
    from ..recipe import UnlearnRecipe
    from ..training.runner import GridResult


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
        num_classes = int(max(label_ids(data.control_test).max(), label_ids(data.control_val).max())) + 1
    if len(names) != num_classes:
        raise ConfigError(
            f"data.control_prompt_names has {len(names)} names but the control dataset "
            f"{recipe.data.control_dataset!r} has {num_classes} classes; give one name per label id."
        )
    return names, templates


#: encoded pixels kept in memory, over all splits; the splits past it are read from disk per batch
IN_MEMORY_PIXEL_BYTES = 256 * 2**20


def encode_splits(classifier: Any, data: UnlearningData, recipe: UnlearnRecipe) -> dict[str, EncodedSplit]:
    """Every split the evaluation scores, preprocessed once (retain_train only for the MIA).

    Splits stay in memory while their pixels total at most `IN_MEMORY_PIXEL_BYTES`; the others go
    to temporary files in the run's work folder (the system's temporary folder when it has none).
    """
    wanted = ["forget_val", "forget_test", "retain_val", "retain_test", "test", "control_val", "control_test"]
    if recipe.mia_enabled:
        wanted.append("retain_train")
    splits = data.splits()
    if data.retain_train is not None and (recipe.mia_enabled or data.retain_test is data.retain_train):
        # RA and the MIA members are rows θ₀ trained on (SalUn's retain set excludes its validation
        # rows): drop the retain validation rows, keeping row order (members = the first rows).
        trained_retain = retain_without_validation(data)
        if data.retain_test is data.retain_train:  # 'random': RA is measured on the retain set itself
            splits["retain_test"] = trained_retain
        splits["retain_train"] = trained_retain
    work_dir = Path(recipe.output_dir) / WORK_DIR
    disk_dir = work_dir if work_dir.is_dir() else Path(tempfile.gettempdir())
    memory_left = IN_MEMORY_PIXEL_BYTES
    encoded: dict[str, EncodedSplit] = {}
    for name in (name for name in wanted if name in splits):
        split = encode_split(
            classifier, splits[name], name, recipe.evaluation.batch_size, disk_dir, memory_left
        )
        if isinstance(split.pixel_values, torch.Tensor):
            memory_left -= split.pixel_values.nbytes
        encoded[name] = split
    return encoded


def constraint_split(evaluator: Evaluator) -> str:
    """The split the retain constraint is measured on: retain validation, else control validation."""
    for name in ("retain_val", "control_val"):
        if name in evaluator.splits:
            return name
    raise ConfigError("λ selection needs a retain or control validation split; this scenario has neither.")


def reported_metrics(evaluator: Evaluator, mia: bool) -> dict[str, float]:
    """The reported test numbers of the current weights: each split's accuracy, UA, and MIA-Efficacy
    when enabled; the scenario decides which splits exist, so the dict holds only those."""
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


def search_scale(
    evaluator: Evaluator,
    vector: TaskVector,
    config: LambdaSearchConfig,
    original_point: LambdaPoint,
    bar: Any,
) -> LambdaSelection:
    """The λ of `vector` chosen on validation (lambda_search's rule); λ = 0 reuses θ₀'s point."""
    constraint = constraint_split(evaluator)

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


def evaluate_method(
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
    """One method: its λ search on validation, then its test metrics at the chosen λ."""
    bar.set_description_str(f"λ search {label}")
    selection = search_scale(evaluator, vector, config, original_point, bar)
    bar.set_description_str(f"test {label}")
    evaluator.set_weights(vector, selection.scale)
    test = reported_metrics(evaluator, recipe.mia_enabled)
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


def load_run_vectors(
    grid_dir: Path, run_ids: list[str], config: NegMergeConfig, key_names: KeyNames
) -> Callable[[], Iterator[TaskVector]]:
    """The runs' task vectors restricted to the merge's include/exclude tensors, so single-run
    task arithmetic is compared on the same parameters as the merges (patterns in either
    naming, resolved with the base model's `key_names`)."""
    from ..training.runner import RUNS_DIR, TASK_VECTOR_FILE

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


def keeps_run_vectors(recipe: UnlearnRecipe) -> bool:
    """Whether the runs' task vectors must stay on disk: only comparison methods read them again."""
    return any(method != recipe.merge.method for method in recipe.comparison)


@dataclass
class Evaluation:
    """θ₀'s and every method's numbers, and the evaluator (splits, θ₀ copy) they were measured with."""

    evaluator: Evaluator
    control_head: tuple[list[str] | None, list[str] | None]
    original: dict[str, float]  # θ₀'s test metrics
    main: MethodOutcome
    comparison: list[MethodOutcome]
    per_run: list[MethodOutcome]


def evaluate_methods(
    recipe: UnlearnRecipe, data: UnlearningData, classifier: Any, grid: GridResult, progress: bool
) -> Evaluation:
    """θ₀'s reference point, then the main method's and each comparison method's λ search and test."""
    control_head = control_head_text(recipe, data)
    evaluator = Evaluator(
        classifier, encode_splits(classifier, data, recipe), recipe.evaluation.batch_size, *control_head
    )
    evaluator.set_weights(None, 0.0)
    constraint = constraint_split(evaluator)
    original_point = LambdaPoint(0.0, evaluator.accuracy("forget_val"), evaluator.accuracy(constraint))
    original = reported_metrics(evaluator, recipe.mia_enabled)

    bar = progress_bar(sum(evaluation_count(recipe, len(grid.run_ids))), "evaluate", progress, unit="eval")

    def score(vector: TaskVector, config: NegMergeConfig, label: str, **extra: Any) -> MethodOutcome:
        return evaluate_method(evaluator, vector, config, label, original_point, recipe, bar, **extra)

    main = score(
        grid.task_vector, recipe.merge, recipe.merge.method, kept_fraction=grid.merge.stats.kept_fraction
    )
    key_names = KeyNames.of(classifier.model)
    vectors = load_run_vectors(grid.output_dir, grid.run_ids, recipe.merge, key_names)
    comparison: list[MethodOutcome] = []
    per_run: list[MethodOutcome] = []
    for method in recipe.comparison:
        if method == recipe.merge.method:
            continue
        config = dataclasses.replace(recipe.merge, method=method, scale=None)
        if method == "task_arithmetic":
            run_ids = grid.run_ids if recipe.evaluation.per_run_task_arithmetic else grid.run_ids[:1]
            per_run = [
                score(vector, config, f"task_arithmetic[{run_id}]", run_id=run_id)
                for run_id, vector in zip(run_ids, vectors(), strict=False)
            ]
            best = best_single_run(per_run)
            comparison.append(dataclasses.replace(best, label=f"task_arithmetic (best: {best.run_id})"))
            continue
        bar.set_description_str(f"merge {method}")
        merged = merge_task_vectors(vectors(), config, key_names)
        comparison.append(score(merged.task_vector, config, method, kept_fraction=merged.stats.kept_fraction))
    bar.close()
    return Evaluation(evaluator, control_head, original, main, comparison, per_run)


def score_retrain(evaluation: Evaluation, retrained: Any, recipe: UnlearnRecipe) -> dict[str, float]:
    """The Retrain reference's test metrics on the same encoded splits, and each method's Avg. Gap to it."""
    evaluator = Evaluator(
        retrained, evaluation.evaluator.splits, recipe.evaluation.batch_size, *evaluation.control_head
    )
    retrain = reported_metrics(evaluator, recipe.mia_enabled)
    for outcome in [evaluation.main, *evaluation.comparison]:
        if {"retain_accuracy", "forget_accuracy", "test_accuracy", "mia_efficacy"} <= outcome.test.keys():
            outcome.test["avg_gap"] = avg_gap(outcome.test, retrain)
    return retrain
