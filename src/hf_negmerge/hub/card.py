"""Model cards for unlearned models, built with huggingface_hub's `ModelCard` / `ModelCardData`.

The card's YAML carries what the Hub indexes: `base_model` with `base_model_relation: finetune`,
tags, datasets, `library_name` and a `model-index` with the measured numbers (forget / retain /
test / control accuracy, MIA-Efficacy where measured). The body says how the model was made
(config, recipe, grid of runs, λ curve, consensus sparsity) and what it does not guarantee.

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
import json
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
from ..evaluation.report import Column, format_value, markdown_table
from ._connection import looks_like_repo_id

CARD_NAME = "README.md"
BASE_MODEL_RELATION = "finetune"
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
    original_model_label: str | None = field(
        default=None, metadata={"help": "How to name θ₀ in the text when it is not on the Hub."}
    )
    scale: float | None = field(
        default=None, metadata={"help": "The negation coefficient λ that was applied."}
    )
    original: dict[str, float] | None = field(
        default=None, metadata={"help": "Same numbers for the original model."}
    )
    retrain: dict[str, float] | None = field(
        default=None, metadata={"help": "Same numbers for a model retrained without the forget set."}
    )
    retain_set: DatasetRef | None = None
    test_set: DatasetRef | None = None
    control_set: DatasetRef | None = None
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
    license: str | None = None
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
        cls, metrics: str | Path | Mapping[str, Any], model_name: str | None = None, **overrides: Any
    ) -> UnlearningCardData:
        """Adapter for the unlearning run's `metrics.json` (a path or the parsed dict).

        Reads method, scale, base_model, forget/retain/test/control datasets (an id or a mapping
        with dataset/split/config/name/subset), scenario, forget_classes, task_type, original,
        unlearned, retrain, lambda_curve, selection, grid, kept_fraction, comparison, config,
        recipe, license; missing optional parts are left out of the card. Retain and test sets
        default to the forget set's dataset when their numbers are present (in the 'class' and
        'random' scenarios they are parts of one dataset). A base_model that is not a Hub id (a
        local folder, or None for a model built from a config) is named in the text only.
        `overrides` win over everything read.
        """
        metrics, source = _load_metrics(metrics)
        values: dict[str, Any] = {}
        forget = overrides.get("forget_set", metrics.get("forget_set", metrics.get("forget_dataset")))
        if forget is None:
            raise ConfigError(f"{source} names no forget dataset ('forget_dataset'); pass forget_set=...")
        forget_ref = DatasetRef.coerce(forget, f"{source}: forget_dataset")
        unlearned = metrics.get("unlearned")
        if not isinstance(unlearned, Mapping):
            raise ConfigError(f"{source} has no 'unlearned' metrics mapping.")
        values["unlearned"] = dict(unlearned)
        subsets = _scenario_subsets(metrics)
        if forget_ref.subset is None and "forget" in subsets:
            forget_ref = dataclasses.replace(forget_ref, subset=subsets["forget"])
        values["forget_set"] = forget_ref
        for role in ("retain", "test", "control"):
            ref = metrics.get(f"{role}_set", metrics.get(f"{role}_dataset"))
            if ref is None and role != "control" and f"{role}_accuracy" in unlearned:
                ref = DatasetRef(forget_ref.dataset, config=forget_ref.config, name=forget_ref.name)
            if ref is not None:
                ref = DatasetRef.coerce(ref, f"{source}: {role}_dataset")
                if ref.subset is None and role in subsets:
                    ref = dataclasses.replace(ref, subset=subsets[role])
                values[f"{role}_set"] = ref
        base_model = metrics.get("base_model")
        if isinstance(base_model, str) and looks_like_repo_id(base_model) and not Path(base_model).exists():
            values["base_model"] = base_model
        else:  # a local folder or a model built from a config: nothing on the Hub to link
            values["original_model_label"] = (
                f"a local model, `{Path(base_model).name}`" if base_model else "a model built from a config"
            )
        task = ARCHITECTURE_TASKS.get(str(metrics.get("architecture", "")).lower())
        if task is not None:
            values["task_type"] = task
        optional = ("scale", "method", "scenario", "grid", "kept_fraction", "comparison", "recipe", "license")
        for key in (*optional, "task_type"):
            if metrics.get(key) is not None:
                values[key] = metrics[key]
        for key in ("original", "retrain"):
            if isinstance(metrics.get(key), Mapping):
                values[key] = dict(metrics[key])
        if metrics.get("lambda_curve"):
            values["lambda_curve"] = [dict(point) for point in metrics["lambda_curve"]]
        selection = metrics.get("selection", metrics.get("lambda_selection"))
        if isinstance(selection, Mapping):
            values["lambda_selection"] = {
                key: item for key, item in selection.items() if key in ("qualified", "reason", "threshold")
            }
        if isinstance(metrics.get("config"), Mapping):
            values["config"] = dict(metrics["config"])
        values.update(overrides)
        if values.get("base_model") is not None:
            values.pop("original_model_label", None)
        if model_name is None:
            stem = _short(values["base_model"]) if values.get("base_model") else "model"
            model_name = str(values.get("repo_id") or f"{stem}-negmerge-unlearned").split("/")[-1]
        return cls(model_name=model_name, **values)


def _load_metrics(metrics: str | Path | Mapping[str, Any]) -> tuple[Mapping[str, Any], str]:
    if isinstance(metrics, Mapping):
        return metrics, "metrics.json"
    try:
        loaded = json.loads(Path(metrics).read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as error:
        raise ConfigError(f"Cannot read {metrics}: {error}") from error
    if not isinstance(loaded, Mapping):
        raise ConfigError(f"{metrics} must hold a JSON object.")
    return loaded, str(metrics)


def _scenario_subsets(metrics: Mapping[str, Any]) -> dict[str, str]:
    """Which part of the dataset each role is, from the run's scenario (see docs/data.md)."""
    scenario = metrics.get("scenario")
    if scenario == "class":
        data = metrics.get("data")
        classes = (data.get("forget_classes") if isinstance(data, Mapping) else None) or metrics.get(
            "forget_classes"
        )
        named = ", ".join(str(c) for c in classes) if classes else None
        forget = (
            f"class{'es' if classes and len(classes) > 1 else ''} {named}"
            if named
            else "the forgotten classes"
        )
        return {"forget": forget, "retain": "the other classes"}
    if scenario == "random":
        return {"forget": "a random subset of the training split", "retain": "the rest of the training split"}
    return {}


