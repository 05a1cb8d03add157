"""NegMerge: keep the elements whose sign every run agrees on, and average them.

Kim et al., "NegMerge: Sign-Consensual Weight Merging for Machine Unlearning", ICML 2025
(arXiv:2410.05583). State: a running sum and a running sign sum; no run is held in memory.
"""

from __future__ import annotations

import math

import torch

from .base import MergeMethod, TensorMerger, register_merge_method

# Sign sums are kept in float32: exact integers up to 2**24 runs, and adding torch.sign(τ)
# needs no integer copy per run.
_MAX_RUNS = 2**24


class NegMergeMerger(TensorMerger):
    """Unanimous sign consensus (paper) or, as a labelled extension, a k-of-n consensus."""

    elementwise = True

    def _start(self, shape: torch.Size) -> None:
        self.total = torch.zeros(shape, dtype=self.dtype)
        self.sign_sum = torch.zeros(shape, dtype=torch.float32)
        # Unanimity is |Σ sign| == n; only a k-of-n rule also needs to know how many were non-zero.
        self.nonzero = None if self.config.is_unanimous else torch.zeros(shape, dtype=torch.float32)

    @property
    def state_fields(self) -> tuple[str, ...]:  # type: ignore[override]
        return ("total", "sign_sum") if self.config.is_unanimous else ("total", "sign_sum", "nonzero")

    def _fold(self, task_tensor: torch.Tensor) -> None:
        if self.count >= _MAX_RUNS:
            raise ValueError(f"NegMerge counts signs in float32 and supports at most {_MAX_RUNS} runs.")
        self.total += task_tensor
        signs = torch.sign(task_tensor).to(torch.float32)
        self.sign_sum += signs
        if self.nonzero is not None:
            self.nonzero += signs.abs_()

    def consensus_mask(self) -> torch.Tensor:
        """Boolean mask of the elements that pass the consensus rule."""
        if self.nonzero is None:
            return self.sign_sum.abs() == self.count
        agreeing = torch.maximum(self.nonzero + self.sign_sum, self.nonzero - self.sign_sum) / 2
        return agreeing >= math.ceil(self.config.consensus_fraction * self.count - 1e-9)

    def _finish(self) -> torch.Tensor:
        mean = self.total / self.count
        if self.nonzero is None:
            # |Σ sign| == n as a 0/1 factor, with no bool tensor and no torch.where (together
            # ~4x the cost of a whole run's fold): sign sums are integers in [-n, n], so
            # clamp(|Σ sign| − (n − 1), min=0) is exactly 1 there and 0 elsewhere. "+ 0.0" turns
            # the −0.0 of a dropped negative mean into +0.0 and leaves every other value as is.
            keep = self.sign_sum.abs().sub_(self.count - 1).clamp_(min=0).to(self.dtype)
            merged = mean.mul_(keep).add_(0.0)
            if math.isfinite(float(merged.sum())):
                return merged
            mean = self.total / self.count  # an overflowed sum (inf · 0 = nan): the masked path
        return torch.where(self.consensus_mask(), mean, torch.zeros((), dtype=self.dtype))


register_merge_method(
    MergeMethod(
        name="negmerge",
        merger=NegMergeMerger,
        summary="Mean of the task vectors on elements whose sign all runs share (0 elsewhere).",
        reference="Kim et al., NegMerge, ICML 2025, arXiv:2410.05583",
    )
)
