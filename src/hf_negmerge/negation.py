"""The unlearning step: θ_u = θ₀ − λ·τ_merged, on a live model or checkpoint folder to folder."""

from __future__ import annotations

import shutil
from pathlib import Path

import torch
from torch import nn

from .checkpoints import (
    OUTPUT_MARKER,
    CheckpointReader,
    atomic_output_dir,
    atomic_write_text,
    check_no_overlap,
    check_output_dir,
    resolve_weight_files,
    save_state_dict,
)
from .errors import CheckpointError
from .lambda_search import check_scale
from .task_vector import TaskVector, add_scaled, check_compatible, check_float_target

__all__ = ["check_scale", "unlearn", "write_unlearned_checkpoint"]


def unlearn(
    base: nn.Module | dict[str, torch.Tensor],
    merged: TaskVector,
    scale: float,
    model: nn.Module | None = None,
) -> nn.Module | dict:
    """θ₀ − λ·τ: SUBTRACT `scale` (λ ≥ 0, checked) times the merged task vector.

    Same as `merged.negate_into(base, scale, model)`; a model is changed in place. A state dict
    in runtime names needs `model=` (see `TaskVector.apply_to`).
    """
    return merged.negate_into(base, scale, model=model)


def write_unlearned_checkpoint(
    base_dir: str | Path,
    merged: TaskVector,
    scale: float,
    output_dir: str | Path,
    overwrite: bool = False,
    max_shard_size: int | str = "5GB",
    readme: str | None = None,
) -> Path:
    """Write θ₀ − λ·τ as a checkpoint folder loadable with `from_pretrained`.

    Weights keep the base's names and dtypes; non-float tensors and tensors outside the vector
    are copied unchanged; every non-weight file of the base (config, processor, tokenizer) is
    copied along, except that `readme` (a model card's text), when given, is written as
    `README.md` in place of the base's own card. The folder appears only when complete, and only if every weight is finite
    (a huge λ overflows). `overwrite` replaces only an earlier output of this tool; an output
    that is, contains or lies inside the base is refused.
    """
    scale = check_scale(scale)
    base_dir = Path(base_dir)
    if not base_dir.is_dir():
        raise CheckpointError(f"Base checkpoint folder {base_dir} does not exist.")
    check_no_overlap(output_dir, [("base", base_dir)])
    check_output_dir(output_dir, overwrite, OUTPUT_MARKER)
    reader = CheckpointReader(base_dir)
    missing = [key for key in merged if key not in reader]
    if missing:
        raise CheckpointError(
            f"Base checkpoint {base_dir} has no tensor(s) {', '.join(missing[:5])} of the vector."
        )
    state_dict = {}
    for key in reader:
        tensor = reader[key]
        if key in merged.tensors:
            check_compatible(tensor.shape, merged[key].shape, key, base_dir, "merged task vector")
            check_float_target(tensor, key, f"base checkpoint {base_dir}")
            tensor = add_scaled(tensor, merged[key], -scale)
            if not torch.isfinite(tensor).all():
                raise CheckpointError(
                    f"θ₀ − λ·τ is not finite in tensor '{key}' at λ={scale} (the result overflows "
                    f"{tensor.dtype}); nothing was written to {output_dir}. Use a smaller λ."
                )
        state_dict[key] = tensor
    weight_files = {path.name for path in resolve_weight_files(base_dir)} | {
        "model.safetensors.index.json",
        "pytorch_model.bin.index.json",
    }
    with atomic_output_dir(output_dir, overwrite=overwrite, owned_marker=OUTPUT_MARKER) as staging:
        for item in base_dir.iterdir():
            if item.is_file() and item.name not in weight_files and not item.name.startswith("."):
                shutil.copy2(item, staging / item.name)
        save_state_dict(state_dict, staging, max_shard_size=max_shard_size)
        if readme is not None:
            atomic_write_text(staging / "README.md", readme)
    return Path(output_dir)
