"""hf-negmerge: machine unlearning by sign-consensus weight merging (NegMerge, ICML 2025).

The public API. Names are imported on first use, so `import hf_negmerge` stays cheap and the
training or Hub stacks load only when asked for.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0.dev0"

# public name -> module that defines it
_EXPORTS: dict[str, str] = {
    "NegMergeConfig": "hf_negmerge.config",
    "TaskVector": "hf_negmerge.task_vector",
    "merge": "hf_negmerge.merging",
    "merge_task_vectors": "hf_negmerge.merging",
    "merge_checkpoints": "hf_negmerge.merging",
    "MergeAccumulator": "hf_negmerge.merging",
    "MergeResult": "hf_negmerge.merging",
    "MergeStats": "hf_negmerge.merging",
    "available_methods": "hf_negmerge.merging",
    "register_merge_method": "hf_negmerge.merging",
    "unlearn": "hf_negmerge.unlearn",
    "write_unlearned_checkpoint": "hf_negmerge.unlearn",
    "CheckpointReader": "hf_negmerge.checkpoints",
}

__all__ = [
    "CheckpointReader",
    "MergeAccumulator",
    "MergeResult",
    "MergeStats",
    "NegMergeConfig",
    "TaskVector",
    "__version__",
    "available_methods",
    "merge",
    "merge_checkpoints",
    "merge_task_vectors",
    "register_merge_method",
    "unlearn",
    "write_unlearned_checkpoint",
]

if TYPE_CHECKING:
    from .checkpoints import CheckpointReader
    from .config import NegMergeConfig
    from .merging import (
        MergeAccumulator,
        MergeResult,
        MergeStats,
        available_methods,
        merge,
        merge_checkpoints,
        merge_task_vectors,
        register_merge_method,
    )
    from .task_vector import TaskVector
    from .unlearn import unlearn, write_unlearned_checkpoint


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'hf_negmerge' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
