"""Repeated trials of one recipe: every seed (and forgotten class) as its own run, then mean ± std.

On small data one run says little: the forgotten class may have a few dozen test images and θ₀'s
own training moves the result by points. `run_trials` runs the recipe once per trial into
`<output_dir>/<trial>` (an ordinary output folder each, so an interrupted sweep resumes: cached
θ₀, finished grid runs) and `summarise` gives, per method, the mean ± standard deviation of the
test numbers over trials and how many trials meet a target (forget accuracy ≤ `max_forget`,
retain ≥ `retain_ratio` × the original's). Random forgetting has no such target: there good
unlearning moves towards the retrained model, not to 0.

A trial sets the recipe's `seed` (θ₀ and Retrain training) to the trial's seed, and any
`seed_keys` too (`data.seed`: a new split and forget set; `grid.base.seed`: new fine-tuning
seeds when the grid has no `seed` axis). Used by `hf-negmerge unlearn --seeds` and
`benchmarks/unlearning_seeds.py`.
"""

from __future__ import annotations

import hashlib
import json
import statistics
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .checkpoints import atomic_write_text
from .errors import ConfigError, OutputError
from .published_paths import portable_paths

SUMMARY_STEM = "trials-summary"
TRIALS_FORMAT = "hf-negmerge/trials"
METRICS = ("forget_accuracy", "retain_accuracy", "test_accuracy", "mia_efficacy", "avg_gap")


@dataclass(frozen=True)
class Trial:
    """One repetition: the seed it sets and, in a class sweep, the class it forgets."""

    seed: int
    forget_class: str | None = None

    @property
    def name(self) -> str:
        return (
            f"seed-{self.seed}"
            if self.forget_class is None
            else f"class-{self.forget_class}-seed-{self.seed}"
        )

    def overrides(self, seed_keys: Sequence[str]) -> list[str]:
        values = [f"{key}={self.seed}" for key in ("seed", *seed_keys)]
        return values + (
            [] if self.forget_class is None else [f"data.forget_classes={json.dumps([self.forget_class])}"]
        )


def trials_for(seeds: Sequence[int], classes: Sequence[str] | None = None) -> list[Trial]:
    """Every seed, once per class when classes are given (class-major order)."""
    if not seeds:
        raise ConfigError("Trials need at least one seed.")
    if len(set(seeds)) != len(seeds):
        raise ConfigError(f"Seeds repeat: {list(seeds)}; each trial needs its own seed.")
    return [Trial(seed, forget_class) for forget_class in (classes or [None]) for seed in seeds]


def trial_record(trial: Trial, output_dir: Path) -> dict[str, Any]:
    """The numbers a summary needs, read back from the trial's metrics.json."""
    from .results import RunResults

    results = RunResults.load(output_dir)
    rows = {row["method"]: row for row in results.comparison}
    return {
        "trial": trial.name,
        "seed": trial.seed,
        "forget_class": trial.forget_class,
        "original": results.original,
        "main": results.method,
        "status": results.status,
        "warnings": results.warnings,
        "scenario": results.scenario,
        "methods": {_method_name(label): row for label, row in rows.items() if label != "original"},
    }


def trial_line(record: dict[str, Any]) -> str:
    """One line as a trial finishes: the main method's test numbers and its status."""
    row = record["methods"][record["main"]]
    return (
        f"{record['trial']}: {record['main']} forget {row['forget_accuracy']:.2f}, retain "
        f"{row['retain_accuracy']:.2f} (original {record['original']['retain_accuracy']:.2f}); {record['status']}"
    )


def _method_name(label: str) -> str:
    """'task_arithmetic (best: ra-m1-n1-…)' → 'task_arithmetic (best)': comparable across trials."""
    return label.split(" (best")[0] + " (best)" if "(best" in label else label


def run_trials(
    recipe_source: str | None,
    overrides: Sequence[str],
    trials: Sequence[Trial],
    output_root: Path,
    seed_keys: Sequence[str] = (),
    run: Callable[[Any], Any] | None = None,
    on_trial: Callable[[dict[str, Any]], None] | None = None,
) -> list[dict[str, Any]]:
    """Run (or resume) the recipe once per trial into `output_root/<trial>`; return their records.

    `run(recipe)` runs one recipe and returns its outcome, None in a non-main process (default:
    `pipeline.run_unlearning` without progress bars); `on_trial(record)` is called as each trial
    finishes.
    """
    from .recipe import load_recipe

    if run is None:
        from .pipeline import run_unlearning

        def run(recipe: Any) -> Any:
            return run_unlearning(recipe, progress=False)

    records = []
    for trial in trials:
        output_dir = output_root / trial.name
        recipe = load_recipe(
            recipe_source,
            [*overrides, *trial.overrides(seed_keys), f"output_dir={json.dumps(str(output_dir))}"],
        )
        if run(recipe) is None:  # a non-main process under accelerate launch: the main one reports
            continue
        record = trial_record(trial, output_dir)
        records.append(record)
        if on_trial is not None:
            on_trial(record)
    return records


