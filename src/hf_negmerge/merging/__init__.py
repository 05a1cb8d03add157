"""Merge methods (a registry) and the machinery that applies them to whole task vectors."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from . import baselines, negmerge  # noqa: F401  (importing registers the methods)
from .accumulate import MergeAccumulator, MergeResult, merge_checkpoints, merge_task_vectors
from .base import (
    MERGE_METHODS,
    MergeMethod,
    MergeSession,
    TensorMerger,
    available_methods,
    get_merge_method,
    register_merge_method,
)
from .stats import MergeStats, TensorStats


def merge(task_tensors: Sequence[torch.Tensor], method: str = "negmerge", **options: Any) -> torch.Tensor:
    """Merge the task tensors of ONE parameter with `method`; `options` are NegMergeConfig fields.

    >>> merge([torch.tensor([1.0, -1.0]), torch.tensor([3.0, 2.0])])
    tensor([2., 0.])
    """
    from ..config import NegMergeConfig

    config = NegMergeConfig(method=method, **options)
    merge_method = get_merge_method(method)
    merge_method.check_count(len(task_tensors))
    session = merge_method.start(config)  # this one parameter is the whole model (original TIES' trim)
    merger = session.new_merger()
    for index, tensor in enumerate(task_tensors):
        if session.needs_run_pass:
            session.begin_run(index, [tensor])
        merger.add(tensor)
    session.finish([merger])
    return merger.result()


__all__ = [
    "MERGE_METHODS",
    "MergeAccumulator",
    "MergeMethod",
    "MergeResult",
    "MergeSession",
    "MergeStats",
    "TensorMerger",
    "TensorStats",
    "available_methods",
    "get_merge_method",
    "merge",
    "merge_checkpoints",
    "merge_task_vectors",
    "register_merge_method",
]
