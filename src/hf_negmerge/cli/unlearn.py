"""`hf-negmerge unlearn`: run a recipe end to end (the built-in digits default with no arguments)."""

from __future__ import annotations

import argparse
import json
from typing import Any

from ..errors import ConfigError
from ..recipe_files import available_recipes


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--config",
        default=None,
        help=f"Recipe YAML file or packaged recipe name (default: 'default'; packaged: {', '.join(available_recipes())}).",
    )
    parser.add_argument(
        "overrides",
        nargs="*",
        metavar="KEY=VALUE",
        help="Recipe overrides, e.g. grid.base.epochs=2 merge.retain_ratio=0.9",
    )
    parser.add_argument("--output-dir", default=None, help="Shortcut for output_dir=...")
    parser.add_argument(
        "--dry-run", action="store_true", help="Validate the recipe and print the plan; run nothing."
    )
    parser.add_argument(
        "--overwrite",
        action="store_true",
        help="Also write into a non-empty folder not written by hf-negmerge (its files are never replaced).",
    )
    parser.add_argument("--no-progress", action="store_true", help="Hide progress bars.")
    parser.add_argument(
        "--seeds",
        type=int,
        nargs="+",
        default=None,
        metavar="SEED",
        help="Run the recipe once per seed into OUTPUT_DIR/seed-<n> (recipe key `seed`: θ₀ and Retrain "
        "training) and report mean ± std over them in OUTPUT_DIR/trials-summary.md.",
    )
    parser.add_argument(
        "--seed-keys",
        nargs="+",
        default=[],
        metavar="KEY",
        help="With --seeds: recipe keys also set to each trial's seed, e.g. data.seed (a new split) "
        "grid.base.seed (new fine-tuning seeds when the grid has no seed axis).",
    )
    shown = parser.add_mutually_exclusive_group()
    shown.add_argument("--quiet", "-q", action="store_true", help="Print only errors and the final summary.")
    shown.add_argument(
        "--verbose",
        "-v",
        action="store_true",
        help="Also show library warnings and third-party progress bars (downloads, weight loading).",
    )


def run(args: argparse.Namespace) -> int:
    overrides = list(args.overrides)
    if args.output_dir is not None:  # '' too, so that it is refused rather than ignored
        overrides.append(f"output_dir={json.dumps(args.output_dir)}")  # quoted: any name stays a string
    from ..recipe import load_recipe

    recipe = load_recipe(args.config, overrides)
    if args.seed_keys and not args.seeds:
        raise ConfigError("--seed-keys needs --seeds.")
    if args.seeds:  # every trial's recipe must load before the first one runs
        from ..trials import trials_for

        trials = trials_for(args.seeds)
        for trial in trials:
            load_recipe(args.config, [*overrides, *trial.overrides(args.seed_keys)])
    from ..console import Console, terminal

    console = Console(
        "quiet" if args.quiet else "verbose" if args.verbose else "normal", not args.no_progress
    )
    with terminal(console):
        if args.seeds:
            return _run_trials(args, overrides, recipe, trials, console)
        return _run(args, recipe, console)


def _run(args: argparse.Namespace, recipe: Any, console: Any) -> int:
    """The command once the terminal is set up: plan (and budget), run, summary."""
    from ..plan import describe_plan
    from ..threads import configure_torch_threads

    if args.dry_run:  # the plan is what was asked for: printed even with --quiet
        if console.main:
            print(describe_plan(recipe, budget=True))
        return 0
    console.say(describe_plan(recipe))
    threads = configure_torch_threads()
    console.say(f"torch threads per process: {threads} (set OMP_NUM_THREADS to change)")
    import warnings

    from ..evaluation import summary_table
    from ..pipeline import run_unlearning
    from ..results import OutcomeWarning
    from ..training.grid import LoraLearningRateWarning

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", OutcomeWarning)  # printed once, with the summary below
        warnings.simplefilter("ignore", LoraLearningRateWarning)  # printed once, in the plan above
        outcome = run_unlearning(recipe, progress=console.progress, overwrite=args.overwrite)
    if outcome is None or not console.main:  # a non-main process under accelerate launch
        return 0
    print()
    print(summary_table(outcome.rows()))
    print()
    if console.verbosity != "quiet":
        print(outcome.main.selection.reason)
    print(outcome.status_line())
    for message in outcome.warnings:
        print(f"Warning: {message}")
    print(f"Unlearned model and report written to {outcome.output_dir} ({outcome.seconds['total']:.0f} s).")
    return 0


def _run_trials(
    args: argparse.Namespace, overrides: list[str], recipe: Any, trials: list[Any], console: Any
) -> int:
    """`--seeds`: the recipe once per seed, then mean ± std and target counts over the trials."""
    from pathlib import Path

    from ..output_folder import naming_full_disk
    from ..plan import describe_plan
    from ..threads import configure_torch_threads
    from ..trials import check_trials_output, run_trials, summarise, trial_line, write_summary

    root = Path(recipe.output_dir)
    names = ", ".join(f"{root / trial.name}" for trial in trials)
    header = f"trials: {len(trials)} (seed{' and ' + ', '.join(args.seed_keys) if args.seed_keys else ''} per trial) into {names}"
    if args.dry_run:
        if console.main:
            print(header)
            print(describe_plan(recipe, budget=True))
        return 0
    check_trials_output(root, trials, args.overwrite)  # every file the trials write, before the first runs
    console.say(header)
    threads = configure_torch_threads()
    console.say(f"torch threads per process: {threads} (set OMP_NUM_THREADS to change)")
    import warnings

    from ..pipeline import run_unlearning
    from ..results import OutcomeWarning

    def run(trial_recipe: Any) -> Any:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", OutcomeWarning)  # each trial's status is in the table
            return run_unlearning(trial_recipe, progress=console.progress, overwrite=args.overwrite)

    records = run_trials(
        args.config,
        overrides,
        trials,
        root,
        args.seed_keys,
        run=run,
        on_trial=lambda r: console.say(trial_line(r)),
    )
    if not console.main:
        return 0
    table = summarise(records)
    settings = {
        "recipe": args.config or "default",
        "overrides": overrides,
        "seeds": args.seeds,
        "seed_keys": args.seed_keys,
        "torch_threads": threads,
        "target": "forget accuracy ≤ 15%, retain ≥ 0.95 × original (test rows)",
    }
    with naming_full_disk(root):
        path = write_summary(root, records, table, settings)
    print()
    print(table)
    print()
    print(
        f"Mean ± std over {len(records)} trials (test rows, %); trials and summary in {root} ({path.name})."
    )
    return 0