def check_trials_output(output_root: Path, trials: Sequence[Trial], overwrite: bool = False) -> None:
    """Before any trial runs: every trial's folder must accept a run and the summary files must be
    absent or the tool's, so a clash is named at once rather than after the last trial."""
    from .output_folder import check_output_dir, inspect_output_folder

    check_output_dir(output_root)
    _check_ours(output_root / f"{SUMMARY_STEM}.md", output_root / f"{SUMMARY_STEM}.json")
    for trial in trials:
        inspect_output_folder(output_root / trial.name, overwrite)


def meets_target(
    row: dict[str, Any], original: dict[str, float], max_forget: float, retain_ratio: float
) -> bool:
    return (
        row.get("forget_accuracy", float("inf")) <= max_forget
        and row.get("retain_accuracy", 0.0) >= retain_ratio * original["retain_accuracy"]
    )


def mean_std(values: Sequence[float], digits: int = 1) -> str:
    """'m ± s' over the values (sample standard deviation); the value alone for one; '–' for none."""
    if not values:
        return "–"
    if len(values) == 1:
        return f"{values[0]:.{digits}f}"
    return f"{statistics.mean(values):.{digits}f} ± {statistics.stdev(values):.{digits}f}"


def summarise(records: Sequence[dict[str, Any]], max_forget: float = 15.0, retain_ratio: float = 0.95) -> str:
    """A markdown table: per method, mean ± std over trials of each metric, and the target count;
    for class and dataset forgetting, one line per trial for the main method below it."""
    methods = [name for name in records[0]["methods"] if not name.startswith("task_arithmetic[")]
    present = [m for m in METRICS if any(m in row for r in records for row in r["methods"].values())]
    with_target = records[0]["scenario"] != "random"
    header = ["method", *present, "retain / original", "λ"]
    header += [f"meets target (of {len(records)})"] if with_target else []
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    originals = [r["original"] for r in records]
    lines.append(
        "| original | "
        + " | ".join(mean_std([o[m] for o in originals if m in o]) for m in present)
        + " | 1.00 | 0 |"
        + (" – |" if with_target else "")
    )
    for method in methods:
        rows = [r["methods"][method] for r in records if method in r["methods"]]
        ratios = [
            row["retain_accuracy"] / o["retain_accuracy"] for row, o in zip(rows, originals, strict=True)
        ]
        hits = sum(
            meets_target(row, o, max_forget, retain_ratio) for row, o in zip(rows, originals, strict=True)
        )
        cells = [mean_std([row[m] for row in rows if m in row]) for m in present]
        scale = "–" if method == "retrain" else mean_std([row["scale"] for row in rows], digits=2)
        lines.append(
            f"| {method} | "
            + " | ".join(cells)
            + f" | {mean_std(ratios, digits=3)} | {scale} |"
            + (f" {hits} |" if with_target else "")
        )
    table = "\n".join(lines)
    if with_target:
        table += "\n\n" + list_trials(records, max_forget, retain_ratio)
    return table


def list_trials(records: Sequence[dict[str, Any]], max_forget: float, retain_ratio: float) -> str:
    """One line per trial: the main method's test numbers, whether it meets the target, its status."""
    lines = [
        "| trial | original forget / retain | forget | retain | retain / original | λ | meets target | status |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for record in records:
        original, row = record["original"], record["methods"][record["main"]]
        hit = "yes" if meets_target(row, original, max_forget, retain_ratio) else "no"
        lines.append(
            f"| {record['trial']} | {original['forget_accuracy']:.1f} / {original['retain_accuracy']:.1f} "
            f"| {row['forget_accuracy']:.1f} | {row['retain_accuracy']:.1f} "
            f"| {row['retain_accuracy'] / original['retain_accuracy']:.3f} | {row['scale']:.2f} | {hit} "
            f"| {record['status']} |"
        )
    return "\n".join(lines)


def write_summary(
    output_root: Path, records: Sequence[dict[str, Any]], table: str, settings: dict[str, Any]
) -> Path:
    """Write `trials-summary.md` and `.json` into `output_root` (atomically).

    Existing summary files are replaced only when the JSON records the markdown's hash, i.e. this
    tool wrote both; anything else with those names is the user's and stops the write.
    """
    markdown, record = output_root / f"{SUMMARY_STEM}.md", output_root / f"{SUMMARY_STEM}.json"
    _check_ours(markdown, record)
    text = table + "\n"
    payload = {
        "format": TRIALS_FORMAT,
        "format_version": 1,
        "settings": portable_paths(settings, output_root),
        "trials": list(records),
        "markdown_sha256": hashlib.sha256(text.encode("utf-8")).hexdigest(),
    }
    atomic_write_text(markdown, text)
    atomic_write_text(record, json.dumps(payload, indent=2, default=float) + "\n")
    return markdown


def _check_ours(markdown: Path, record: Path) -> None:
    if not markdown.exists() and not record.exists():
        return
    try:
        values = json.loads(record.read_text(encoding="utf-8"))
        ours = values.get("format") == TRIALS_FORMAT and values.get("markdown_sha256") == (
            hashlib.sha256(markdown.read_bytes()).hexdigest() if markdown.exists() else None
        )
    except (OSError, ValueError, AttributeError):
        ours = False
    if not ours:
        raise OutputError(
            f"{markdown} or {record} exists and was not written by hf-negmerge's trials (or was edited); "
            "move it away or choose another output_dir. Nothing was replaced."
        )
