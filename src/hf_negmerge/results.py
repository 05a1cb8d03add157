"""The results of an unlearning run, typed and versioned: the only reader and writer of `metrics.json`.

`MethodOutcome` / `UnlearningOutcome` are what the pipeline measures (they hold live objects:
the merged vector, the output folder); `RunResults` is the JSON record written as `metrics.json`
and read back by the model card, `push` and the benchmarks. `RunResults.to_dict` writes
`format` and `format_version`; `RunResults.from_dict` refuses a file without them (written
before the format was versioned) with the way to upgrade it: rerun `hf-negmerge unlearn` into the
same folder, which reuses every trained run and rewrites the outputs.

Status (docs/evaluation.md, "Statuses"): a method's outcome is "unlearned" only when both hold:
- its λ qualified: the retain (or control) validation accuracy stayed ≥ retain_ratio × the
  original's (otherwise "retain constraint not met"), and
- its test forget accuracy closed at least half of the gap between the original's and the
  *reference*, what a model that never saw the forget set would score (otherwise "not unlearned"):
  the retrained model's forget accuracy when it was measured; without it 0 for class forgetting
  (the class is never predicted), the original's test accuracy for random forgetting (the forget
  rows become unseen data) and chance (100 / classes) for forgetting a whole dataset.

The module is longer than most (~480 lines) on purpose: it is the single owner of the results
contract, so the types, the statuses and warnings recorded in it, and its reader and writer stay
in one place that every other module imports from.
"""

from __future__ import annotations

import dataclasses
import json
import math
import numbers
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .checkpoints import atomic_write_text
from .errors import NegMergeError, NegMergeWarning, warn
from .evaluation.report import to_jsonable
from .lambda_search import LambdaPoint, LambdaSelection
from .published_paths import portable_paths

if TYPE_CHECKING:
    from .merging import MergeResult
    from .recipe import UnlearnRecipe

METRICS_FILE = "metrics.json"
RESULTS_FORMAT = "hf-negmerge/results"
FORMAT_VERSION = 1

UNLEARNED = "unlearned"
NOT_UNLEARNED = "not unlearned"
RETAIN_NOT_MET = "retain constraint not met"
STATUSES = (UNLEARNED, NOT_UNLEARNED, RETAIN_NOT_MET)

#: Share of the gap (original forget accuracy − reference) the test forget accuracy must close.
FORGET_GAP_SHARE = 0.5
#: A merged vector whose norm is below this share of the runs' mean norm is flagged as tiny.
TINY_VECTOR_RATIO = 0.05
#: A θ₀ trained here that classifies fewer of its own training rows than this did not converge
#: (the recipes' θ₀ fit 93–100% of them); every comparison against it is suspect.
UNDERTRAINED_ORIGINAL_ACCURACY = 0.9


class ResultsFormatError(NegMergeError, ValueError):
    """A metrics.json that is not a results file of a format this version reads."""


class OutcomeWarning(NegMergeWarning):
    """The run finished but its result needs a second look (λ at the grid's edge, a tiny vector)."""


# ---------------------------------------------------------------------------------------------
# Status: did the forget accuracy really fall, with the retain constraint met?


@dataclass(frozen=True)
class Criterion:
    """The bar a test forget accuracy must reach to count as unlearned (percent)."""

    original_forget: float
    reference: float
    reference_source: str  # "retrain", "class forgetting (0)", "original test accuracy", "chance"

    @property
    def target(self) -> float:
        return self.original_forget - FORGET_GAP_SHARE * (self.original_forget - self.reference)

    def to_dict(self) -> dict[str, Any]:
        return {**dataclasses.asdict(self), "target": self.target, "gap_share": FORGET_GAP_SHARE}

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> Criterion:
        return cls(
            float(values["original_forget"]), float(values["reference"]), str(values["reference_source"])
        )


def forget_criterion(
    scenario: str | None,
    original: Mapping[str, float],
    retrain: Mapping[str, float] | None,
    num_classes: int | None,
) -> Criterion | None:
    """The criterion for this run, None when the original's forget accuracy was not measured."""
    before = original.get("forget_accuracy")
    if not _is_number(before):
        return None
    if retrain is not None and _is_number(retrain.get("forget_accuracy")):
        return Criterion(float(before), float(retrain["forget_accuracy"]), "retrain")
    if scenario == "class":
        return Criterion(float(before), 0.0, "class forgetting (0)")
    if scenario == "random" and _is_number(original.get("test_accuracy")):
        return Criterion(float(before), float(original["test_accuracy"]), "original test accuracy")
    chance = 100.0 / num_classes if num_classes else 0.0
    return Criterion(float(before), chance, "chance")


