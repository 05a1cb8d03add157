"""Baselines NegMerge is compared with: task arithmetic, uniform mean, TIES and MagMax.

All keep O(1) state per element in the number of runs, so they stream like NegMerge.
"""

from __future__ import annotations

import torch

from .base import MergeMethod, TensorMerger, register_merge_method


class TaskArithmeticMerger(TensorMerger):
    """A single task vector, unchanged (Ilharco et al.'s negation uses it as is)."""

    state_fields = ("vector",)

    def _start(self, shape: torch.Size) -> None:
        self.vector = torch.zeros(shape, dtype=self.dtype)

    def _fold(self, task_tensor: torch.Tensor) -> None:
        self.vector = task_tensor.clone()

    def _finish(self) -> torch.Tensor:
        return self.vector.clone()


class UniformMerger(TensorMerger):
    """Plain mean of all task vectors (model soup of the fine-tuned runs)."""

    state_fields = ("total",)

    def _start(self, shape: torch.Size) -> None:
        self.total = torch.zeros(shape, dtype=self.dtype)

    def _fold(self, task_tensor: torch.Tensor) -> None:
        self.total += task_tensor

    def _finish(self) -> torch.Tensor:
        return self.total / self.count


def trim_by_magnitude(tensor: torch.Tensor, density: float) -> torch.Tensor:
    """Keep the `int(density · numel)` largest-magnitude entries (as peft's TIES does)."""
    if density >= 1.0:
        return tensor
    keep = int(density * tensor.numel())
    flat = tensor.reshape(-1)
    mask = torch.zeros_like(flat)
    mask[torch.topk(flat.abs(), k=keep, largest=True).indices] = 1
    return (flat * mask).reshape(tensor.shape)


class TiesMerger(TensorMerger):
    """TIES-merging with peft's semantics (trim, elect sign, disjoint mean), weights all 1.

    Sums and counts are kept per sign, so the elected sign and the mean of the runs that agree
    with it come out at the end without holding the runs: equal to
    `peft.utils.merge_utils.ties(tensors, ones, density, majority_sign_method)`.
    """

    state_fields = ("positive_sum", "negative_sum", "positive_count", "negative_count")

    def _start(self, shape: torch.Size) -> None:
        self.positive_sum = torch.zeros(shape, dtype=self.dtype)
        self.negative_sum = torch.zeros(shape, dtype=self.dtype)
        self.positive_count = torch.zeros(shape, dtype=torch.int32)
        self.negative_count = torch.zeros(shape, dtype=torch.int32)

    def _fold(self, task_tensor: torch.Tensor) -> None:
        trimmed = trim_by_magnitude(task_tensor, self.config.density)
        positive, negative = trimmed > 0, trimmed < 0
        self.positive_sum += torch.where(positive, trimmed, 0)
        self.negative_sum += torch.where(negative, trimmed, 0)
        self.positive_count += positive
        self.negative_count += negative

    def _finish(self) -> torch.Tensor:
        if self.config.majority_sign_method == "total":
            elect_positive = (self.positive_sum + self.negative_sum) >= 0
        else:
            elect_positive = self.positive_count >= self.negative_count
        kept_sum = torch.where(elect_positive, self.positive_sum, self.negative_sum)
        kept_count = torch.where(elect_positive, self.positive_count, self.negative_count)
        return kept_sum / kept_count.clamp(min=1).to(self.dtype)


class MagMaxMerger(TensorMerger):
    """Per element, the entry of largest magnitude across runs (first run wins exact ties)."""

    state_fields = ("value",)

    def _start(self, shape: torch.Size) -> None:
        self.value = torch.zeros(shape, dtype=self.dtype)

    def _fold(self, task_tensor: torch.Tensor) -> None:
        self.value = torch.where(task_tensor.abs() > self.value.abs(), task_tensor, self.value)

    def _finish(self) -> torch.Tensor:
        return self.value.clone()


register_merge_method(
    MergeMethod(
        name="task_arithmetic",
        merger=TaskArithmeticMerger,
        summary="One run's task vector (negated at apply time).",
        reference="Ilharco et al., Editing Models with Task Arithmetic, ICLR 2023",
        max_models=1,
    )
)
register_merge_method(
    MergeMethod(
        name="uniform",
        merger=UniformMerger,
        summary="Mean of all task vectors.",
        reference="Wortsman et al., Model soups, ICML 2022",
    )
)
register_merge_method(
    MergeMethod(
        name="ties",
        merger=TiesMerger,
        summary="Trim by magnitude, elect a sign, mean of the agreeing runs (peft semantics).",
        reference="Yadav et al., TIES-Merging, NeurIPS 2023",
    )
)
register_merge_method(
    MergeMethod(
        name="magmax",
        merger=MagMaxMerger,
        summary="Per element, the largest-magnitude change across runs.",
        reference="Marczak et al., MagMax, ECCV 2024",
    )
)
