"""`hf-negmerge merge`: N fine-tuned checkpoint folders → merged task vector (+ unlearned model)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from ..checkpoints import atomic_output_dir, atomic_write_text
from ..config import NegMergeConfig
from ..merging import available_methods, merge_checkpoints
from ..task_vector import MERGED_VECTOR_NAME
from ..unlearn import write_unlearned_checkpoint

STATS_NAME = "merge_stats.json"
UNLEARNED_SUBDIR = "unlearned_model"


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
        default=1.0,
        help="negmerge: 1.0 = unanimous (paper); <1 is an extension.",
    )
    parser.add_argument(
        "--ties-variant",
        default=None,
        choices=["original", "peft"],
        help="ties: 'original' (default; the paper's baseline, whole-model trim) or 'peft' (per tensor).",
    )
    parser.add_argument(
        "--density", type=float, default=None, help="ties: fraction of each run's entries kept (default 0.2)."
    )
    parser.add_argument(
        "--majority-sign-method",
        default=None,
        choices=["total", "frequency"],
        help="ties (frequency: peft only).",
    )
    parser.add_argument("--accumulation-dtype", default="float32", choices=["float32", "float64"])
    parser.add_argument("--overwrite", action="store_true", help="Replace OUT if it exists.")
    parser.add_argument("--no-progress", action="store_true", help="Hide progress bars.")


def run(args: argparse.Namespace) -> int:
    ties_options = {  # only what was given, so NegMergeConfig's defaults stay the defaults
        name: getattr(args, name)
        for name in ("ties_variant", "density", "majority_sign_method")
        if getattr(args, name) is not None
    }
    config = NegMergeConfig(
        method=args.method,
        consensus_fraction=args.consensus_fraction,
        **ties_options,
        include=args.include,
        exclude=args.exclude,
        accumulation_dtype=args.accumulation_dtype,
        scale=args.scale,
    )
    if args.out.exists() and not args.overwrite:
        raise FileExistsError(f"Output folder {args.out} exists; pass --overwrite to replace it.")
    result = merge_checkpoints(args.base, args.finetuned, config, progress=not args.no_progress)
    result.task_vector.metadata.update(
        base_model=str(args.base), finetuned_models=[str(path) for path in args.finetuned]
    )
    with atomic_output_dir(args.out, overwrite=args.overwrite) as staging:
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