def assess(test: Mapping[str, float], qualified: bool, criterion: Criterion | None) -> tuple[str, str]:
    """(status, a sentence with the numbers) for one method's test results; see the module docstring."""
    forget = test.get("forget_accuracy")
    if not qualified:
        return RETAIN_NOT_MET, (
            "no λ kept the retain (or control) validation accuracy above the threshold; the λ shown is "
            "a fallback" + (f" (test forget accuracy {forget:.2f}%)." if _is_number(forget) else ".")
        )
    if criterion is None or not _is_number(forget):
        return NOT_UNLEARNED, "the forget accuracy was not measured on a test split."
    numbers_text = (
        f"test forget accuracy {forget:.2f}% against {criterion.original_forget:.2f}% for the original; "
        f"the bar is ≤ {criterion.target:.2f}% (half-way to the reference {criterion.reference:.2f}%, "
        f"{criterion.reference_source})"
    )
    if criterion.original_forget <= criterion.reference:
        return NOT_UNLEARNED, (
            f"the original's forget accuracy {criterion.original_forget:.2f}% is already at or below the reference "
            f"{criterion.reference:.2f}% ({criterion.reference_source}): there was nothing to forget "
            f"(test forget accuracy {forget:.2f}%)."
        )
    if forget <= criterion.target:
        return UNLEARNED, numbers_text + "."
    return NOT_UNLEARNED, numbers_text + ": the forget accuracy did not fall far enough."


# ---------------------------------------------------------------------------------------------
# What the pipeline measures.


@dataclass
class MethodOutcome:
    """One merge method's chosen λ, its validation curve, its test numbers (percent) and status."""

    method: str
    label: str
    selection: LambdaSelection
    test: dict[str, float]
    kept_fraction: float | None = None
    run_id: str | None = None
    status: str | None = None

    def row(self) -> dict[str, Any]:
        """One row of the comparison table: validation choice, test numbers, status."""
        return {
            "method": self.label,
            "scale": self.selection.scale,
            "qualified": self.selection.qualified,
            "val_forget_accuracy": self.selection.point.forget_accuracy,
            "val_retain_accuracy": self.selection.point.retain_accuracy,
            **self.test,
            "kept_fraction": self.kept_fraction,
            "status": self.status,
        }


def best_single_run(per_run: Sequence[MethodOutcome]) -> MethodOutcome:
    """The single run task arithmetic reports: among runs whose λ qualified, the lowest validation
    forget accuracy; only when none qualified, the lowest overall. Test numbers play no part."""
    if not per_run:
        raise ValueError("best_single_run needs at least one run.")
    return min(per_run, key=lambda o: (not o.selection.qualified, o.selection.point.forget_accuracy))


def grid_edge_warning(selection: LambdaSelection, label: str) -> str | None:
    """A warning when the chosen λ is the grid's largest: the curve may keep falling past it."""
    scales = [point.scale for point in selection.curve]
    if len(scales) < 2 or selection.scale < max(scales):
        return None
    return (
        f"{label}: the chosen λ={selection.scale:g} is the largest of the grid, so the forget accuracy "
        f"({selection.point.forget_accuracy:.2f}% on validation) may keep falling beyond it; extend "
        "merge.lambda_grid."
    )


def tiny_vector_warning(result_norm: float, input_norms: Sequence[float], label: str) -> str | None:
    """A warning when the merged vector is tiny next to the runs' (e.g. LoRA runs that disagree)."""
    if not input_norms:
        return None
    mean = sum(input_norms) / len(input_norms)
    if mean <= 0 or result_norm >= TINY_VECTOR_RATIO * mean:
        return None
    return (
        f"{label}: the merged vector's norm {result_norm:.4g} is {100 * result_norm / mean:.1f}% of the runs' "
        f"mean norm {mean:.4g} (below {100 * TINY_VECTOR_RATIO:g}%): the runs barely agree, and subtracting "
        "it may change little. Train runs that move the weights more (learning rate, epochs, LoRA rank)."
    )


def undertrained_original_warning(original_model: Mapping[str, Any]) -> str | None:
    """A warning when θ₀ was trained by this tool and fits its own training rows poorly."""
    accuracy = original_model.get("train_accuracy")
    if not _is_number(accuracy) or accuracy >= UNDERTRAINED_ORIGINAL_ACCURACY:
        return None
    return (
        f"θ₀ ({original_model.get('base_model')}) classifies only {100 * accuracy:.1f}% of its own training "
        f"rows (below {100 * UNDERTRAINED_ORIGINAL_ACCURACY:g}%): its training did not converge, so the "
        "original's numbers, and any forgetting measured against them, say little. Train it again with "
        "another seed, a lower original.learning_rate or more original.epochs (or start from a pretrained "
        "model), then rerun."
    )


