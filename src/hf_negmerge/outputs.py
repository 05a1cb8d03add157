"""Build what an unlearning run produced: model, config, vector, metrics, report, plots, card.

The files are written into a staging folder that `output_folder.publish_outputs` moves into place.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from .checkpoints import atomic_write_text
from .evaluation import markdown_table, write_comparison
from .evaluation.plots import plot_kept_fraction, plot_lambda_curves
from .output_folder import (
    KEPT_PLOT,
    LAMBDA_LOG,
    LAMBDA_PLOT,
    LOSS_PLOT,
    REPORT_FILE,
    TRAINING_LOG,
    WORK_DIR,
)
from .published_paths import portable_paths
from .results import RunResults, UnlearningOutcome
from .task_vector import MERGED_VECTOR_NAME

if TYPE_CHECKING:
    from .config import NegMergeConfig
    from .recipe import UnlearnRecipe

logger = logging.getLogger(__name__)


def inherited_license(base: str | Path | None) -> str | None:
    """The license of θ₀ when it is known offline: from a local folder's README.md metadata."""
    if base is None or not (Path(base) / "README.md").is_file():
        return None
    from huggingface_hub import ModelCard

    try:
        return ModelCard.load(Path(base) / "README.md").data.license
    except (ValueError, OSError) as error:
        logger.warning("Could not read the license of %s: %s", base, error)
        return None


def _merged_tensors_line(config: NegMergeConfig, covered: list[str], finetuned: list[str]) -> str:
    """Which tensors every method's task vector covers, as matched, not as the patterns read."""
    if config.include is None and not config.exclude:
        return f"Task vectors cover all {len(finetuned)} fine-tuned tensors, for every method."
    left_out = [key for key in finetuned if key not in set(covered)]
    patterns = " and ".join(
        f"merge.{name} {getattr(config, name)}" for name in ("include", "exclude") if getattr(config, name)
    )
    shown = ", ".join(f"`{key}`" for key in left_out[:6]) + (", …" if len(left_out) > 6 else "")
    return (
        f"Task vectors cover {len(covered)} of the {len(finetuned)} fine-tuned tensors, for every method: "
        f"{patterns} left out {len(left_out)}" + (f" ({shown})." if left_out else ".")
    )


def finetuned_tensor_names(classifier: Any) -> list[str]:
    """Checkpoint names of the float tensors fine-tuning changes (the runs' task-vector keys)."""
    from .key_space import KeyNames, checkpoint_state_dict
    from .task_vector import select_keys

    floats = [
        key for key, tensor in checkpoint_state_dict(classifier.model).items() if tensor.is_floating_point()
    ]
    return select_keys(floats, classifier.trainable_parameter_patterns(), None, KeyNames.of(classifier.model))


def _original_line(original: dict[str, Any]) -> str:
    """Which θ₀ the numbers belong to: its source and the sha256 of its weights."""
    if not original:
        return ""
    line = f"Original model (θ₀): `{original['base_model']}` ({original['source']}), weights sha256 `{original['sha256']}`"
    if original.get("trained_from"):
        line += f", trained here from `{original['trained_from']}`"
    return line + "."


#: What the status column means (report.md; the criterion is `hf_negmerge.results`' docstring).
STATUS_LEGEND = (
    "Status: *unlearned* when the λ kept retain (or control) validation accuracy ≥ retain_ratio × the "
    "original's and the test forget accuracy closed at least half of the gap between the original's and "
    "the reference (retrain when measured; otherwise 0 for class forgetting, the original's test accuracy "
    "for random forgetting, chance for a whole dataset); *retain constraint not met* when no λ qualified; "
    "*not unlearned* otherwise."
)


def render_report(recipe: UnlearnRecipe, outcome: UnlearningOutcome, finetuned: list[str]) -> str:
    """report.md; `finetuned`: the fine-tuned tensor names (`finetuned_tensor_names`)."""
    main = outcome.main
    stats = outcome.merge.stats
    dataset = portable_paths(recipe.data.published_source("dataset"), outcome.output_dir)
    model = portable_paths(recipe.model.name_or_path, outcome.output_dir)
    lines = [
        "# hf-negmerge unlearning report",
        "",
        f"Forget set: `{dataset}` (scenario `{recipe.data.scenario}`"
        + (f", classes {recipe.data.forget_classes}" if recipe.data.forget_classes else "")
        + f"); model: `{model or 'tiny ' + recipe.model.architecture}`; "
        f"{len(outcome.run_ids)} fine-tuned runs.",
        "",
        _original_line(outcome.original_model),
        "",
        _merged_tensors_line(recipe.merge, outcome.merge.task_vector.keys(), finetuned),
        "",
        f"**{outcome.status_line()}**",
        "",
        *[f"> Warning: {message}" for message in outcome.warnings],
        *([""] if outcome.warnings else []),
        "## Results (test splits, percent)",
        "",
        markdown_table(outcome.rows()),
        "",
        f"Every method's λ was chosen on validation splits by the same rule: {main.selection.reason}",
        "",
        STATUS_LEGEND,
        "",
        f"![λ curves]({LAMBDA_PLOT})",
        "",
        "## Sign consensus",
        "",
        stats.summary(),
        "",
        f"![kept fraction per layer]({KEPT_PLOT})",
        "",
    ]
    if outcome.per_run:
        lines += ["## Task arithmetic, every run", "", markdown_table([o.row() for o in outcome.per_run]), ""]
    lines += [
        "## Data",
        "",
        "```json",
        json.dumps(outcome.data_summary, indent=2),
        "```",
        "",
        "Timings (s): " + ", ".join(f"{k} {v:.1f}" for k, v in outcome.seconds.items()),
        "",
    ]
    return "\n".join(lines)


