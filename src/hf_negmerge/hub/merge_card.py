"""Model cards for `hf-negmerge merge` outputs: the merged vector folder and the unlearned model.

Rendered by `ModelCard.from_template` from `templates/merge_card.md`. The metadata lists the
models that went into the merge as `base_model` (Hub ids only: a local path would be a dead
link) with `base_model_relation: merge`, one of the values the Hub accepts (`adapter`, `merge`,
`quantized`, `finetune`), and the body embeds the merge as a re-runnable `merge_config.yaml`.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import yaml
from huggingface_hub import ModelCard, ModelCardData

from .card import AUTO_CLASSES_FOR_TASK, MERGE_DESCRIPTIONS, task_for_architectures

TEMPLATE_PATH = Path(__file__).parent / "templates" / "merge_card.md"
MERGE_TAGS = ("hf-negmerge", "negmerge", "merge", "task-arithmetic")


def _license_of(folder: Path) -> str | None:
    """The license in a model folder's own card, when it has one that says."""
    if not (folder / "README.md").is_file():
        return None
    try:
        return ModelCard.load(folder / "README.md").data.license
    except (OSError, ValueError, yaml.YAMLError):  # a card that does not parse names no license
        return None


def build_merge_card(
    *,
    config_yaml: str,
    method: str,
    base_label: str,
    run_labels: Sequence[str],
    hub_models: Sequence[str],
    kept_fraction: float,
    scale: float | None,
    base_folder: Path,
    architectures: Sequence[str] = (),
    model_card: bool = False,
) -> ModelCard:
    """The card of a merge output (`model_card=False`) or of its unlearned model (`True`).

    `hub_models` are the Hub ids among the inputs, base first: they become `base_model`.
    """
    task = task_for_architectures(architectures) if model_card else None
    data = ModelCardData(
        base_model=list(hub_models) or None,
        base_model_relation="merge" if hub_models else None,
        library_name="transformers" if model_card else "hf-negmerge",
        license=_license_of(base_folder),
        pipeline_tag=task,
        tags=[*MERGE_TAGS, *(["machine-unlearning"] if scale is not None else [])],
    )
    runs = ", ".join(f"`{label}`" for label in run_labels)
    if model_card:
        title = "Unlearned model (hf-negmerge merge)"
        intro = (
            f"`{base_label}` with a merged task vector τ subtracted: θ = θ₀ − λ·τ with λ = {scale:g}. τ merges the "
            f"task vectors of {len(run_labels)} fine-tuned runs ({method})."
        )
        processor, model_class = AUTO_CLASSES_FOR_TASK.get(task or "", ("AutoProcessor", "AutoModel"))
        usage = "\n".join(
            [
                f"from transformers import {processor}, {model_class}",
                "",
                f'processor = {processor}.from_pretrained("<this-folder-or-repo>")',
                f'model = {model_class}.from_pretrained("<this-folder-or-repo>")',
            ]
        )
    else:
        title = "Merged task vector (hf-negmerge merge)"
        intro = (
            f"The task vectors τₖ = θₖ − θ₀ of {len(run_labels)} fine-tuned runs of `{base_label}`, merged with "
            f"`{method}` into `merged_task_vector.safetensors`."
            + (" The unlearned model θ₀ − λ·τ is in `unlearned_model/`." if scale is not None else "")
        )
        usage = "\n".join(
            [
                "from hf_negmerge import TaskVector",
                "",
                'tau = TaskVector.from_pretrained("<this-folder>")  # reads merged_task_vector.safetensors',
                "tau.negate_into(model, scale=0.5)  # θ₀ − 0.5·τ, in place (apply_to would add it)",
            ]
        )
    return ModelCard.from_template(
        data,
        template_path=str(TEMPLATE_PATH),
        title=title,
        intro=intro,
        base=f"`{base_label}`",
        runs=runs,
        method=method,
        kept=f"{100 * kept_fraction:.2f}% of the merged tensors' elements are non-zero",
        scale=f"{scale:g}" if scale is not None else None,
        config_yaml=config_yaml.rstrip(),
        usage=usage,
        method_note=(
            f"The runs were {MERGE_DESCRIPTIONS.get(method, f'combined with `{method}`')}; the merge measures no "
            "accuracy."
        ),
    )
