"""`hf-negmerge merge`: N fine-tuned checkpoints → merged task vector (+ unlearned model).

Inputs come from flags or from a mergekit-style YAML merge file (`--config`, see
`hf_negmerge.merge_file`); flags given on the command line override the file's values. Base and
runs are local folders or Hub ids (downloaded into the Hugging Face cache).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import re
import sys
import typing
from pathlib import Path
from typing import Any

from ..config import NegMergeConfig
from ..errors import ConfigError, OutputError
from ..merge_file import MergeFile, ModelRef, merge_fields

STATS_NAME = "merge_stats.json"
UNLEARNED_SUBDIR = "unlearned_model"
MERGE_FILE_NAME = "merge_config.yaml"
# Help for config fields whose meaning on this command differs from their config help.
_HELP_HERE = {
    "scale": "λ: also write the unlearned model θ₀ − λ·τ to OUT/unlearned_model (λ ≥ 0).",
}


def config_fields() -> list[dataclasses.Field]:
    """The NegMergeConfig fields a merge takes (the λ-search fields belong to `unlearn`)."""
    return merge_fields()


def _option_type(annotation: Any) -> tuple[type, bool]:
    """(element type, is a list) of a config annotation such as `float | None` or `list[str] | None`."""
    options = [arg for arg in typing.get_args(annotation) if arg is not type(None)] or [annotation]
    (kind,) = options
    if typing.get_origin(kind) is list:
        return typing.get_args(kind)[0], True
    return kind, False


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--config",
        type=Path,
        help="YAML merge file: base, models (folders or Hub ids with revisions), method, parameters, "
        "include/exclude, scale. Flags given here override its values.",
    )
    parser.add_argument("--base", help="Original model: a folder (HF layout) or a Hub id.")
    parser.add_argument(
        "--finetuned",
        nargs="+",
        help="Fine-tuned models (same architecture): folders or Hub ids.",
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
        help="Replace OUT if it is an earlier merge output (never a folder this tool did not write); "
        "files added to it since are kept, and a file of it edited since stops the merge.",
    )
    parser.add_argument("--no-progress", action="store_true", help="Hide progress bars.")


def _config_values(args: argparse.Namespace, merge_file: MergeFile | None = None) -> dict[str, Any]:
    """The config fields from the merge file, overridden by the flags given; an error for an
    option the chosen method ignores, naming where it was set."""
    values = dict(merge_file.values) if merge_file is not None else {}
    sources = dict(merge_file.sources) if merge_file is not None else {}
    for item in config_fields():
        if getattr(args, item.name) is not None:
            values[item.name] = getattr(args, item.name)
            sources[item.name] = "--" + item.name.replace("_", "-")
    method = values.get("method", NegMergeConfig.method)
    in_file = sources.get("method", "--method") != "--method"
    for item in config_fields():
        methods = item.metadata.get("methods")
        if item.name in values and methods is not None and method not in methods:
            option = sources[item.name]
            if in_file:
                raise ConfigError(
                    f"{option} only applies to method {' or '.join(methods)}; {sources['method']} is "
                    f"{method}, which ignores it. Drop {option} or change the method."
                )
            raise ConfigError(
                f"{option} only applies to --method {' or '.join(methods)}; "
                f"--method {method} ignores it. Drop {option} or change --method."
            )
    return values


def _inputs(args: argparse.Namespace, merge_file: MergeFile | None) -> tuple[ModelRef, list[ModelRef]]:
    """Base and runs: flags win over the merge file; one of the two must give each."""
    base = ModelRef(args.base) if args.base is not None else (merge_file.base if merge_file else None)
    if args.finetuned is not None:
        models = [ModelRef(name) for name in args.finetuned]
    else:
        models = merge_file.models if merge_file else []
    where = f" or 'base:' in {merge_file.path}" if merge_file else " (or a --config file with 'base:')"
    if base is None:
        raise ConfigError(f"No base model: give --base{where}.")
    if not models:
        where = (
            f" or 'models:' in {merge_file.path}" if merge_file else " (or a --config file with 'models:')"
        )
        raise ConfigError(f"No fine-tuned models: give --finetuned{where}.")
    return base, models


def _check_not_in_cache(out: Path) -> None:
    """The output must not be written inside the Hugging Face cache (it holds the Hub inputs)."""
    from huggingface_hub import constants

    cache = Path(os.path.realpath(constants.HF_HUB_CACHE))
    if Path(os.path.realpath(out)).is_relative_to(cache):
        raise OutputError(
            f"The output {out} lies inside the Hugging Face cache {cache}, which holds downloaded models; "
            "choose an output folder outside it."
        )


def run(args: argparse.Namespace) -> int:
    from ..checkpoints import (
        OUTPUT_MARKER,
        atomic_output_dir,
        atomic_write_text,
        check_no_overlap,
        check_output_dir,
        remove_stale_staging,
    )
    from ..folder_kinds import check_model_config
    from ..hub.merge_card import build_merge_card
    from ..merge_file import resolve_model
    from ..merging import merge_checkpoints
    from ..negation import write_unlearned_checkpoint
    from ..task_vector import MERGED_VECTOR_NAME

    merge_file = MergeFile.load(args.config) if args.config is not None else None
    values = _config_values(args, merge_file)
    try:
        config = NegMergeConfig(**values)
    except ConfigError as error:
        # name the merge file unless the value at fault came from a flag
        field = re.search(r"NegMergeConfig\.(\w+)", str(error))
        from_flag = field is not None and getattr(args, field.group(1), None) is not None
        from_file = merge_file is not None and not from_flag
        raise ConfigError(f"{args.config}: {error}" if from_file else str(error)) from error
    base_ref, model_refs = _inputs(args, merge_file)
    # the output is checked before anything is downloaded or merged (Hub inputs again once resolved)
    labelled = [("base", base_ref), *(("fine-tuned run", ref) for ref in model_refs)]
    check_no_overlap(
        args.out, [(label, ref.local_path) for label, ref in labelled if ref.local_path.is_dir()]
    )
    _check_not_in_cache(args.out)
    remove_stale_staging(args.out)  # a killed run's leftovers (may put back an old output)
    if os.path.isdir(args.out) and not args.overwrite:
        raise FileExistsError(f"Output folder {args.out} exists; pass --overwrite to replace it.")
    check_output_dir(args.out, args.overwrite, OUTPUT_MARKER)
    base = resolve_model(base_ref, "base")
    runs = [resolve_model(ref, "fine-tuned run") for ref in model_refs]
    check_no_overlap(args.out, [("base", base.folder), *(("fine-tuned run", run.folder) for run in runs)])
    effective = (merge_file or MergeFile()).effective_yaml(config, base.ref, [run.ref for run in runs])
    hub_models = list(dict.fromkeys(item.hub_id for item in (base, *runs) if item.hub_id is not None))
    model_config = check_model_config(base.folder, required=config.scale is not None)
    architectures = _architectures(model_config)
    # the staging folder exists before the merge starts: a write problem shows up before the work
    with atomic_output_dir(args.out, overwrite=args.overwrite, owned_marker=OUTPUT_MARKER) as staging:
        result = merge_checkpoints(
            base.folder, [run.folder for run in runs], config, progress=not args.no_progress
        )
        result.task_vector.metadata.update(
            base_model=base.label, finetuned_models=[run.label for run in runs]
        )
        result.task_vector.save(staging / MERGED_VECTOR_NAME)
        config.save_pretrained(staging)
        atomic_write_text(staging / STATS_NAME, json.dumps(result.stats.to_dict(), indent=2) + "\n")
        atomic_write_text(staging / MERGE_FILE_NAME, effective)
        card = {
            "config_yaml": effective,
            "method": config.method,
            "base_label": base.label,
            "run_labels": [run.label for run in runs],
            "hub_models": hub_models,
            "kept_fraction": result.stats.kept_fraction,
            "scale": config.scale,
            "base_folder": base.folder,
            "architectures": architectures,
        }
        atomic_write_text(staging / "README.md", str(build_merge_card(**card)))
        if config.scale is not None:
            write_unlearned_checkpoint(
                base.folder,
                result.task_vector,
                config.scale,
                staging / UNLEARNED_SUBDIR,
                readme=str(build_merge_card(**card, model_card=True)),
            )
    print(result.stats.summary())
    print(
        f"Wrote {args.out / MERGED_VECTOR_NAME}"
        + (f" and {args.out / UNLEARNED_SUBDIR}" if config.scale is not None else "")
    )
    if config.scale is not None and "model_type" not in model_config:
        print(
            f"Note: {base.folder / 'config.json'} names no model_type, so transformers' "
            f"from_pretrained cannot load {args.out / UNLEARNED_SUBDIR} by itself; read its "
            "model.safetensors with safetensors.torch.load_file.",
            file=sys.stderr,
        )
    return 0


def _architectures(model_config: dict[str, Any]) -> list[str]:
    """`architectures` from a model folder's config.json values (empty when it names none)."""
    found = model_config.get("architectures")
    return [str(name) for name in found] if isinstance(found, list) else []
