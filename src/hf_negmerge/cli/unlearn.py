"""`hf-negmerge unlearn`: run a recipe end to end (the built-in digits default with no arguments)."""

from __future__ import annotations

import argparse
import json
from typing import Any

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
    from ..console import Console, terminal

    console = Console(
        "quiet" if args.quiet else "verbose" if args.verbose else "normal", not args.no_progress
    )
    with terminal(console):
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

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", OutcomeWarning)  # printed once, with the summary below
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