def weak_forgetting_warning(label: str) -> str:
    """What to try when no qualifying λ forgot enough and neither the grid nor the vector is to blame."""
    return (
        f"{label}: no λ that kept the retain constraint lowered the forget accuracy far enough; the "
        "fine-tuning runs probably moved the weights too little. Raise their learning rate or epochs "
        "(LoRA runs usually need several times the full fine-tuning learning rate: see the digits/lora "
        "recipe), or relax merge.retain_ratio."
    )


@dataclass
class UnlearningOutcome:
    """Everything a run measured, with the live merged vector; `RunResults` is its JSON record."""

    output_dir: Path
    original: dict[str, float]
    main: MethodOutcome
    comparison: list[MethodOutcome]
    per_run: list[MethodOutcome]
    retrain: dict[str, float] | None
    merge: MergeResult
    data_summary: dict[str, Any]
    run_ids: list[str]
    seconds: dict[str, float] = field(default_factory=dict)
    original_model: dict[str, Any] = field(default_factory=dict)  # what θ₀ was: originals.describe_original
    criterion: Criterion | None = None
    status_detail: str = ""
    warnings: list[str] = field(default_factory=list)

    def rows(self) -> list[dict[str, Any]]:
        rows = [{"method": "original", "scale": 0.0, **self.original}]
        if self.retrain is not None:
            rows.append({"method": "retrain", **self.retrain})
        rows += [outcome.row() for outcome in [self.main, *self.comparison]]
        return rows

    def assess(self, scenario: str | None) -> None:
        """Set every method's status and the main one's detail; warn about what needs a look."""
        self.criterion = forget_criterion(
            scenario, self.original, self.retrain, self.data_summary.get("num_classes")
        )
        for outcome in [self.main, *self.comparison, *self.per_run]:
            outcome.status, detail = assess(outcome.test, outcome.selection.qualified, self.criterion)
            if outcome is self.main:
                self.status_detail = detail
        stats = self.merge.stats
        found = [
            undertrained_original_warning(self.original_model),
            grid_edge_warning(self.main.selection, self.main.label),
            tiny_vector_warning(stats.result_norm, stats.input_norms, self.main.label),
        ]
        self.warnings = [message for message in found if message]
        if self.main.status == NOT_UNLEARNED and not self.warnings:  # no other advice: say what to try
            self.warnings.append(weak_forgetting_warning(self.main.label))
        for message in self.warnings:
            warn(message, OutcomeWarning)

    def status_line(self) -> str:
        """'Status: <status> — <numbers>' for the terminal, report.md and the card."""
        return f"Status: {self.main.status} — {self.status_detail}"


# ---------------------------------------------------------------------------------------------
# metrics.json


def _is_number(value: Any) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(float(value))


def _point(values: Mapping[str, Any]) -> LambdaPoint:
    forget = values.get("forget_accuracy")
    return LambdaPoint(
        float(values["scale"]), math.nan if forget is None else forget, values["retain_accuracy"]
    )


