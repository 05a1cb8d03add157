"""Model cards for unlearned models, built with huggingface_hub's `ModelCard` / `ModelCardData`.

The card's YAML carries what the Hub indexes: `base_model` with `base_model_relation: finetune`,
tags, datasets, `library_name` and a `model-index` with the measured numbers (forget / retain /
test / control accuracy, MIA-Efficacy where measured). The body is the Jinja template
`templates/model_card.md` (package data) rendered by `ModelCard.from_template`; this module only
prepares its values: the status line, rounded tables (λ curve labelled as validation data, results
and comparison as test data), the usage snippet, how the model was made and what it does not
guarantee.

Why `finetune`: the Hub accepts `adapter`, `merge`, `quantized` and `finetune`. The repo holds
full weights (not an adapter), at full precision (not quantized), derived from exactly one
published model by a gradient-trained weight change θ₀ − λ·τ; the fine-tuned runs that were
merged into τ are not published models, so listing a single parent as a `merge` would mislead.

Forget and retain results often come from the same dataset. The Hub merges model-index entries
that share (task, dataset type, config, split, revision), so each role gets its own split label
("test (forget set)") and dataset name.
"""

from __future__ import annotations

import dataclasses
import math
import numbers
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from huggingface_hub import EvalResult, ModelCard, ModelCardData

from ..checkpoints import atomic_write_text
from ..config import NegMergeConfig
from ..errors import ConfigError
from ..evaluation.report import COLUMNS, Column, format_value, markdown_table, table_columns
from ..results import STATUSES, RunResults
from ._connection import looks_like_repo_id

