"""What a model card for an unlearned model reports: `UnlearningCardData`, built from a run's
`RunResults` (metrics.json) or by hand, and checked on construction. `card.py` renders it.

Why `base_model_relation: finetune` by default: the Hub accepts `adapter`, `merge`, `quantized` and
`finetune`. The repo holds full weights (not an adapter), at full precision (not quantized),
derived from exactly one published model by a gradient-trained weight change θ₀ − λ·τ; the
fine-tuned runs that were merged into τ are not published models, so listing a single parent as a
`merge` would mislead. It stays settable.
"""

from __future__ import annotations

import dataclasses
import math
import numbers
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..config import NegMergeConfig
from ..errors import ConfigError
from ..results import STATUSES, RunResults
from ._connection import looks_like_repo_id

BASE_MODEL_RELATION = "finetune"
#: The values the Hub accepts for `base_model_relation`.
BASE_MODEL_RELATIONS = ("adapter", "merge", "quantized", "finetune")
ROLES = ("forget", "retain", "test", "control")

#: hf-negmerge model architectures (`metrics.json` "architecture") and the task their card declares.
ARCHITECTURE_TASKS = {
    "clip": "zero-shot-image-classification",
    "vit": "image-classification",
    "resnet": "image-classification",
}


@dataclass(frozen=True)
class ReportedMetric:
    """How one key of `metrics.json` appears on the card: the set it was measured on and its type."""

    key: str
    role: str
    metric_type: str
    metric_name: str
    direction: str  # what the unlearner wants: "lower", "higher" or "closer to retrain"


#: The measured numbers the card reports, in display order (percentages, as the evaluation writes them).
REPORTED_METRICS: dict[str, ReportedMetric] = {
    metric.key: metric
    for metric in (
        ReportedMetric("forget_accuracy", "forget", "accuracy", "Forget accuracy", "lower"),
        ReportedMetric("retain_accuracy", "retain", "accuracy", "Retain accuracy", "higher"),
        ReportedMetric("test_accuracy", "test", "accuracy", "Test accuracy", "higher"),
        ReportedMetric("control_accuracy", "control", "accuracy", "Control accuracy", "higher"),
        ReportedMetric("mia_efficacy", "forget", "mia_efficacy", "MIA-Efficacy", "closer to retrain"),
    )
}


@dataclass
class DatasetRef:
    """An evaluation set: a dataset (Hub id or local name), a split, and which subset of it."""

    dataset: str = field(
        metadata={"help": "Hub dataset id (e.g. 'uoft-cs/cifar10') or a local dataset name."}
    )
    split: str | None = field(default=None, metadata={"help": "Split the numbers were measured on."})
    config: str | None = field(default=None, metadata={"help": "Dataset configuration name, if any."})
    name: str | None = field(default=None, metadata={"help": "Human-readable dataset name."})
    subset: str | None = field(default=None, metadata={"help": "Which part, e.g. 'class 3' or '10% random'."})

    def __post_init__(self) -> None:
        if not isinstance(self.dataset, str) or not self.dataset.strip():
            raise ConfigError(f"DatasetRef.dataset must be a non-empty string, got {self.dataset!r}.")

    @classmethod
    def coerce(cls, value: DatasetRef | str | Mapping[str, Any], where: str) -> DatasetRef:
        if isinstance(value, DatasetRef):
            return value
        if isinstance(value, str):
            return cls(value)
        if isinstance(value, Mapping):
            known = {"dataset", "split", "config", "name", "subset"}
            values = {("dataset" if key == "id" else key): item for key, item in value.items()}
            unknown = sorted(set(values) - known)
            if unknown:
                raise ConfigError(f"{where}: unknown dataset key(s) {unknown}; use {sorted(known)}.")
            return cls(**values)
        raise ConfigError(f"{where}: expected a dataset id or a mapping, got {type(value).__name__}.")


