"""`hf-negmerge merge`: N fine-tuned checkpoint folders → merged task vector (+ unlearned model)."""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

from ..checkpoints import (
    OUTPUT_MARKER,
    atomic_output_dir,
    atomic_write_text,
    check_no_overlap,
    check_output_dir,
    remove_stale_staging,
)
from ..config import NegMergeConfig
from ..errors import ConfigError
from ..merging import available_methods, merge_checkpoints
from ..task_vector import MERGED_VECTOR_NAME
from ..unlearn import write_unlearned_checkpoint

STATS_NAME = "merge_stats.json"
UNLEARNED_SUBDIR = "unlearned_model"
#: method-specific options (argparse dest) and the methods that read them; giving one to another
#: method is an error instead of being silently ignored
METHOD_OPTIONS: dict[str, tuple[str, ...]] = {
    "consensus_fraction": ("negmerge",),
    "ties_variant": ("ties",),
    "density": ("ties",),
    "majority_sign_method": ("ties",),
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--base", required=True, type=Path, help="Original model folder (HF layout).")
    parser.add_argument(
        "--finetuned",
        required=True,
        nargs="+",
        type=Path,
        help="Fine-tuned model folders (same architecture).",
    )
    parser.add_argument("--method", default="negmerge", choices=available_methods(), help="Merge method.")
    parser.add_argument("--out", required=True, type=Path, help="Output folder (created atomically).")
    parser.add_argument(
        "--scale",
        type=float,
        default=None,
        help="λ: also write the unlearned model θ₀ − λ·τ to OUT/unlearned_model.",
    )
    parser.add_argument(
        "--include", nargs="*", default=None, help="fnmatch patterns of tensors that take part."
    )
    parser.add_argument("--exclude", nargs="*", default=None, help="fnmatch patterns of tensors left out.")
    parser.add_argument(
        "--consensus-fraction",
        type=float,
        default=None,
        help="negmerge only: 1.0 = unanimous (paper, default); <1 is an extension.",
    )
    parser.add_argument(
        "--ties-variant",
        default=None,
        choices=["original", "peft"],
        help="ties only: 'original' (default; the paper's baseline, whole-model trim) or 'peft' (per tensor).",
    )
    parser.add_argument(
        "--density",
        type=float,
        default=None,
        help="ties only: fraction of each run's entries kept (default 0.2).",
    )
    parser.add_argument(
        "--majority-sign-method",
        default=None,
        choices=["total", "frequency"],
        help="ties only: sign election (total by default; frequency needs --ties-variant peft).",
    )
    parser.add_argument("--accumulation-dtype", default="float32", choices=["float32", "float64"])
    parser.add_argument(
        "--overwrite",
        action="store_true",
        help="Replace OUT if it is an earlier merge output (never a folder this tool did not write).",
    )
    parser.add_argument("--no-progress", action="store_true", help="Hide progress bars.")


def _method_options(args: argparse.Namespace) -> dict[str, object]:
    """The method-specific options given on the command line; an error for the wrong method."""
    given = {name: getattr(args, name) for name in METHOD_OPTIONS if getattr(args, name) is not None}
    for name in given:
        if args.method not in METHOD_OPTIONS[name]:
            option = "--" + name.replace("_", "-")
            raise ConfigError(
                f"{option} only applies to --method {' or '.join(METHOD_OPTIONS[name])}; "
                f"--method {args.method} ignores it. Drop {option} or change --method."
            )
    return given


def run(args: argparse.Namespace) -> int:
    config = NegMergeConfig(
        method=args.method,
        include=args.include,
        exclude=args.exclude,
        accumulation_dtype=args.accumulation_dtype,
        scale=args.scale,
        **_method_options(args),
    )
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