def _is_number(value: Any) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(float(value))


def _short(base_model: str | list[str]) -> str:
    first = base_model[0] if isinstance(base_model, list) else base_model
    return str(first).split("/")[-1]


# -- metadata ------------------------------------------------------------------------------------------------
def _split_label(ref: DatasetRef, role: str) -> str:
    if role == "test":
        return ref.split or "test"
    return f"{ref.split} ({role} set)" if ref.split else f"{role} set"


def eval_results(data: UnlearningCardData) -> list[EvalResult]:
    """One `EvalResult` per measured metric whose evaluation set is known."""
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
                metric_value=float(value),
            )
        )
    return results


def card_metadata(data: UnlearningCardData) -> ModelCardData:
    datasets = []  # only namespaced Hub ids: the Hub links these, and local names would be dead links
    for role in ROLES:
        ref = data.dataset_for(role)
        if (
            ref is not None
            and "/" in ref.dataset
            and looks_like_repo_id(ref.dataset)
            and ref.dataset not in datasets
        ):
            datasets.append(ref.dataset)
    tags = [*DEFAULT_TAGS, *([f"unlearning-{data.scenario}"] if data.scenario else []), *data.tags]
    results = eval_results(data)
    lineage = (
        {"base_model": data.base_model, "base_model_relation": BASE_MODEL_RELATION} if data.base_model else {}
    )
    return ModelCardData(
        **lineage,
        library_name="transformers",
        license=data.license,
        pipeline_tag=data.task_type,
        tags=list(dict.fromkeys(tags)),
        datasets=datasets or None,
        metrics=sorted({result.metric_type for result in results}) or None,
        model_name=data.model_name,
        eval_results=results or None,
    )


# -- body ----------------------------------------------------------------------------------------------------
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


_RESULT_COLUMNS = (
    Column("metric", "metric"),
    Column("measured on", "measured on"),
    Column("original", "original", 2),
    Column("unlearned", "unlearned", 2),
    Column("change", "change", 2),
    Column("retrain", "retrained without forget set", 2),
    Column("wanted", "wanted"),
)


def _results_section(data: UnlearningCardData) -> list[str]:
    rows = []
    for key, metric in REPORTED_METRICS.items():
        value = data.unlearned.get(key)
        if not _is_number(value):
            continue
        before = (data.original or {}).get(key)
        row: dict[str, Any] = {
            "metric": metric.metric_name,
            "measured on": f"{metric.role} set",
            "original": float(before) if _is_number(before) else None,
            "unlearned": float(value),
            "change": float(value) - float(before) if _is_number(before) else None,
            "retrain": float(retrained) if _is_number(retrained := (data.retrain or {}).get(key)) else None,
            "wanted": metric.direction,
        }
        rows.append(row)
    lines = ["## Results", ""]
    lines.append("Percentages as measured by hf-negmerge's evaluation (test-split numbers at the chosen λ).")
    columns = [
        c for c in _RESULT_COLUMNS if c.key != "retrain" or any(r["retrain"] is not None for r in rows)
    ]
    lines += ["", markdown_table(rows, columns), ""]
    lines += ["| set | data |", "|---|---|"]
    lines += [
        f"| {role} | {_describe_set(data.dataset_for(role))} |" for role in ROLES if data.dataset_for(role)
    ]
    lines.append("")
    return lines


