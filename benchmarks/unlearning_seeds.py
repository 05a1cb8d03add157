"""Benchmark: one unlearning recipe over several seeds, every method, mean ± std and pass counts.

On toy data a single run says little: the forgotten class has ~45 test images, and θ₀'s own
training (seed, thread count) moves the result by tens of points. This script runs the whole
recipe (θ₀, grid, NegMerge and every comparison method with its own λ) once per seed and
reports, per method, the mean ± standard deviation of the test numbers and how many seeds meet
a target (forget accuracy ≤ `--max-forget`, retain accuracy ≥ `--retain-ratio` × original;
not for random forgetting, where good unlearning moves towards the retrained model, not to 0).

Each seed writes an ordinary output folder under `--output-root/seed-<n>`, so an interrupted
sweep resumes (cached θ₀, finished grid runs) and every number can be inspected afterwards.

    python benchmarks/unlearning_seeds.py                        # built-in default, seeds 0..4
    python benchmarks/unlearning_seeds.py --recipe digits/random-forgetting --seeds 0 1 2
    python benchmarks/unlearning_seeds.py --seeds 0 1 -- grid.base.epochs=2   # recipe overrides
    python benchmarks/unlearning_seeds.py --classes 0 1 2 --seeds 0     # one trial per class × seed

`seed` sets θ₀'s and Retrain's training seed; `--seed-keys data.seed grid.base.seed` also sets
those recipe keys to each trial's seed (a new forget set and new fine-tuning seeds per trial).
`--classes` runs every seed once per forgotten class (`data.forget_classes=[c]`); the summary then
counts trials (class × seed) and lists each one.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path
from typing import Any

METRICS = ("forget_accuracy", "retain_accuracy", "test_accuracy", "mia_efficacy", "avg_gap")


def run_seed(
    recipe_name: str,
    seed: int,
    output_root: Path,
    overrides: list[str],
    seed_keys: tuple[str, ...] = (),
    forget_class: str | None = None,
) -> dict[str, Any]:
    """Run (or resume) the recipe for one seed (and forgotten class); return its rows and the
    original's numbers, read back from the run's metrics.json (`hf_negmerge.results.RunResults`)."""
    from hf_negmerge.pipeline import run_unlearning
    from hf_negmerge.recipe import load_recipe
    from hf_negmerge.results import RunResults

    trial = f"seed-{seed}" if forget_class is None else f"class-{forget_class}-seed-{seed}"
    output_dir = output_root / trial
    per_trial = [f"{key}={seed}" for key in ("seed", *seed_keys)]
    per_trial += [] if forget_class is None else [f"data.forget_classes=[{forget_class}]"]
    recipe = load_recipe(recipe_name, [*overrides, *per_trial, f"output_dir={output_dir}"])
    started = time.perf_counter()
    run_unlearning(recipe, progress=False)
    results = RunResults.load(output_dir)
    rows = {row["method"]: row for row in results.comparison}
    return {
        "trial": trial,
        "seed": seed,
        "forget_class": forget_class,
        "seconds": round(time.perf_counter() - started, 1),
        "original": results.original,
        "main": results.method,  # the main method's row is labelled with its name
        "status": results.status,
        "warnings": results.warnings,
        "scenario": results.scenario,
        "methods": {_method_name(label): row for label, row in rows.items() if label != "original"},
    }


def _method_name(label: str) -> str:
    """'task_arithmetic (best: ra-m1-n1-…)' → 'task_arithmetic (best)': comparable across seeds."""
    return label.split(" (best")[0] + " (best)" if "(best" in label else label


def meets_target(
    row: dict[str, Any], original: dict[str, float], max_forget: float, retain_ratio: float
) -> bool:
    return (
        row.get("forget_accuracy", float("inf")) <= max_forget
        and row.get("retain_accuracy", 0.0) >= retain_ratio * original["retain_accuracy"]
    )


def summarise(results: list[dict[str, Any]], max_forget: float, retain_ratio: float) -> str:
    """A markdown table: per method, mean ± std over seeds of each metric, and the target count."""
    methods = [name for name in results[0]["methods"] if not name.startswith("task_arithmetic[")]
    present = [m for m in METRICS if any(m in row for r in results for row in r["methods"].values())]
    with_target = results[0]["scenario"] != "random"  # there, good unlearning moves towards Retrain, not 0
    header = ["method", *present, "retain / original", "λ"]
    header += [f"meets target (of {len(results)})"] if with_target else []
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    originals = [r["original"] for r in results]
    lines.append(
        "| original | "
        + " | ".join(_mean_std([o[m] for o in originals if m in o]) for m in present)
        + " | 1.00 | 0 |"
        + (" – |" if with_target else "")
    )
    for method in methods:
        rows = [r["methods"][method] for r in results]
        ratios = [
            row["retain_accuracy"] / o["retain_accuracy"] for row, o in zip(rows, originals, strict=True)
        ]
        hits = sum(
            meets_target(row, o, max_forget, retain_ratio) for row, o in zip(rows, originals, strict=True)
        )
        cells = [_mean_std([row[m] for row in rows if m in row]) for m in present]
        scale = "–" if method == "retrain" else _mean_std([row["scale"] for row in rows], digits=2)
        lines.append(
            f"| {method} | "
            + " | ".join(cells)
            + f" | {_mean_std(ratios, digits=3)} | {scale} |"
            + (f" {hits} |" if with_target else "")
        )
    return "\n".join(lines)


def list_trials(results: list[dict[str, Any]], max_forget: float, retain_ratio: float) -> str:
    """A markdown table with one line per trial: the main method's test numbers and its status."""
    lines = [
        "| trial | original forget / retain | forget | retain | retain / original | λ | meets target | status |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for result in results:
        original, row = result["original"], result["methods"][result["main"]]
        hit = "yes" if meets_target(row, original, max_forget, retain_ratio) else "no"
        lines.append(
            f"| {result['trial']} | {original['forget_accuracy']:.1f} / {original['retain_accuracy']:.1f} "
            f"| {row['forget_accuracy']:.1f} | {row['retain_accuracy']:.1f} "
            f"| {row['retain_accuracy'] / original['retain_accuracy']:.3f} | {row['scale']:.2f} | {hit} "
            f"| {result['status']} |"
        )
    return "\n".join(lines)


def _mean_std(values: list[float], digits: int = 1) -> str:
    if not values:
        return "–"
    if len(values) == 1:
        return f"{values[0]:.{digits}f}"
    return f"{statistics.mean(values):.{digits}f} ± {statistics.stdev(values):.{digits}f}"


def main() -> None:
    from hf_negmerge.checkpoints import atomic_write_text

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--recipe", default="default", help="built-in recipe name or YAML path")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    parser.add_argument(
        "--classes", nargs="+", default=None, help="forget each class in turn (data.forget_classes=[c])"
    )
    parser.add_argument("--output-root", type=Path, default=Path("seed-sweep"))
    parser.add_argument(
        "--max-forget", type=float, default=15.0, help="target: forget accuracy ≤ this (percent)"
    )
    parser.add_argument("--retain-ratio", type=float, default=0.95, help="target: retain ≥ ratio × original")
    parser.add_argument(
        "--seed-keys",
        nargs="*",
        default=[],
        help="recipe keys also set to each trial's seed (e.g. data.seed grid.base.seed)",
    )
    parser.add_argument("overrides", nargs="*", help="recipe overrides key=value (after --)")
    args = parser.parse_args()
    from hf_negmerge.threads import configure_torch_threads

    threads = configure_torch_threads()  # as `hf-negmerge unlearn` does: the same numbers
    print(f"torch threads: {threads}", flush=True)
    results = []
    for forget_class in args.classes or [None]:
        for seed in args.seeds:
            result = run_seed(
                args.recipe, seed, args.output_root, args.overrides, tuple(args.seed_keys), forget_class
            )
            results.append(result)
            row = result["methods"][result["main"]]
            print(
                f"{result['trial']}: {result['seconds']:.0f} s; {result['main']} forget {row['forget_accuracy']:.1f}, "
                f"retain {row['retain_accuracy']:.1f} (original {result['original']['retain_accuracy']:.1f}); "
                f"status: {result['status']}",
                flush=True,
            )
    table = summarise(results, args.max_forget, args.retain_ratio)
    if results[0]["scenario"] != "random":
        table += "\n\n" + list_trials(results, args.max_forget, args.retain_ratio)
    print(table)
    atomic_write_text(args.output_root / "summary.md", table + "\n")
    atomic_write_text(args.output_root / "summary.json", json.dumps(results, indent=2, default=float) + "\n")


if __name__ == "__main__":
    main()