def build_output_files(
    recipe: UnlearnRecipe, outcome: UnlearningOutcome, unlearned: Any, base_dir: Path, staging: Path
) -> None:
    """Fill `staging` with every artifact of the run (the caller moves them into place)."""
    model_dir = staging / ".model"
    unlearned.save_pretrained(model_dir)
    for item in model_dir.iterdir():
        os.replace(item, staging / item.name)
    model_dir.rmdir()
    main = outcome.main
    dataclasses.replace(recipe.merge, scale=main.selection.scale).save_pretrained(staging)
    vector = outcome.merge.task_vector
    base_model = outcome.original_model.get("base_model") or recipe.model.name_or_path or base_dir
    vector.metadata.update(
        scale=main.selection.scale, base_model=portable_paths(str(base_model), outcome.output_dir)
    )
    vector.save(staging / MERGED_VECTOR_NAME)
    results = RunResults.from_outcome(
        recipe, outcome, license=inherited_license(recipe.model.name_or_path or base_dir)
    )
    results.save(staging)
    atomic_write_text(
        staging / REPORT_FILE, render_report(recipe, outcome, finetuned_tensor_names(unlearned))
    )
    write_comparison(outcome.rows(), staging / "comparison.md", staging / "comparison.json")
    portable_recipe = portable_paths(recipe.to_dict(), outcome.output_dir)
    atomic_write_text(staging / "recipe.yaml", yaml.safe_dump(portable_recipe, sort_keys=False))
    plot_lambda_curves({o.label: o.selection for o in [main, *outcome.comparison]}, staging / LAMBDA_PLOT)
    stats = outcome.merge.stats
    plot_kept_fraction(
        stats.kept_fraction_by_tensor(),
        staging / KEPT_PLOT,
        numel={k: s.numel for k, s in stats.tensors.items()},
    )
    write_logs(outcome, staging)
    from .hub.card import UnlearningCardData, write_model_card

    write_model_card(UnlearningCardData.from_results(results, plots=[LAMBDA_PLOT, KEPT_PLOT]), staging)


def run_logs(outcome: UnlearningOutcome) -> dict[str, list[dict[str, Any]]]:
    """Each grid run's per-step log (work/grid/runs/<id>/train_log.jsonl), by run id; runs
    trained before logs existed are left out."""
    from .training.runner import RUNS_DIR, TRAIN_LOG_FILE

    logs = {}
    for run_id in outcome.run_ids:
        path = outcome.output_dir / WORK_DIR / "grid" / RUNS_DIR / run_id / TRAIN_LOG_FILE
        if path.is_file():
            lines = path.read_text(encoding="utf-8").splitlines()
            logs[run_id] = [json.loads(line) for line in lines if line.strip()]
    return logs


def lambda_log_rows(outcome: UnlearningOutcome) -> list[dict[str, Any]]:
    """One row per (method, λ) point scored on validation, single runs included."""
    rows = []
    for method in [outcome.main, *outcome.comparison, *outcome.per_run]:
        for point in sorted(method.selection.curve, key=lambda item: item.scale):
            rows.append(
                {
                    "method": method.label,
                    "scale": point.scale,
                    "forget_accuracy": point.forget_accuracy,
                    "retain_accuracy": point.retain_accuracy,
                    "chosen": point.scale == method.selection.scale,
                }
            )
    return rows


def write_logs(outcome: UnlearningOutcome, staging: Path) -> None:
    """training_log.jsonl (every run's steps, with its id), lambda_curves.jsonl and the loss plot."""
    from .evaluation.plots import plot_loss_curves

    logs = run_logs(outcome)
    lines = [json.dumps({"run": run_id, **row}) + "\n" for run_id, rows in logs.items() for row in rows]
    atomic_write_text(staging / TRAINING_LOG, "".join(lines))
    atomic_write_text(
        staging / LAMBDA_LOG, "".join(json.dumps(row) + "\n" for row in lambda_log_rows(outcome))
    )
    if any(logs.values()):
        plot_loss_curves(logs, staging / LOSS_PLOT)
