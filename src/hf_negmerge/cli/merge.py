"""`hf-negmerge merge`: N fine-tuned checkpoint folders → merged task vector (+ unlearned model)."""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import typing
from pathlib import Path
from typing import Any

from ..config import NegMergeConfig
from ..errors import ConfigError

STATS_NAME = "merge_stats.json"
UNLEARNED_SUBDIR = "unlearned_model"
# Help for config fields whose meaning on this command differs from their config help.
_HELP_HERE = {
    "scale": "λ: also write the unlearned model θ₀ − λ·τ to OUT/unlearned_model (λ ≥ 0).",
}


def config_fields() -> list[dataclasses.Field]:
    """The NegMergeConfig fields a merge takes (the λ-search fields belong to `unlearn`)."""
    return [item for item in dataclasses.fields(NegMergeConfig) if not item.metadata.get("lambda_search")]


def _option_type(annotation: Any) -> tuple[type, bool]:
    """(element type, is a list) of a config annotation such as `float | None` or `list[str] | None`."""
    options = [arg for arg in typing.get_args(annotation) if arg is not type(None)] or [annotation]
    (kind,) = options
    if typing.get_origin(kind) is list:
        return typing.get_args(kind)[0], True
    return kind, False


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--base", required=True, type=Path, help="Original model folder (HF layout).")
    parser.add_argument(
        "--finetuned",
        required=True,
        nargs="+",
        type=Path,
        help="Fine-tuned model folders (same architecture).",
    )
    parser.add_argument("--out", required=True, type=Path, help="Output folder (created atomically).")
    # One flag per NegMergeConfig field, so the command and the config never drift apart. Every
    # flag defaults to None ("not given"): NegMergeConfig's own defaults apply, and a
    # method-specific flag given to another method is an error (see `_config_values`).
    hints = typing.get_type_hints(NegMergeConfig)
    for item in config_fields():
        kind, is_list = _option_type(hints[item.name])
        methods = item.metadata.get("methods")
        default = item.default if item.default is not dataclasses.MISSING else None
        help_text = _HELP_HERE.get(item.name, item.metadata.get("help", ""))
        if methods is None and default is not None:
            help_text += f" (default: {default})"
        parser.add_argument(
            "--" + item.name.replace("_", "-"),
            type=kind,
            nargs="*" if is_list else None,
            choices=item.metadata.get("choices"),
            default=None,
            help=help_text.replace("%", "%%"),
        )
    parser.add_argument(
        "--overwrite",
        action="store_true",
        help="Replace OUT if it is an earlier merge output (never a folder this tool did not write).",
    )
    parser.add_argument("--no-progress", action="store_true", help="Hide progress bars.")


def _config_values(args: argparse.Namespace) -> dict[str, Any]:
    """The config fields given on the command line; an error for a flag the method ignores."""
    given = {item.name: getattr(args, item.name) for item in config_fields()}
    given = {name: value for name, value in given.items() if value is not None}
    method = given.get("method", NegMergeConfig.method)
    for item in config_fields():
        methods = item.metadata.get("methods")
        if item.name in given and methods is not None and method not in methods:
            option = "--" + item.name.replace("_", "-")
            raise ConfigError(
                f"{option} only applies to --method {' or '.join(methods)}; "
                f"--method {method} ignores it. Drop {option} or change --method."
            )
    return given


def run(args: argparse.Namespace) -> int:
    from ..checkpoints import (
        OUTPUT_MARKER,
        atomic_output_dir,
        atomic_write_text,
        check_no_overlap,
        check_output_dir,
        remove_stale_staging,
    )
    from ..merging import merge_checkpoints
    from ..task_vector import MERGED_VECTOR_NAME
    from ..unlearn import write_unlearned_checkpoint

    config = NegMergeConfig(**_config_values(args))
    inputs = [("base", args.base), *(("fine-tuned run", path) for path in args.finetuned)]
    check_no_overlap(args.out, inputs)
    remove_stale_staging(args.out)  # a killed run's leftovers (may put back an old output)
    if os.path.isdir(args.out) and not args.overwrite:
        raise FileExistsError(f"Output folder {args.out} exists; pass --overwrite to replace it.")
    check_output_dir(args.out, args.overwrite, OUTPUT_MARKER)
    # the staging folder exists before the merge starts: a write problem shows up before the work
    with atomic_output_dir(args.out, overwrite=args.overwrite, owned_marker=OUTPUT_MARKER) as staging:
        result = merge_checkpoints(args.base, args.finetuned, config, progress=not args.no_progress)
        result.task_vector.metadata.update(
            base_model=str(args.base), finetuned_models=[str(path) for path in args.finetuned]
        )
        result.task_vector.save(staging / MERGED_VECTOR_NAME)
        config.save_pretrained(staging)
        atomic_write_text(staging / STATS_NAME, json.dumps(result.stats.to_dict(), indent=2) + "\n")
        if args.scale is not None:
            write_unlearned_checkpoint(args.base, result.task_vector, args.scale, staging / UNLEARNED_SUBDIR)
    print(result.stats.summary())
    print(
        f"Wrote {args.out / MERGED_VECTOR_NAME}"
        + (f" and {args.out / UNLEARNED_SUBDIR}" if args.scale is not None else "")
    )
    return 0
