"""Model cards for unlearned models, built with huggingface_hub's `ModelCard` / `ModelCardData`.

The card's YAML carries what the Hub indexes: `base_model` with `base_model_relation`, tags,
datasets, license, `library_name` and a `model-index` with the measured numbers (forget / retain /
test / control accuracy, MIA-Efficacy where measured). The body is the Jinja template
`templates/model_card.md` (package data) rendered by `ModelCard.from_template`; this module only
prepares its values: the status line, rounded tables (λ curve labelled as validation data, results
and comparison as test data), the usage snippet, how the model was made and what it does not
guarantee. What the card reports is `card_data.UnlearningCardData`.

Forget and retain results often come from the same dataset. The Hub merges model-index entries
that share (task, dataset type, config, split, revision), so each role gets its own split label
("test (forget set)") and dataset name.

Longer than most modules (~400 lines): every value the card template shows is prepared here, from
one `UnlearningCardData`; the Hub metadata (model-index) and the body's tables must report the same
numbers, which is easiest to check when they are built side by side.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml
from huggingface_hub import EvalResult, ModelCard, ModelCardData

from ..checkpoints import atomic_write_text
from ..evaluation.report import COLUMNS, Column, format_value, markdown_table, table_columns
from ._connection import looks_like_repo_id
from .card_data import (
    REPORTED_METRICS,
    ROLES,
    DatasetRef,
    UnlearningCardData,
    first_base_model,
    is_number,
)

CARD_NAME = "README.md"
TEMPLATE_PATH = Path(__file__).parent / "templates" / "model_card.md"
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
        if not is_number(value) or ref is None:
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
        if is_number(shown.get("kept_fraction")):
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
        if not is_number(value):
            continue
        before = (data.original or {}).get(key)
        retrained = (data.retrain or {}).get(key)
        rows.append(
            {
                "metric": metric.metric_name,
                "measured on": f"{metric.role} set (test)",
                "original": float(before) if is_number(before) else None,
                "unlearned": float(value),
                "change": float(value) - float(before) if is_number(before) else None,
                "retrain": float(retrained) if is_number(retrained) else None,
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
        if is_number(threshold)
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
    """Python that loads the model and classifies an image the way hf-negmerge's evaluation does."""
    repo = data.repo_id or "<this-repo>"
    if data.task_type == "zero-shot-image-classification":
        return _zero_shot_usage(repo)
    processor_class, model_class = AUTO_CLASSES_FOR_TASK.get(data.task_type, ("AutoProcessor", "AutoModel"))
    return "\n".join(
        [
            "import torch",
            "from PIL import Image",
            f"from transformers import {processor_class}, {model_class}, pipeline",
            "",
            "# Images must be RGB: the image processor raises on grayscale (and RGBA) images.",
            'image = Image.open("image.png").convert("RGB")',
            f'classifier = pipeline("{data.task_type}", model="{repo}")',
            "print(classifier(image))",
            "",
            "# or step by step",
            f'processor = {processor_class}.from_pretrained("{repo}")',
            f'model = {model_class}.from_pretrained("{repo}")',
            "with torch.no_grad():",
            '    logits = model(**processor(images=image, return_tensors="pt")).logits',
            "print(model.config.id2label[logits.argmax(-1).item()])",
        ]
    )


def _zero_shot_usage(repo: str) -> str:
    """CLIP: the classifier's head is its class names under every prompt template, averaged.

    The zero-shot pipeline scores one prompt per label (`hypothesis_template`, default "This is
    a photo of {}."), so neither full sentences as `candidate_labels` nor one template gives this
    model's head; the snippet builds the head as `models.clip.zero_shot_head` does.
    """
    return "\n".join(
        [
            "import json",
            "",
            "import torch",
            "import torch.nn.functional as F",
            "from PIL import Image",
            "from transformers import AutoModel, AutoProcessor",
            "from transformers.utils import cached_file",
            "",
            f'repo = "{repo}"',
            "model = AutoModel.from_pretrained(repo)",
            "processor = AutoProcessor.from_pretrained(repo)",
            "# The class names and prompt templates the model was unlearned and evaluated with.",
            'with open(cached_file(repo, "hf_negmerge_classifier.json"), encoding="utf-8") as file:',
            "    labels = json.load(file)",
            'class_names, templates = labels["class_names"], labels["prompt_templates"]',
            "",
            "# One text-head row per class: each prompt's embedding normalised, averaged, normalised",
            '# again. (pipeline("zero-shot-image-classification") scores one prompt per class instead.)',
            'prompts = [template.replace("{}", name) for name in class_names for template in templates]',
            'image = Image.open("image.png").convert("RGB")',
            "with torch.no_grad():",
            '    tokens = processor(text=prompts, padding=True, truncation=True, return_tensors="pt")',
            "    text = model.get_text_features(**tokens)",
            '    pixels = processor(images=image, return_tensors="pt")["pixel_values"]',
            "    vision = model.get_image_features(pixel_values=pixels)",
            "# transformers 5 returns an output object, 4.x the tensor itself",
            'text, vision = (getattr(out, "pooler_output", out) for out in (text, vision))',
            "rows = F.normalize(text, dim=-1).view(len(class_names), len(templates), -1).mean(dim=1)",
            "scores = F.normalize(vision, dim=-1) @ F.normalize(rows, dim=-1).T",
            "print(class_names[scores.argmax().item()])",
        ]
    )


def _vector_usage(data: UnlearningCardData) -> str | None:
    if not data.negation_vector:
        return None
    repo = data.repo_id or "<this-repo>"
    base = first_base_model(data.base_model) if data.base_model else "<folder of the original model>"
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
        first = first_base_model(data.base_model)
        original = f"This model is [`{first}`](https://huggingface.co/{first})"
    else:
        original = f"This model is its original model ({data.original_model_label or 'not published'}; not on the Hub)"
    return (
        f"{original} with {data.method} applied to forget {forget.subset or 'the data'} of "
        f"`{forget.name or forget.dataset}`: a vector learned by fine-tuning on that data was subtracted from its "
        f"weights. Made with hf-negmerge; read {'the status below and ' if data.status else ''}*Limitations* "
        "before use."
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
        "mia_measured": is_number(data.unlearned.get("mia_efficacy")),
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
