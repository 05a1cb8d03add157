"""The compiled NegMerge fold (`_negmerge_kernel.c`): when it applies, and a checked way to call it.

A block of every run goes through difference, sign test, running sum and norm in one pass in
C instead of five torch ops per run, each a Python call: the merge then runs near the speed of
reading the files (docs/benchmarks.md). It covers the paper's rule only (unanimous sign, float32
checkpoints folded in float32); k-of-n consensus, other methods and dtypes use the generic fold,
whose results it reproduces bit for bit. Set `HF_NEGMERGE_KERNEL=0` to use the generic fold
anyway (e.g. to compare the two).
"""

from __future__ import annotations

import ctypes
import os
from collections.abc import Sequence

import torch

from ..config import MergeConfig

try:  # built by setup.py where a C compiler is found (optional extension)
    from . import _negmerge_kernel
except ImportError:  # pragma: no cover - depends on the install
    _negmerge_kernel = None

#: environment switch: "0" makes every merge use the generic torch fold
KERNEL_ENV = "HF_NEGMERGE_KERNEL"


def kernel_available() -> bool:
    """Whether the compiled fold was built, can read its blocks (`os.preadv`: not on Windows) and is on."""
    return _negmerge_kernel is not None and hasattr(os, "preadv") and os.environ.get(KERNEL_ENV, "1") != "0"


def kernel_applies(config: MergeConfig, dtypes: Sequence[torch.dtype]) -> bool:
    """Whether the compiled fold computes this merge: unanimous NegMerge on float32 tensors."""
    return (
        kernel_available()
        and config.method == "negmerge"
        and config.is_unanimous
        and config.accumulation_dtype == "float32"
        and all(dtype == torch.float32 for dtype in dtypes)
    )


def _bytes_of(tensor: torch.Tensor) -> memoryview:
    """A writable byte view of a contiguous tensor's memory (valid while the tensor lives)."""
    return memoryview(
        (ctypes.c_char * (tensor.numel() * tensor.element_size())).from_address(tensor.data_ptr())
    )


class RunBlocks:
    """One worker's buffers: a block of the base and of every run, read in place, reused per block.

    `views` are byte views of the base's and each run's buffer, in that order, for `os.preadv`;
    the run addresses are kept in an int64 tensor the kernel reads as a pointer array.
    """

    def __init__(self, runs: int, block: int) -> None:
        self.block = block
        self.base = torch.empty(block, dtype=torch.float32)
        self.runs = torch.empty(runs, block, dtype=torch.float32)
        self.addresses = torch.tensor([row.data_ptr() for row in self.runs], dtype=torch.int64)
        self.views = [_bytes_of(self.base), *(_bytes_of(row) for row in self.runs)]

    def fold(self, out: torch.Tensor, squared: torch.Tensor) -> tuple[int, float]:
        """Merge the first `out.numel()` elements of every buffer into `out`.

        `squared` (float64, one per run) accumulates each run's squared task norm. Returns the
        number of nonzero merged values and their squared norm.
        """
        size = out.numel()
        if not (out.dtype == torch.float32 and out.is_contiguous() and size <= self.block):
            raise ValueError(f"out must be contiguous float32 with at most {self.block} elements.")
        if squared.dtype != torch.float64 or squared.numel() != len(self.runs):
            raise ValueError(f"squared must hold {len(self.runs)} float64 values.")
        assert _negmerge_kernel is not None, "kernel_applies() is checked before any fold"
        return _negmerge_kernel.fold_block(
            out.data_ptr(),
            self.base.data_ptr(),
            self.addresses.data_ptr(),
            len(self.runs),
            size,
            squared.data_ptr(),
        )