#: How each merge method combined the task vectors, in words (methods of hf_negmerge.merging).
MERGE_DESCRIPTIONS = {
    "negmerge": "merged by sign consensus (an element is kept only where the runs agree in sign; its "
    "value is their mean; elsewhere it is zero)",
    "task_arithmetic": "used one at a time (plain task arithmetic, no merge)",
    "uniform": "averaged element by element (uniform merge)",
    "ties": "merged with TIES (trim by magnitude, elect a sign, average the agreeing entries)",
    "magmax": "merged with MagMax (per element, the value of largest magnitude)",
}


def _method_section(data: UnlearningCardData) -> list[str]:
    lambda_text = f"λ = {format_value(data.scale, 2)}" if data.scale is not None else "λ (not recorded)"
    runs = len(data.grid) if data.grid else None
    lines = ["## How it was made", ""]
    combination = MERGE_DESCRIPTIONS.get(data.method, f"combined with the `{data.method}` merge method")
    lines.append(
        f"Method: **{data.method}** (hf-negmerge; NegMerge is [ICML 2025]({PAPER_URL})). "
        + (f"{runs} copies" if runs else "Several copies")
        + " of the original model were fine-tuned **on the forget set only**, each with different "
        f"hyperparameters. Their task vectors τₖ = θₖ − θ₀ were {combination}, and the result was "
        f"negated: θ = θ₀ − λ·τ with {lambda_text}."
    )
    lines.append("")
    if data.kept_fraction is not None and data.method == "negmerge":
        lines.append(
            f"Consensus sparsity: {100 * data.kept_fraction:.2f}% of the task-vector elements survived the "
            f"consensus ({100 * (1 - data.kept_fraction):.2f}% are exactly zero), so only those weights differ "
            "from the original model."
        )
        lines.append("")
    selection = data.lambda_selection or {}
    if selection:
        qualified = selection.get("qualified")
        reason = selection.get("reason")
        text = "λ was chosen on validation data"
        if qualified is False:
            text += " by the **fallback rule**: no λ kept retain accuracy above the threshold"
        if reason:
            text += f" ({str(reason).rstrip('.')})"
        lines += [text + ".", ""]
    config = data.config_dict
    if config is not None:
        # Flow style keeps the 21-point λ grid on one line; the same values are in negmerge_config.json.
        text = yaml.safe_dump(config, sort_keys=True, default_flow_style=None, allow_unicode=True, width=100)
        lines += ["### Configuration (`negmerge_config.json`)", "", "```yaml", text.rstrip(), "```", ""]
    if data.recipe is not None:
        if isinstance(data.recipe, str):
            recipe = data.recipe
        else:  # where the run wrote its files is a local detail, not part of the recipe to share
            shared = {key: value for key, value in data.recipe.items() if key != "output_dir"}
            recipe = yaml.safe_dump(shared, sort_keys=False, allow_unicode=True)
        lines += ["### Recipe", "", "```yaml", recipe.rstrip(), "```", ""]
    if data.grid:
        lines += ["### Fine-tuning runs", "", markdown_table(data.grid), ""]
    if data.lambda_curve or data.plots:
        lines += ["### λ curve", ""]
        lines += [f"![{Path(plot).stem}]({Path(plot).as_posix()})" for plot in data.plots]
        if data.plots:
            lines.append("")
        if data.lambda_curve:
            lines += [markdown_table(data.lambda_curve), ""]
    if data.comparison:
        lines += ["### Comparison with other methods", "", markdown_table(data.comparison), ""]
    return lines


#: hf-negmerge model architectures (`metrics.json` "architecture") and the task their card declares.
ARCHITECTURE_TASKS = {"clip": "zero-shot-image-classification", "vit": "image-classification"}

#: transformers auto class that loads a model for each task (CLIP zero-shot models load with AutoModel).
AUTO_CLASS_FOR_TASK = {
    "image-classification": "AutoModelForImageClassification",
    "zero-shot-image-classification": "AutoModel",
}


