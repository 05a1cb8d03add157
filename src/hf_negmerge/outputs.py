"""Write what an unlearning run produced: model, config, vector, metrics, report, plots, card."""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from .checkpoints import atomic_write_text
from .evaluation import markdown_table, to_jsonable, write_comparison
from .evaluation.plots import plot_kept_fraction, plot_lambda_curves
from .task_vector import MERGED_VECTOR_NAME

if TYPE_CHECKING:
    from .config import NegMergeConfig
    from .pipeline import MethodOutcome, UnlearningOutcome
    from .recipe import UnlearnRecipe

METRICS_FILE = "metrics.json"
REPORT_FILE = "report.md"
LAMBDA_PLOT = "lambda_curves.png"
KEPT_PLOT = "kept_fraction.png"


def _curve(outcome: MethodOutcome) -> list[dict[str, float]]:
    return [dataclasses.asdict(point) for point in outcome.selection.curve]


def _selection(outcome: MethodOutcome) -> dict[str, Any]:
    selection = outcome.selection
    return {
        "scale": selection.scale,
        "qualified": selection.qualified,
        "reason": selection.reason,
        "threshold": selection.threshold,
        "original": dataclasses.asdict(selection.original),
        "point": dataclasses.asdict(selection.point),
    }


def metrics_summary(recipe: UnlearnRecipe, outcome: UnlearningOutcome) -> dict[str, Any]:
    """The JSON record of a run; its keys are what the model card reads."""
    main = outcome.main
    grid = [{"run_id": point.id, **point.overrides} for point in recipe.grid.expand()]
    return to_jsonable(
        {
            "method": main.method,
            "scale": main.selection.scale,
            "base_model": outcome.original_model.get("base_model", recipe.model.name_or_path),
            "base_model_sha256": outcome.original_model.get("sha256"),
            "original_model": outcome.original_model,
            "architecture": recipe.model.architecture,
            "forget_dataset": recipe.data.dataset,
            "control_dataset": recipe.data.control_dataset,
            "scenario": recipe.data.scenario,
            "forget_classes": recipe.data.forget_classes,
            "data": outcome.data_summary,
            "original": outcome.original,
            "unlearned": main.test,
            "retrain": outcome.retrain,
            "selection": _selection(main),
            "lambda_curve": _curve(main),
            "kept_fraction": outcome.merge.stats.kept_fraction,
            "merge_stats": {k: v for k, v in outcome.merge.stats.to_dict().items() if k != "tensors"},
            "comparison": outcome.rows(),
            "comparison_curves": {o.label: _curve(o) for o in outcome.comparison},
            "task_arithmetic_per_run": [o.row() | {"run_id": o.run_id} for o in outcome.per_run],
            "grid": grid,
            "config": dataclasses.replace(recipe.merge, scale=main.selection.scale).to_dict(),
            "recipe": recipe.to_dict(),
            "seconds": {key: round(value, 2) for key, value in outcome.seconds.items()},
        }
    )


def _merged_tensors_line(config: NegMergeConfig) -> str:
    """Which tensors every method's task vector covers: include/exclude change the results."""
    if config.include is None and not config.exclude:
        return "Task vectors cover every fine-tuned tensor, for every method."
    parts = [f"only {config.include}" if config.include is not None else "every fine-tuned tensor"]
    if config.exclude:
        parts.append(f"except {config.exclude}")
    return f"Task vectors cover {' '.join(parts)} (merge.include/exclude), for every method."


def _original_line(original: dict[str, Any]) -> str:
    """Which θ₀ the numbers belong to: its source and the sha256 of its weights."""
    if not original:
        return ""
    line = f"Original model (θ₀): `{original['base_model']}` ({original['source']}), weights sha256 `{original['sha256']}`"
    if original.get("trained_from"):
        line += f", trained here from `{original['trained_from']}`"
    return line + "."


def render_report(recipe: UnlearnRecipe, outcome: UnlearningOutcome) -> str:
    main = outcome.main
    stats = outcome.merge.stats
    lines = [
        "# hf-negmerge unlearning report",
        "",
        f"Forget set: `{recipe.data.dataset}` (scenario `{recipe.data.scenario}`"
        + (f", classes {recipe.data.forget_classes}" if recipe.data.forget_classes else "")
        + f"); model: `{recipe.model.name_or_path or 'tiny ' + recipe.model.architecture}`; "
        f"{len(outcome.run_ids)} fine-tuned runs.",
        "",
        _original_line(outcome.original_model),
        "",
        _merged_tensors_line(recipe.merge),
        "",
        "## Results (test splits, percent)",
        "",
        markdown_table(outcome.rows()),
        "",
        f"Every method's λ was chosen on validation splits by the same rule: {main.selection.reason}",
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
    vector.metadata.update(scale=main.selection.scale, base_model=str(base_model))
    vector.save(staging / MERGED_VECTOR_NAME)
    summary = metrics_summary(recipe, outcome)
    atomic_write_text(staging / METRICS_FILE, json.dumps(summary, indent=2, ensure_ascii=False) + "\n")
    atomic_write_text(staging / REPORT_FILE, render_report(recipe, outcome))
    write_comparison(outcome.rows(), staging / "comparison.md", staging / "comparison.json")
    atomic_write_text(staging / "recipe.yaml", yaml.safe_dump(recipe.to_dict(), sort_keys=False))
    plot_lambda_curves({o.label: o.selection for o in [main, *outcome.comparison]}, staging / LAMBDA_PLOT)
    stats = outcome.merge.stats
    plot_kept_fraction(
        stats.kept_fraction_by_tensor(),
        staging / KEPT_PLOT,
        numel={k: s.numel for k, s in stats.tensors.items()},
    )
    from .hub.card import UnlearningCardData, write_model_card

    write_model_card(UnlearningCardData.from_metrics_json(summary, plots=[LAMBDA_PLOT, KEPT_PLOT]), staging)
