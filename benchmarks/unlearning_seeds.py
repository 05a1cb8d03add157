"""Benchmark: one unlearning recipe over several seeds (and forgotten classes), every method, mean ± std.

Runs the whole recipe (θ₀, grid, NegMerge and every comparison method with its own λ) once per
trial with `hf_negmerge.trials` — the code behind `hf-negmerge unlearn --seeds` — and prints,
per method, the mean ± standard deviation of the test numbers and how many trials meet a target
(forget accuracy ≤ `--max-forget`, retain accuracy ≥ `--retain-ratio` × original; not for
random forgetting, where good unlearning moves towards the retrained model, not to 0), then one
line per trial. Each trial writes an ordinary output folder under `--output-root/<trial>`, so an
interrupted sweep resumes (cached θ₀, finished grid runs) and every number can be inspected.

    python benchmarks/unlearning_seeds.py                        # built-in default, seeds 0..4
    python benchmarks/unlearning_seeds.py --recipe digits/random-forgetting --seeds 0 1 2
    python benchmarks/unlearning_seeds.py --seeds 0 1 -- grid.base.epochs=2   # recipe overrides
    python benchmarks/unlearning_seeds.py --classes 0 1 2 --seeds 0     # one trial per class × seed

`seed` sets θ₀'s and Retrain's training seed; `--seed-keys data.seed grid.base.seed` also sets
those recipe keys to each trial's seed (a new forget set and new fine-tuning seeds per trial).
`--classes` runs every seed once per forgotten class (`data.forget_classes=[c]`).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path


def main() -> None:
    from hf_negmerge.threads import configure_torch_threads
    from hf_negmerge.trials import run_trials, summarise, trial_line, trials_for, write_summary

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--recipe", default="default", help="built-in recipe name or YAML path")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    parser.add_argument(
        "--classes", nargs="+", default=None, help="forget each class in turn (data.forget_classes=[c])"
    )
    parser.add_argument("--output-root", type=Path, default=Path("seed-sweep"))
    parser.add_argument("--max-forget", type=float, default=15.0, help="target: forget accuracy ≤ this (%%)")
    parser.add_argument("--retain-ratio", type=float, default=0.95, help="target: retain ≥ ratio × original")
    parser.add_argument(
        "--seed-keys",
        nargs="*",
        default=[],
        help="recipe keys also set to each trial's seed (e.g. data.seed grid.base.seed)",
    )
    parser.add_argument("overrides", nargs="*", help="recipe overrides key=value (after --)")
    args = parser.parse_args()

    threads = configure_torch_threads()  # as `hf-negmerge unlearn` does: the same numbers
    print(f"torch threads: {threads}", flush=True)
    started = time.perf_counter()

    def report(record: dict) -> None:
        print(f"{trial_line(record)} ({time.perf_counter() - started:.0f} s elapsed)", flush=True)

    trials = trials_for(args.seeds, args.classes)
    records = run_trials(
        args.recipe, args.overrides, trials, args.output_root, args.seed_keys, on_trial=report
    )
    table = summarise(records, args.max_forget, args.retain_ratio)
    print(table)
    settings = {
        "recipe": args.recipe,
        "overrides": args.overrides,
        "seeds": args.seeds,
        "classes": args.classes,
        "seed_keys": args.seed_keys,
        "torch_threads": threads,
        "target": f"forget ≤ {args.max_forget}%, retain ≥ {args.retain_ratio} × original (test rows)",
    }
    write_summary(args.output_root, records, table, settings)


if __name__ == "__main__":
    main()