@dataclass
class RunResults:
    """The content of `metrics.json` (percentages; kept_fraction 0–1). Only `forget_dataset` and
    `unlearned` are required; a hand-assembled file may leave the rest out."""

    forget_dataset: str | dict[str, Any]
    unlearned: dict[str, float]
    method: str = "negmerge"
    scale: float | None = None
    status: str | None = None
    status_detail: str | None = None
    criterion: Criterion | None = None
    warnings: list[str] = field(default_factory=list)
    base_model: str | None = None  # θ₀ as actually used (a folder, a Hub id, or θ₀'s cache folder)
    base_model_sha256: str | None = None  # sha256 of θ₀'s weight files
    original_model: dict[str, Any] = field(default_factory=dict)  # source, hash, what it was trained from
    license: str | None = None
    hub_datasets: list[str] = field(default_factory=list)
    architecture: str | None = None
    control_dataset: str | None = None
    retain_dataset: str | dict[str, Any] | None = None
    test_dataset: str | dict[str, Any] | None = None
    scenario: str | None = None
    forget_classes: list[Any] | None = None
    data: dict[str, Any] = field(default_factory=dict)
    original: dict[str, float] | None = None
    retrain: dict[str, float] | None = None
    selection: LambdaSelection | None = None
    kept_fraction: float | None = None
    merge_stats: dict[str, Any] | None = None
    comparison: list[dict[str, Any]] = field(default_factory=list)
    comparison_curves: dict[str, list[LambdaPoint]] = field(default_factory=dict)
    task_arithmetic_per_run: list[dict[str, Any]] = field(default_factory=list)
    grid: list[dict[str, Any]] = field(default_factory=list)
    config: dict[str, Any] | None = None
    recipe: dict[str, Any] | None = None
    seconds: dict[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.status is not None and self.status not in STATUSES:
            raise ResultsFormatError(f"status {self.status!r} is not one of {list(STATUSES)}.")

    @property
    def lambda_curve(self) -> list[LambdaPoint]:
        return list(self.selection.curve) if self.selection is not None else []

    @classmethod
    def from_outcome(
        cls, recipe: UnlearnRecipe, outcome: UnlearningOutcome, license: str | None = None
    ) -> RunResults:
        """The record of a finished run (what `hf-negmerge unlearn` writes)."""
        main = outcome.main
        return cls(
            method=main.method,
            scale=main.selection.scale,
            status=main.status,
            status_detail=outcome.status_detail,
            criterion=outcome.criterion,
            warnings=list(outcome.warnings),
            base_model=outcome.original_model.get("base_model", recipe.model.name_or_path),
            base_model_sha256=outcome.original_model.get("sha256"),
            original_model=dict(outcome.original_model),
            license=license,
            hub_datasets=_hub_datasets(recipe),
            architecture=recipe.model.architecture,
            forget_dataset=portable_paths(recipe.data.published_source("dataset"), outcome.output_dir),
            control_dataset=portable_paths(
                recipe.data.published_source("control_dataset"), outcome.output_dir
            ),
            scenario=recipe.data.scenario,
            forget_classes=recipe.data.forget_classes,
            data=outcome.data_summary,
            original=outcome.original,
            unlearned=main.test,
            retrain=outcome.retrain,
            selection=main.selection,
            kept_fraction=outcome.merge.stats.kept_fraction,
            merge_stats={k: v for k, v in outcome.merge.stats.to_dict().items() if k != "tensors"},
            comparison=outcome.rows(),
            comparison_curves={o.label: list(o.selection.curve) for o in outcome.comparison},
            task_arithmetic_per_run=[o.row() | {"run_id": o.run_id} for o in outcome.per_run],
            grid=[{"run_id": point.id, **point.overrides} for point in recipe.grid.expand()],
            config=dataclasses.replace(recipe.merge, scale=main.selection.scale).to_dict(),
            recipe=portable_paths(recipe.to_dict(), outcome.output_dir),
            seconds={key: round(value, 2) for key, value in outcome.seconds.items()},
        )

    def to_dict(self) -> dict[str, Any]:
        values: dict[str, Any] = {"format": RESULTS_FORMAT, "format_version": FORMAT_VERSION}
        for item in dataclasses.fields(self):
            values[item.name] = getattr(self, item.name)
        selection = self.selection
        values["criterion"] = self.criterion.to_dict() if self.criterion is not None else None
        values["selection"] = (
            None
            if selection is None
            else {
                "scale": selection.scale,
                "qualified": selection.qualified,
                "reason": selection.reason,
                "threshold": selection.threshold,
                "original": selection.original.to_dict(),
                "point": selection.point.to_dict(),
            }
        )
        values["lambda_curve"] = [point.to_dict() for point in self.lambda_curve]
        values["comparison_curves"] = {
            label: [point.to_dict() for point in curve] for label, curve in self.comparison_curves.items()
        }
        return to_jsonable(values)

    @classmethod
    def from_dict(cls, values: Mapping[str, Any], source: str = METRICS_FILE) -> RunResults:
        """Read a results mapping; ResultsFormatError naming `source` and the key when it is not one."""
        if not isinstance(values, Mapping):
            raise ResultsFormatError(f"{source} must hold a JSON object, got {type(values).__name__}.")
        version = values.get("format_version")
        if version is None:
            raise ResultsFormatError(
                f"{source} has no 'format_version': it was written by an hf-negmerge older than the versioned "
                f"results format ({RESULTS_FORMAT} v{FORMAT_VERSION}). Upgrade it by running the same "
                "`hf-negmerge unlearn` into its folder again (every trained run and θ₀ are reused; only the "
                f'evaluation reruns), or add "format_version": {FORMAT_VERSION} to a file you wrote by hand.'
            )
        if version != FORMAT_VERSION or values.get("format", RESULTS_FORMAT) != RESULTS_FORMAT:
            raise ResultsFormatError(
                f"{source} is {values.get('format', RESULTS_FORMAT)!r} version {version!r}; this hf-negmerge "
                f"reads {RESULTS_FORMAT!r} version {FORMAT_VERSION}. Upgrade hf-negmerge to read it."
            )
        known = {item.name for item in dataclasses.fields(cls)}
        read = {"format", "format_version", "lambda_curve"}
        unknown = sorted(set(values) - known - read)
        if unknown:
            raise ResultsFormatError(f"{source}: unknown key(s) {unknown}; known: {sorted(known)}.")
        for key in ("forget_dataset", "unlearned"):
            if values.get(key) is None:
                raise ResultsFormatError(f"{source} has no {key!r}; every results file needs it.")
        if not isinstance(values["unlearned"], Mapping):
            raise ResultsFormatError(f"{source}: 'unlearned' must be a mapping of metric to value.")
        if values.get("status") is not None and values["status"] not in STATUSES:
            raise ResultsFormatError(f"{source}: status {values['status']!r} is not one of {list(STATUSES)}.")
        if values.get("lambda_curve") and not values.get("selection"):
            raise ResultsFormatError(
                f"{source} has a 'lambda_curve' but no 'selection' that says which λ it chose."
            )
        kwargs = {key: values[key] for key in known if values.get(key) is not None}
        try:
            if kwargs.get("criterion") is not None:
                kwargs["criterion"] = Criterion.from_dict(kwargs["criterion"])
            if kwargs.get("selection") is not None:
                kwargs["selection"] = _selection(kwargs["selection"], values.get("lambda_curve") or [])
            kwargs["comparison_curves"] = {
                label: [_point(point) for point in curve]
                for label, curve in (values.get("comparison_curves") or {}).items()
            }
            return cls(**kwargs)
        except (KeyError, TypeError, ValueError, AttributeError) as error:
            if isinstance(error, ResultsFormatError):
                raise
            raise ResultsFormatError(f"{source} is not a valid results file: {error!r}.") from error

    def save(self, folder: str | Path) -> Path:
        """Write `metrics.json` into `folder`, atomically."""
        path = Path(folder) / METRICS_FILE
        atomic_write_text(path, json.dumps(self.to_dict(), indent=2, ensure_ascii=False) + "\n")
        return path

    @classmethod
    def load(cls, path: str | Path) -> RunResults:
        """Read `metrics.json` from a file or from the output folder holding it."""
        path = Path(path)
        if path.is_dir():
            path = path / METRICS_FILE
        try:
            values = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError as error:
            raise ResultsFormatError(f"{path} does not exist.") from error
        except json.JSONDecodeError as error:
            raise ResultsFormatError(f"{path} is not valid JSON: {error}") from error
        return cls.from_dict(values, source=str(path))


def _selection(values: Mapping[str, Any], curve: Sequence[Mapping[str, Any]]) -> LambdaSelection:
    point = _point(values["point"])
    original = _point(values["original"]) if values.get("original") else LambdaPoint(0.0, math.nan, 0.0)
    return LambdaSelection(
        scale=float(values.get("scale", point.scale)),
        point=point,
        qualified=bool(values["qualified"]),
        reason=str(values.get("reason", "")),
        curve=[_point(item) for item in curve],
        original=original,
        threshold=float(values.get("threshold", math.nan)),
    )


def _hub_datasets(recipe: UnlearnRecipe) -> list[str]:
    """The recipe's datasets that were read from the Hub (their ids go into the card's `datasets`)."""
    from .data.loading import detect_source_kind

    ids = []
    for source in (recipe.data.dataset, recipe.data.control_dataset):
        try:
            if source is not None and detect_source_kind(source) == "hub" and source not in ids:
                ids.append(str(source))
        except NegMergeError:
            continue
    return ids


__all__ = [
    "FORGET_GAP_SHARE",
    "FORMAT_VERSION",
    "METRICS_FILE",
    "NOT_UNLEARNED",
    "RETAIN_NOT_MET",
    "STATUSES",
    "TINY_VECTOR_RATIO",
    "UNDERTRAINED_ORIGINAL_ACCURACY",
    "UNLEARNED",
    "Criterion",
    "MethodOutcome",
    "OutcomeWarning",
    "ResultsFormatError",
    "RunResults",
    "UnlearningOutcome",
    "assess",
    "best_single_run",
    "forget_criterion",
    "grid_edge_warning",
    "tiny_vector_warning",
    "undertrained_original_warning",
    "weak_forgetting_warning",
]
