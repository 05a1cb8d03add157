"""Baselines NegMerge is compared with: task arithmetic, uniform mean, TIES and MagMax.

All keep O(1) state per element in the number of runs, so they stream like NegMerge. TIES
defaults to its authors' original semantics (the paper's baseline, via MagMax's copy of their
code): a whole-model top-k trim per run, which needs one pre-pass per run (`TiesSession`).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch

from ..errors import MergeError
from .base import MergeMethod, MergeSession, TensorMerger, accumulation_dtype, register_merge_method

if TYPE_CHECKING:
    from ..config import NegMergeConfig


class TaskArithmeticMerger(TensorMerger):
    """A single task vector, unchanged (Ilharco et al.'s negation uses it as is)."""

    state_fields = ("vector",)
    elementwise = True

    def _start(self, shape: torch.Size) -> None:
        self.vector = torch.zeros(shape, dtype=self.dtype)

    def _fold(self, task_tensor: torch.Tensor) -> None:
        self.vector = task_tensor.clone()

    def _finish(self) -> torch.Tensor:
        return self.vector.clone()


class UniformMerger(TensorMerger):
    """Plain mean of all task vectors (model soup of the fine-tuned runs)."""

    state_fields = ("total",)
    elementwise = True

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


def whole_model_threshold(
    magnitudes: torch.Tensor, density: float, total_elements: int | None = None
) -> torch.Tensor | None:
    """The original TIES trim threshold of one run from |τ| over its whole flattened model.

    The TIES authors' `topk_values_mask` (copied into MagMax's src/merging/ties.py) takes the
    `(d − int(d·density))`-th smallest magnitude and keeps every entry `>=` it: int(d·density) + 1
    entries when magnitudes are distinct, more on ties. None (keep everything) for density 1,
    where their code has no valid k. `total_elements` > numel counts the difference as zero
    entries (tensors in their flattened vector that never change, e.g. frozen ones).
    """
    size = magnitudes.numel()
    total = size if total_elements is None else total_elements
    if total < size:
        raise MergeError(
            f"NegMergeConfig.ties_total_elements={total_elements} is smaller than the {size} entries "
            "of the tensors taking part in the merge."
        )
    if density >= 1.0 or size == 0:
        return None
    rank = total - int(total * density)  # 1-based, over the d entries in ascending |τ|
    padding = total - size  # the zero entries sort first
    if rank <= padding:
        return magnitudes.new_zeros(())
    return torch.kthvalue(magnitudes.reshape(-1), rank - padding).values


class PeftTiesMerger(TensorMerger):
    """TIES-merging with peft's semantics (per-tensor trim, elect sign, disjoint mean), weights all 1.

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
        self._fold_trimmed(trim_by_magnitude(task_tensor, self.config.density))

    def _fold_trimmed(self, trimmed: torch.Tensor) -> None:
        positive, negative = trimmed > 0, trimmed < 0
        self.positive_sum += torch.where(positive, trimmed, 0)
        self.negative_sum += torch.where(negative, trimmed, 0)
        self.positive_count += positive
        self.negative_count += negative

    def _disjoint_mean(self, elect_positive: torch.Tensor) -> torch.Tensor:
        """Mean of the entries whose sign is the elected one (0 where none is)."""
        kept_sum = torch.where(elect_positive, self.positive_sum, self.negative_sum)
        kept_count = torch.where(elect_positive, self.positive_count, self.negative_count)
        return kept_sum / kept_count.clamp(min=1).to(self.dtype)

    def _finish(self) -> torch.Tensor:
        if self.config.majority_sign_method == "total":
            elect_positive = (self.positive_sum + self.negative_sum) >= 0
        else:
            elect_positive = self.positive_count >= self.negative_count
        return self._disjoint_mean(elect_positive)


@dataclass
class _SealedTies:
    """What an original-TIES result still needs once the running state is dropped."""

    provisional: torch.Tensor  # final everywhere except the zero-sum elements below (0 there)
    zero_sum_indices: torch.Tensor  # flat indices whose trimmed sum is 0 but some entry is not
    positive_means: torch.Tensor  # the result there if the model-wide majority sign is +
    negative_means: torch.Tensor  # ... and if it is − or 0 (their code then keeps negative entries)
    sign_vote: int


class OriginalTiesMerger(PeftTiesMerger):
    """TIES as its authors' code runs it (the paper's baseline): see `TiesSession`.

    Per run, entries below the run's whole-model threshold are zeroed; the sign of the running
    sum of trimmed entries (kept in fold order, like their `sum(dim=0)`) is elected, a sum of
    exactly 0 takes the model-wide majority sign from the session; the result is the mean of the
    entries of the elected sign (their `disjoint_merge` with "dis-mean").
    """

    state_fields = ("total", "positive_sum", "negative_sum", "positive_count", "negative_count")

    def __init__(self, config: NegMergeConfig, session: TiesSession | None = None) -> None:
        super().__init__(config)
        self.session = session
        self._sealed: _SealedTies | None = None

    def _start(self, shape: torch.Size) -> None:
        super()._start(shape)
        self.total = torch.zeros(shape, dtype=self.dtype)

    def _fold(self, task_tensor: torch.Tensor) -> None:
        if self.session is None:
            raise MergeError(
                "The original TIES merger needs a TiesSession (create it with session.new_merger())."
            )
        threshold = self.session.threshold(self.count)
        trimmed = (
            task_tensor if threshold is None else torch.where(task_tensor.abs() >= threshold, task_tensor, 0)
        )
        self.total += trimmed
        self._fold_trimmed(trimmed)

    def sign_vote(self) -> int:
        """(#elements with a positive sum) − (#with a negative sum): this tensor's share of the majority."""
        if self._sealed is not None:
            return self._sealed.sign_vote
        return int(torch.count_nonzero(self.total > 0)) - int(torch.count_nonzero(self.total < 0))

    def seal(self) -> None:
        zero_sum = (self.total == 0) & ((self.positive_count + self.negative_count) > 0)
        indices = torch.nonzero(zero_sum.reshape(-1)).squeeze(1)
        positive_means = self._disjoint_mean(torch.ones_like(zero_sum)).reshape(-1)[indices]
        negative_means = self._disjoint_mean(torch.zeros_like(zero_sum)).reshape(-1)[indices]
        self._sealed = _SealedTies(
            self._disjoint_mean(self.total > 0), indices, positive_means, negative_means, self.sign_vote()
        )
        for name in self.state_fields:
            setattr(self, name, None)

    def _finish(self) -> torch.Tensor:
        if self.session is None or self.session.majority_sign is None:
            raise MergeError(
                "The original TIES result needs the session's majority sign: call session.finish first."
            )
        positive_majority = self.session.majority_sign > 0
        if self._sealed is None:
            return self._disjoint_mean((self.total > 0) | ((self.total == 0) & positive_majority))
        sealed = self._sealed
        result = sealed.provisional.clone()
        chosen = sealed.positive_means if positive_majority else sealed.negative_means
        result.reshape(-1)[sealed.zero_sum_indices] = chosen
        return result


class TiesSession(MergeSession):
    """TIES over one merge: peft's per-tensor variant, or the original whole-model one (default).

    Original: `begin_run` flattens one run's |τ| over every tensor that takes part and records
    its trim threshold (one model's worth of memory, one run at a time; N numbers are kept);
    `finish` adds the mergers' sign votes into the model-wide majority sign, which their
    `resolve_zero_signs` gives to elements whose trimmed sum is exactly 0.
    """

    def __init__(self, method: MergeMethod, config: NegMergeConfig) -> None:
        super().__init__(method, config)
        self.original = config.ties_variant == "original"
        self.needs_run_pass = self.original and config.density < 1.0
        self.thresholds: dict[int, torch.Tensor | None] = {}
        self.majority_sign: int | None = None
        self.dtype = accumulation_dtype(config)

    def new_merger(self) -> TensorMerger:
        return OriginalTiesMerger(self.config, self) if self.original else PeftTiesMerger(self.config)

    def begin_run(self, run_index: int, task_tensors: Iterable[torch.Tensor]) -> None:
        if not self.needs_run_pass:
            return
        magnitudes = torch.cat([tensor.to(self.dtype).reshape(-1).abs() for tensor in task_tensors])
        self.thresholds[run_index] = whole_model_threshold(
            magnitudes, self.config.density, self.config.ties_total_elements
        )

    def threshold(self, run_index: int) -> torch.Tensor | None:
        if not self.needs_run_pass:
            return None
        if run_index not in self.thresholds:
            raise MergeError(
                f"Run #{run_index + 1} is folded without its whole-model trim threshold: "
                "call session.begin_run with all of its task tensors first."
            )
        return self.thresholds[run_index]

    def finish(self, mergers: Iterable[TensorMerger]) -> None:
        if self.original:
            vote = sum(merger.sign_vote() for merger in mergers if isinstance(merger, OriginalTiesMerger))
            self.majority_sign = (vote > 0) - (vote < 0)


class MagMaxMerger(TensorMerger):
    """Per element, the entry of largest magnitude across runs; the LAST run wins exact ties.

    MagMax's `merge_max_abs` (src/merging/task_vectors.py) replaces the running value when
    `current.abs() >= max.abs()`, so of two runs with equal magnitude the later one is kept.
    """

    state_fields = ("value",)
    elementwise = True

    def _start(self, shape: torch.Size) -> None:
        self.value = torch.zeros(shape, dtype=self.dtype)

    def _fold(self, task_tensor: torch.Tensor) -> None:
        self.value = torch.where(task_tensor.abs() >= self.value.abs(), task_tensor, self.value)

    def _finish(self) -> torch.Tensor:
        return self.value.clone()


def _ties_merger(config: NegMergeConfig) -> TensorMerger:
    """A merger outside a session: the original variant still needs `TiesSession` to fold."""
    return OriginalTiesMerger(config) if config.ties_variant == "original" else PeftTiesMerger(config)


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
        merger=_ties_merger,
        summary="Trim by magnitude, elect a sign, mean of the agreeing runs (original or peft semantics).",
        reference="Yadav et al., TIES-Merging, NeurIPS 2023",
        session=TiesSession,
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