@dataclass
class UnlearningCardData:
    """Everything a card for an unlearned model reports. Only the first three fields are required."""

    model_name: str = field(metadata={"help": "Name shown on the card and in the model-index."})
    forget_set: DatasetRef = field(metadata={"help": "The data the model was made to forget."})
    unlearned: dict[str, float] = field(
        metadata={"help": "Measured numbers of the unlearned model, keys as in REPORTED_METRICS (percent)."}
    )
    base_model: str | list[str] | None = field(
        default=None,
        metadata={"help": "Hub id of the original model θ₀ (or a list); None when θ₀ is not on the Hub."},
    )
    base_model_relation: str = field(
        default=BASE_MODEL_RELATION,
        metadata={"help": f"How it derives from base_model: {BASE_MODEL_RELATIONS}."},
    )
    original_model_label: str | None = field(
        default=None, metadata={"help": "How to name θ₀ in the text when it is not on the Hub."}
    )
    scale: float | None = field(
        default=None, metadata={"help": "The negation coefficient λ that was applied."}
    )
    status: str | None = field(default=None, metadata={"help": f"The run's outcome, one of {STATUSES}."})
    status_detail: str | None = field(default=None, metadata={"help": "The numbers behind the status."})
    warnings: list[str] = field(default_factory=list, metadata={"help": "What needs a second look."})
    original: dict[str, float] | None = field(default=None, metadata={"help": "Same numbers for θ₀."})
    retrain: dict[str, float] | None = field(
        default=None, metadata={"help": "Same numbers for a model retrained without the forget set."}
    )
    retain_set: DatasetRef | None = None
    test_set: DatasetRef | None = None
    control_set: DatasetRef | None = None
    datasets: list[str] | None = field(
        default=None,
        metadata={"help": "Hub dataset ids for the card's `datasets`; None: the namespaced ids of the sets."},
    )
    method: str = "negmerge"
    scenario: str | None = field(
        default=None, metadata={"help": "Forgetting scenario, e.g. 'class' or 'random'."}
    )
    config: NegMergeConfig | dict[str, Any] | None = None
    recipe: dict[str, Any] | str | None = field(
        default=None, metadata={"help": "Recipe (mapping or YAML text)."}
    )
    grid: list[dict[str, Any]] | None = field(default=None, metadata={"help": "One row per fine-tuning run."})
    lambda_curve: list[dict[str, Any]] | None = field(
        default=None, metadata={"help": "Validation curve along λ."}
    )
    lambda_selection: dict[str, Any] | None = field(
        default=None, metadata={"help": "How λ was chosen (qualified, reason, threshold)."}
    )
    kept_fraction: float | None = field(
        default=None, metadata={"help": "Fraction (0–1) of task-vector elements kept by the sign consensus."}
    )
    comparison: list[dict[str, Any]] | None = field(
        default=None, metadata={"help": "Rows of the method comparison."}
    )
    plots: list[str] = field(
        default_factory=list, metadata={"help": "PNG paths relative to the card, λ curve first."}
    )
    task_type: str = "image-classification"
    license: str | None = field(
        default=None, metadata={"help": "License id, e.g. 'apache-2.0' (the base model's)."}
    )
    tags: list[str] = field(default_factory=list)
    repo_id: str | None = field(
        default=None, metadata={"help": "Where the card will live (for usage snippets)."}
    )
    negation_vector: bool = field(
        default=False, metadata={"help": "Whether the repo also holds the sparse vector."}
    )

    def __post_init__(self) -> None:
        if not isinstance(self.model_name, str) or not self.model_name.strip():
            raise ConfigError("UnlearningCardData.model_name is required (the model-index needs a name).")
        if self.base_model is not None:
            parents = self.base_model if isinstance(self.base_model, list) else [self.base_model]
            bad_parents = [
                parent for parent in parents if not isinstance(parent, str) or not looks_like_repo_id(parent)
            ]
            if not parents or bad_parents:
                raise ConfigError(
                    f"UnlearningCardData.base_model must be the Hub id(s) of the original model ('org/name') "
                    f"or None, got {bad_parents or self.base_model!r}; a local path cannot be linked from a card."
                )
        if self.base_model_relation not in BASE_MODEL_RELATIONS:
            raise ConfigError(
                f"UnlearningCardData.base_model_relation={self.base_model_relation!r} is not one the Hub accepts "
                f"({', '.join(BASE_MODEL_RELATIONS)})."
            )
        if self.status is not None and self.status not in STATUSES:
            raise ConfigError(f"UnlearningCardData.status={self.status!r} is not one of {list(STATUSES)}.")
        self.forget_set = DatasetRef.coerce(self.forget_set, "UnlearningCardData.forget_set")
        for role in ("retain", "test", "control"):
            value = getattr(self, f"{role}_set")
            if value is not None:
                setattr(self, f"{role}_set", DatasetRef.coerce(value, f"UnlearningCardData.{role}_set"))
        for name in ("unlearned", "original", "retrain"):
            values = getattr(self, name)
            if values is None:
                continue
            bad = {
                key: value
                for key, value in values.items()
                if key in REPORTED_METRICS and not is_number(value)
            }
            if bad:
                raise ConfigError(f"UnlearningCardData.{name}: non-numeric metric value(s) {bad}.")
        if not any(key in REPORTED_METRICS and is_number(v) for key, v in self.unlearned.items()):
            raise ConfigError(
                f"UnlearningCardData.unlearned has none of the reported metrics {list(REPORTED_METRICS)}."
            )
        if self.scale is not None and not (is_number(self.scale) and math.isfinite(self.scale)):
            raise ConfigError(f"UnlearningCardData.scale={self.scale!r} must be a finite number.")
        if self.kept_fraction is not None and not (
            is_number(self.kept_fraction) and 0 <= self.kept_fraction <= 1
        ):
            raise ConfigError(f"UnlearningCardData.kept_fraction={self.kept_fraction!r} must be in [0, 1].")

    def dataset_for(self, role: str) -> DatasetRef | None:
        return getattr(self, f"{role}_set")

    @property
    def config_dict(self) -> dict[str, Any] | None:
        if isinstance(self.config, NegMergeConfig):
            return self.config.to_dict()
        return dict(self.config) if self.config is not None else None

    @classmethod
    def from_metrics_json(
        cls,
        metrics: str | Path | Mapping[str, Any] | RunResults,
        model_name: str | None = None,
        **overrides: Any,
    ) -> UnlearningCardData:
        """The card of a run's `metrics.json` (a path, its parsed dict or a `RunResults`); see `from_results`."""
        if isinstance(metrics, RunResults):
            results = metrics
        elif isinstance(metrics, Mapping):
            results = RunResults.from_dict(metrics)
        else:
            results = RunResults.load(metrics)
        return cls.from_results(results, model_name, **overrides)

    @classmethod
    def from_results(
        cls, results: RunResults, model_name: str | None = None, **overrides: Any
    ) -> UnlearningCardData:
        """The card of a run's results. Retain and test sets default to the forget set's dataset
        when their numbers are present (in the 'class' and 'random' scenarios they are parts of one
        dataset). A base_model that is not a Hub id (a local folder, or None for a model built from
        a config) is named in the text only. `overrides` win over everything read."""
        values: dict[str, Any] = {"unlearned": dict(results.unlearned)}
        forget_ref = DatasetRef.coerce(
            overrides.get("forget_set", results.forget_dataset), "metrics: forget_dataset"
        )
        subsets = _scenario_subsets(results)
        if forget_ref.subset is None and "forget" in subsets:
            forget_ref = dataclasses.replace(forget_ref, subset=subsets["forget"])
        values["forget_set"] = forget_ref
        for role in ("retain", "test", "control"):
            ref = getattr(results, f"{role}_dataset", None)
            if ref is None and role != "control" and f"{role}_accuracy" in results.unlearned:
                ref = DatasetRef(forget_ref.dataset, config=forget_ref.config, name=forget_ref.name)
            if ref is not None:
                ref = DatasetRef.coerce(ref, f"metrics: {role}_dataset")
                if ref.subset is None and role in subsets:
                    ref = dataclasses.replace(ref, subset=subsets[role])
                values[f"{role}_set"] = ref
        base_model = results.base_model
        trained_from = results.original_model.get("trained_from")
        if not _is_hub_id(base_model) and _is_hub_id(trained_from):  # θ₀ trained here from a Hub model
            base_model = trained_from
        if _is_hub_id(base_model):
            values["base_model"] = base_model
        else:  # a local folder or a model built from a config: nothing on the Hub to link
            values["original_model_label"] = (
                f"a local model, `{Path(base_model).name}`" if base_model else "a model built from a config"
            )
        task = ARCHITECTURE_TASKS.get(str(results.architecture or "").lower())
        if task is not None:
            values["task_type"] = task
        if results.hub_datasets:
            values["datasets"] = list(results.hub_datasets)
        for key in (
            "scale",
            "method",
            "scenario",
            "kept_fraction",
            "recipe",
            "license",
            "status",
            "status_detail",
        ):
            if getattr(results, key) is not None:
                values[key] = getattr(results, key)
        values["warnings"] = list(results.warnings)
        for key in ("original", "retrain", "config"):
            if getattr(results, key) is not None:
                values[key] = dict(getattr(results, key))
        for key in ("grid", "comparison"):
            if getattr(results, key):
                values[key] = [dict(row) for row in getattr(results, key)]
        if results.selection is not None:
            values["lambda_curve"] = [point.to_dict() for point in results.lambda_curve] or None
            values["lambda_selection"] = {
                "qualified": results.selection.qualified,
                "reason": results.selection.reason,
                "threshold": results.selection.threshold,
            }
        values.update(overrides)
        if values.get("base_model") is not None:
            values.pop("original_model_label", None)
        if model_name is None:
            stem = _short(values["base_model"]) if values.get("base_model") else "model"
            model_name = str(values.get("repo_id") or f"{stem}-negmerge-unlearned").split("/")[-1]
        return cls(model_name=model_name, **values)


def _is_hub_id(value: Any) -> bool:
    return isinstance(value, str) and looks_like_repo_id(value) and not Path(value).exists()


def _scenario_subsets(results: RunResults) -> dict[str, str]:
    """Which part of the dataset each role is, from the run's scenario (see docs/data.md)."""
    if results.scenario == "class":
        classes = results.data.get("forget_classes") or results.forget_classes
        named = ", ".join(str(c) for c in classes) if classes else None
        forget = (
            f"class{'es' if classes and len(classes) > 1 else ''} {named}"
            if named
            else "the forgotten classes"
        )
        return {"forget": forget, "retain": "the other classes"}
    if results.scenario == "random":
        return {"forget": "a random subset of the training split", "retain": "the rest of the training split"}
    return {}


def is_number(value: Any) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(float(value))


def _short(base_model: str | list[str]) -> str:
    first = base_model[0] if isinstance(base_model, list) else base_model
    return str(first).split("/")[-1]


def first_base_model(base_model: str | list[str] | None) -> str | None:
    """The first (or only) Hub id of `base_model`."""
    return base_model[0] if isinstance(base_model, list) else base_model