def task_for_architectures(architectures: Sequence[str]) -> str | None:
    """The pipeline task of a saved model's `config.json` architectures, when hf-negmerge knows it."""
    for architecture in architectures:
        if architecture.endswith("ForImageClassification"):
            return "image-classification"
        if architecture == "CLIPModel":
            return "zero-shot-image-classification"
    return None


def _usage_section(data: UnlearningCardData) -> list[str]:
    repo = data.repo_id or "<this-repo>"
    if data.base_model:
        base = data.base_model[0] if isinstance(data.base_model, list) else data.base_model
    else:
        base = "<folder of the original model>"
    auto_class = AUTO_CLASS_FOR_TASK.get(data.task_type, "AutoModel")
    lines = [
        "## How to use",
        "",
        "```python",
        f"from transformers import {auto_class}",
        "",
        f'model = {auto_class}.from_pretrained("{repo}")',
        "```",
        "",
    ]
    if data.negation_vector:
        lines += [
            "The repo also holds the merged vector as a sparse artifact (`negation_vector.safetensors` + "
            "`negation_vector_config.json`), so the same unlearning can be applied to the base model:",
            "",
            "```python",
            f"from transformers import {auto_class}",
            "from hf_negmerge.hub import NegationVector",
            "",
            f'vector = NegationVector.from_pretrained("{repo}")',
            f'model = {auto_class}.from_pretrained("{base}")',
            "vector.apply_to(model)  # θ₀ − λ·τ with the stored λ, in place",
            "```",
            "",
        ]
    return lines


def _limitations_section(data: UnlearningCardData) -> list[str]:
    measured_mia = _is_number(data.unlearned.get("mia_efficacy"))
    sets = ", ".join(
        f"{role} ({_describe_set(data.dataset_for(role))})" for role in ROLES if data.dataset_for(role)
    )
    lines = [
        "## Limitations",
        "",
        "- **No certified removal.** This is approximate, weight-space unlearning: a vector learned on the "
        "forget set is subtracted from the weights. Nothing proves that the forget data's influence is gone, "
        "and the model is not equivalent to one retrained without that data.",
        f"- **Evaluated only on the listed sets**: {sets}. Behaviour on other data, other prompts or "
        "other tasks was not measured and may have changed.",
    ]
    if measured_mia:
        lines.append(
            "- **Membership inference only as measured**: MIA-Efficacy comes from one attack (an RBF SVC on "
            "the model's true-class probability, SalUn's protocol). Stronger attacks (e.g. likelihood-ratio "
            "attacks with shadow models) were not run."
        )
    else:
        lines.append("- **Membership inference was not measured** for this model.")
    lines += [
        "- **Recoverability was not tested.** Knowledge removed in weight space may come back after brief "
        "fine-tuning on related data (relearning attacks); no such test was run.",
        "- **Side effects.** Subtracting the vector can lower accuracy on retained data; compare the "
        "original and unlearned columns above before relying on the model.",
        "- λ was selected on validation splits and the test numbers above are reported at that λ; with small "
        "evaluation sets (e.g. one class of a test split) they carry noticeable sampling error.",
        "- Not legal advice: whether this satisfies a deletion request depends on your obligations. The base "
        "model's license, limitations and biases still apply.",
        "",
    ]
    return lines


def build_model_card(data: UnlearningCardData) -> ModelCard:
    """A `ModelCard` whose YAML parses back with huggingface_hub and whose body documents the run."""
    metadata = card_metadata(data)
    forget = data.forget_set
    if data.base_model:
        first = data.base_model[0] if isinstance(data.base_model, list) else data.base_model
        original = f"This model is [`{first}`](https://huggingface.co/{first})"
    else:
        label = data.original_model_label or "not published"
        original = f"This model is its original model ({label}; not on the Hub)"
    body = [
        f"# {data.model_name}",
        "",
        f"{original} with {forget.subset or 'the data'} of `{forget.name or forget.dataset}` "
        f"**unlearned** with {data.method}: a vector learned by fine-tuning on that data was subtracted from "
        "its weights. Made with hf-negmerge; read *Limitations* before use.",
        "",
        *_results_section(data),
        *_method_section(data),
        *_usage_section(data),
        *_limitations_section(data),
        "## Citation",
        "",
        "```bibtex",
        CITATION,
        "```",
        "",
    ]
    return ModelCard(f"---\n{metadata.to_yaml()}\n---\n\n" + "\n".join(body))


def write_model_card(card: ModelCard | UnlearningCardData, directory: str | Path) -> Path:
    """Write the card as `README.md` in `directory`, atomically."""
    if isinstance(card, UnlearningCardData):
        card = build_model_card(card)
    path = Path(directory) / CARD_NAME
    atomic_write_text(path, str(card))
    return path
