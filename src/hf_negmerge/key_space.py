"""Translate between a live model's `state_dict()` names and the names it writes to disk.

transformers 5 renames some modules when it loads a checkpoint (ViT's
`encoder.layer.0.attention.attention.query` becomes `layers.0.attention.q_proj`) and writes the
original names back on save. hf-negmerge keys every task vector by the on-disk names (the
"checkpoint key space"), so vectors built from folders and from live models agree, and a
saved vector applies to any model that loads the same checkpoint.
"""

from __future__ import annotations

import torch
from torch import nn

from .errors import CheckpointError


def _runtime_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    return model.state_dict(keep_vars=False)


def checkpoint_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """The model's tensors under the names `save_pretrained` would write (shares storage)."""
    state_dict = _runtime_state_dict(model)
    try:
        from transformers import PreTrainedModel
        from transformers.core_model_loading import revert_weight_conversion
    except ImportError:  # older transformers: no renaming at load time
        return state_dict
    if not isinstance(model, PreTrainedModel):
        return state_dict
    return dict(revert_weight_conversion(model, dict(state_dict)))


def checkpoint_to_runtime_names(model: nn.Module) -> dict[str, str]:
    """Map each checkpoint name to the `state_dict()` name holding the same storage.

    Only renames are supported: a conversion that fuses or splits tensors has no one-to-one
    name map, and applying a vector to such a model must go through its checkpoint instead.
    """
    runtime = _runtime_state_dict(model)
    by_storage: dict[tuple[int, tuple[int, ...]], str] = {}
    for name, tensor in runtime.items():
        by_storage.setdefault((tensor.data_ptr(), tuple(tensor.shape)), name)
    mapping: dict[str, str] = {}
    for name, tensor in checkpoint_state_dict(model).items():
        runtime_name = name if name in runtime else by_storage.get((tensor.data_ptr(), tuple(tensor.shape)))
        if runtime_name is None:
            raise CheckpointError(
                f"Checkpoint tensor '{name}' of {type(model).__name__} has no single runtime tensor "
                "(the architecture fuses or splits weights on load); apply the vector to a saved "
                "checkpoint folder instead of a live model."
            )
        mapping[name] = runtime_name
    return mapping