CARD_NAME = "README.md"
TEMPLATE_PATH = Path(__file__).parent / "templates" / "model_card.md"
BASE_MODEL_RELATION = "finetune"
#: The values the Hub accepts for `base_model_relation`.
BASE_MODEL_RELATIONS = ("adapter", "merge", "quantized", "finetune")
#: Decimals of every number on the card (kept fractions are shown in percent).
CARD_DECIMALS = 2
STATUS_LEGEND = (
    "*unlearned* means: λ kept retain (or control) validation accuracy ≥ retain_ratio × the original's, "
    "and the test forget accuracy closed at least half of the gap between the original's and a reference "
    "(a retrained model's when measured; otherwise 0 for class forgetting, the original's test accuracy for "
    "random forgetting, chance for a whole dataset). Otherwise the status is *retain constraint not met* "
    "or *not unlearned*."
)
DEFAULT_TAGS = ("machine-unlearning", "negmerge", "task-arithmetic", "model-merging", "hf-negmerge")
ROLES = ("forget", "retain", "test", "control")
PAPER_URL = "https://arxiv.org/abs/2410.05583"
CITATION = """@InProceedings{kim2025negmerge,
  title     = {{N}eg{M}erge: Sign-Consensual Weight Merging for Machine Unlearning},
  author    = {Kim, Hyo Seo and Han, Dongyoon and Choe, Junsuk},
  booktitle = {Proceedings of the 42nd International Conference on Machine Learning},
  series    = {Proceedings of Machine Learning Research},
  volume    = {267},
  pages     = {30067--30085},
  year      = {2025}
}"""


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
                if key in REPORTED_METRICS and not _is_number(value)
            }
            if bad:
                raise ConfigError(f"UnlearningCardData.{name}: non-numeric metric value(s) {bad}.")
        if not any(key in REPORTED_METRICS and _is_number(v) for key, v in self.unlearned.items()):
            raise ConfigError(
                f"UnlearningCardData.unlearned has none of the reported metrics {list(REPORTED_METRICS)}."
            )
        if self.scale is not None and not (_is_number(self.scale) and math.isfinite(self.scale)):
            raise ConfigError(f"UnlearningCardData.scale={self.scale!r} must be a finite number.")
        if self.kept_fraction is not None and not (
            _is_number(self.kept_fraction) and 0 <= self.kept_fraction <= 1
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
        if isinstance(base_model, str) and looks_like_repo_id(base_model) and not Path(base_model).exists():
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


def _is_number(value: Any) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(float(value))


def _short(base_model: str | list[str]) -> str:
    first = base_model[0] if isinstance(base_model, list) else base_model
    return str(first).split("/")[-1]


def _first(base_model: str | list[str]) -> str:
    return base_model[0] if isinstance(base_model, list) else base_model


# -- metadata ------------------------------------------------------------------------------------------------
def _split_label(ref: DatasetRef, role: str) -> str:
    if role == "test":
        return ref.split or "test"
    return f"{ref.split} ({role} set)" if ref.split else f"{role} set"


def eval_results(data: UnlearningCardData) -> list[EvalResult]:
    """One `EvalResult` per measured metric whose evaluation set is known. Forget and retain sets
    are often one dataset: each role gets its own split label, so the Hub keeps them apart."""
    results = []
    for key, metric in REPORTED_METRICS.items():
        value = data.unlearned.get(key)
        ref = data.dataset_for(metric.role)
        if not _is_number(value) or ref is None:
            continue
        label = ref.name or ref.dataset
        subset = f", {ref.subset}" if ref.subset else ""
        results.append(
            EvalResult(
                task_type=data.task_type,
                dataset_type=ref.dataset,
                dataset_name=f"{label} ({metric.role} set{subset})",
                dataset_config=ref.config,
                dataset_split=_split_label(ref, metric.role),
                dataset_args={"role": metric.role, **({"subset": ref.subset} if ref.subset else {})},
                metric_type=metric.metric_type,
                metric_name=metric.metric_name,
                metric_value=round(float(value), CARD_DECIMALS),
            )
        )
    return results


def _hub_datasets(data: UnlearningCardData) -> list[str]:
    if data.datasets is not None:
        return list(dict.fromkeys(data.datasets))
    found = []  # only namespaced Hub ids: a bare local name would be a dead link
    for role in ROLES:
        ref = data.dataset_for(role)
        if (
            ref is not None
            and "/" in ref.dataset
            and looks_like_repo_id(ref.dataset)
            and ref.dataset not in found
        ):
            found.append(ref.dataset)
    return found


def card_metadata(data: UnlearningCardData) -> ModelCardData:
    tags = [*DEFAULT_TAGS, *([f"unlearning-{data.scenario}"] if data.scenario else []), *data.tags]
    results = eval_results(data)
    lineage = (
        {"base_model": data.base_model, "base_model_relation": data.base_model_relation}
        if data.base_model
        else {}
    )
    return ModelCardData(
        **lineage,
        library_name="transformers",
        license=data.license,
        pipeline_tag=data.task_type,
        tags=list(dict.fromkeys(tags)),
        datasets=_hub_datasets(data) or None,
        metrics=sorted({result.metric_type for result in results}) or None,
        model_name=data.model_name,
        eval_results=results or None,
    )


# -- body: values for templates/model_card.md ------------------------------------------------------------------
def _describe_set(ref: DatasetRef | None) -> str:
    if ref is None:
        return "—"
    parts = [f"`{ref.dataset}`"]
    if ref.config:
        parts.append(f"config `{ref.config}`")
    if ref.split:
        parts.append(f"split `{ref.split}`")
    if ref.subset:
        parts.append(ref.subset)
    return ", ".join(parts)


def card_table(rows: Sequence[Mapping[str, Any]], columns: Sequence[Column] | None = None) -> str:
    """A markdown table with every number at CARD_DECIMALS (kept fractions as percentages)."""
    prepared = []
    for row in rows:
        shown = dict(row)
        if _is_number(shown.get("kept_fraction")):
            shown["kept_fraction"] = 100 * shown["kept_fraction"]
        prepared.append(shown)
    headers = {column.key: column.header for column in COLUMNS} | {
        "kept_fraction": "kept %",
        "val_forget_accuracy": "val forget acc",
        "val_retain_accuracy": "val retain acc",
        "unlearn_accuracy": "100 − forget ↑",
    }
    chosen = list(columns) if columns is not None else table_columns(prepared)
    return markdown_table(
        prepared,
        [Column(column.key, headers.get(column.key, column.header), CARD_DECIMALS) for column in chosen],
    )


def _plain_numbers(rows: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Hyperparameter rows with floats in their shortest form (1e-3 stays 0.001, not 0.00)."""
    return [
        {key: f"{value:g}" if isinstance(value, float) else value for key, value in row.items()}
        for row in rows
    ]


_RESULT_COLUMNS = (
    Column("metric", "metric"),
    Column("measured on", "measured on"),
    Column("original", "original"),
    Column("unlearned", "unlearned"),
    Column("change", "change"),
    Column("retrain", "retrained without forget set"),
    Column("wanted", "wanted"),
)


def _results_table(data: UnlearningCardData) -> str:
    rows = []
    for key, metric in REPORTED_METRICS.items():
        value = data.unlearned.get(key)
        if not _is_number(value):
            continue
        before = (data.original or {}).get(key)
        retrained = (data.retrain or {}).get(key)
        rows.append(
            {
                "metric": metric.metric_name,
                "measured on": f"{metric.role} set (test)",
                "original": float(before) if _is_number(before) else None,
                "unlearned": float(value),
                "change": float(value) - float(before) if _is_number(before) else None,
                "retrain": float(retrained) if _is_number(retrained) else None,
                "wanted": metric.direction,
            }
        )
    columns = [
        c for c in _RESULT_COLUMNS if c.key != "retrain" or any(r["retrain"] is not None for r in rows)
    ]
    return card_table(rows, columns)


#: How each merge method combined the task vectors, in words (methods of hf_negmerge.merging).
MERGE_DESCRIPTIONS = {
    "negmerge": "merged by sign consensus (an element is kept only where the runs agree in sign; its "
    "value is their mean; elsewhere it is zero)",
    "task_arithmetic": "used one at a time (plain task arithmetic, no merge)",
    "uniform": "averaged element by element (uniform merge)",
    "ties": "merged with TIES (trim by magnitude, elect a sign, average the agreeing entries)",
    "magmax": "merged with MagMax (per element, the value of largest magnitude)",
}


def _method_text(data: UnlearningCardData) -> str:
    lambda_text = (
        f"λ = {format_value(data.scale, CARD_DECIMALS)}" if data.scale is not None else "λ (not recorded)"
    )
    runs = f"{len(data.grid)} copies" if data.grid else "Several copies"
    combination = MERGE_DESCRIPTIONS.get(data.method, f"combined with the `{data.method}` merge method")
    return (
        f"Method: **{data.method}** (hf-negmerge; NegMerge is [ICML 2025]({PAPER_URL})). {runs} of the original "
        "model were fine-tuned **on the forget set only**, each with different hyperparameters. Their task "
        f"vectors τₖ = θₖ − θ₀ were {combination}, and the result was negated: θ = θ₀ − λ·τ with {lambda_text}."
    )


def _sparsity_text(data: UnlearningCardData) -> str | None:
    if data.kept_fraction is None or data.method != "negmerge":
        return None
    return (
        f"Consensus sparsity: {100 * data.kept_fraction:.2f}% of the task-vector elements survived the consensus "
        f"({100 * (1 - data.kept_fraction):.2f}% are exactly zero), so only those weights differ from the "
        "original model."
    )


def _selection_text(data: UnlearningCardData) -> str | None:
    """How λ was chosen, from the numbers (rounded), not from the run's 4-decimal log line."""
    selection = data.lambda_selection or {}
    if not selection:
        return None
    threshold = selection.get("threshold")
    rule = (
        f"the lowest validation forget accuracy among the λ whose retain (or control) validation accuracy "
        f"stayed ≥ {format_value(threshold, CARD_DECIMALS)}%"
        if _is_number(threshold)
        else str(selection.get("reason") or "").rstrip(".")
    )
    if selection.get("qualified") is False:
        return (
            f"λ was chosen on validation data by the **fallback rule**: no λ kept retain accuracy above the "
            f"threshold{f' ({rule})' if rule else ''}."
        )
    return f"λ was chosen on validation data{f': {rule}' if rule else ''}."


def _recipe_yaml(recipe: dict[str, Any] | str | None) -> str | None:
    if recipe is None:
        return None
    if isinstance(recipe, str):
        return recipe.rstrip()
    shared = {key: value for key, value in recipe.items() if key != "output_dir"}  # a local detail
    return yaml.safe_dump(shared, sort_keys=False, allow_unicode=True).rstrip()


#: hf-negmerge model architectures (`metrics.json` "architecture") and the task their card declares.
ARCHITECTURE_TASKS = {"clip": "zero-shot-image-classification", "vit": "image-classification"}

#: transformers auto classes that load the processor and the model for each task.
AUTO_CLASSES_FOR_TASK = {
    "image-classification": ("AutoImageProcessor", "AutoModelForImageClassification"),
    "zero-shot-image-classification": ("AutoProcessor", "AutoModel"),
}


def task_for_architectures(architectures: Sequence[str]) -> str | None:
    """The pipeline task of a saved model's `config.json` architectures, when hf-negmerge knows it."""
    for architecture in architectures:
        if architecture.endswith("ForImageClassification"):
            return "image-classification"
        if architecture == "CLIPModel":
            return "zero-shot-image-classification"
    return None


def usage_snippet(data: UnlearningCardData) -> str:
    """Python that loads the processor and the model, and classifies an image with a pipeline."""
    repo = data.repo_id or "<this-repo>"
    processor_class, model_class = AUTO_CLASSES_FOR_TASK.get(data.task_type, ("AutoProcessor", "AutoModel"))
    call = (
        'classifier("image.png", candidate_labels=["a photo of a cat", "a photo of a dog"])'
        if data.task_type == "zero-shot-image-classification"
        else 'classifier("image.png")'
    )
    return "\n".join(
        [
            f"from transformers import {processor_class}, {model_class}, pipeline",
            "",
            f'classifier = pipeline("{data.task_type}", model="{repo}")',
            f"print({call})",
            "",
            "# or step by step",
            f'processor = {processor_class}.from_pretrained("{repo}")',
            f'model = {model_class}.from_pretrained("{repo}")',
        ]
    )


def _vector_usage(data: UnlearningCardData) -> str | None:
    if not data.negation_vector:
        return None
    repo = data.repo_id or "<this-repo>"
    base = _first(data.base_model) if data.base_model else "<folder of the original model>"
    model_class = AUTO_CLASSES_FOR_TASK.get(data.task_type, ("AutoProcessor", "AutoModel"))[1]
    return "\n".join(
        [
            f"from transformers import {model_class}",
            "from hf_negmerge.hub import NegationVector",
            "",
            f'vector = NegationVector.from_pretrained("{repo}")',
            f'model = {model_class}.from_pretrained("{base}")',
            "vector.apply_to(model)  # θ₀ − λ·τ with the stored λ, in place",
        ]
    )


def _intro(data: UnlearningCardData) -> str:
    forget = data.forget_set
    if data.base_model:
        first = _first(data.base_model)
        original = f"This model is [`{first}`](https://huggingface.co/{first})"
    else:
        original = f"This model is its original model ({data.original_model_label or 'not published'}; not on the Hub)"
    return (
        f"{original} with {data.method} applied to forget {forget.subset or 'the data'} of "
        f"`{forget.name or forget.dataset}`: a vector learned by fine-tuning on that data was subtracted from its "
        "weights. Made with hf-negmerge; read the status below and *Limitations* before use."
    )


def template_values(data: UnlearningCardData) -> dict[str, Any]:
    """Every value templates/model_card.md uses, prepared (rounded, labelled) from the card data."""
    config = data.config_dict
    return {
        "model_name": data.model_name,
        "intro": _intro(data),
        "status": data.status,
        "status_detail": data.status_detail,
        "status_legend": STATUS_LEGEND,
        "warnings": list(data.warnings),
        "results_table": _results_table(data),
        "sets_table": "\n".join(
            ["| set | data |", "|---|---|"]
            + [
                f"| {role} | {_describe_set(data.dataset_for(role))} |"
                for role in ROLES
                if data.dataset_for(role)
            ]
        ),
        "method_text": _method_text(data),
        "sparsity_text": _sparsity_text(data),
        "selection_text": _selection_text(data),
        # Flow style keeps the λ grid on one line; the same values are in negmerge_config.json.
        "config_yaml": yaml.safe_dump(
            config, sort_keys=True, default_flow_style=None, allow_unicode=True, width=100
        ).rstrip()
        if config is not None
        else None,
        "recipe_yaml": _recipe_yaml(data.recipe),
        "grid_table": markdown_table(_plain_numbers(data.grid)) if data.grid else None,
        "plots": [{"stem": Path(plot).stem, "path": Path(plot).as_posix()} for plot in data.plots],
        "lambda_table": card_table(data.lambda_curve) if data.lambda_curve else None,
        "comparison_table": card_table(data.comparison) if data.comparison else None,
        "usage": usage_snippet(data),
        "vector_usage": _vector_usage(data),
        "evaluated_sets": ", ".join(
            f"{role} ({_describe_set(data.dataset_for(role))})" for role in ROLES if data.dataset_for(role)
        ),
        "mia_measured": _is_number(data.unlearned.get("mia_efficacy")),
        "citation": CITATION,
    }


def build_model_card(data: UnlearningCardData) -> ModelCard:
    """A `ModelCard` from templates/model_card.md whose YAML parses back with huggingface_hub."""
    return ModelCard.from_template(
        card_metadata(data), template_path=str(TEMPLATE_PATH), **template_values(data)
    )


def write_model_card(card: ModelCard | UnlearningCardData, directory: str | Path) -> Path:
    """Write the card as `README.md` in `directory`, atomically."""
    if isinstance(card, UnlearningCardData):
        card = build_model_card(card)
    path = Path(directory) / CARD_NAME
    atomic_write_text(path, str(card))
    return path
