"""The merge-method registry and the per-tensor merger interface every method implements.

A merger folds the task tensors of ONE parameter, one run at a time, into a running state whose
size does not depend on how many runs there are. That single interface serves the in-memory
`merge`, the accumulator that training feeds as runs finish, and the streaming merge from disk.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch

from ..errors import MergeError

if TYPE_CHECKING:
    from ..config import NegMergeConfig

_DTYPES = {"float32": torch.float32, "float64": torch.float64}


class TensorMerger(ABC):
    """Running state of one merge method for one parameter tensor."""

    #: names of the tensor attributes that make up the running state (saved for resume)
    state_fields: tuple[str, ...] = ()

    def __init__(self, config: NegMergeConfig) -> None:
        self.config = config
        self.dtype = _DTYPES[config.accumulation_dtype]
        self.count = 0
        self.shape: tuple[int, ...] | None = None

    def add(self, task_tensor: torch.Tensor) -> None:
        """Fold in one run's task tensor (any float dtype; upcast to the accumulation dtype)."""
        if self.shape is None:
            self.shape = tuple(task_tensor.shape)
            self._start(task_tensor.shape)
        elif tuple(task_tensor.shape) != self.shape:
            raise MergeError(f"Task tensor of shape {tuple(task_tensor.shape)} does not match {self.shape}.")
        self._fold(task_tensor.to(self.dtype))
        self.count += 1

    def result(self) -> torch.Tensor:
        """The merged task tensor (accumulation dtype)."""
        if self.count == 0:
            raise MergeError("No task tensor was added; nothing to merge.")
        return self._finish()

    @abstractmethod
    def _start(self, shape: torch.Size) -> None: ...

    @abstractmethod
    def _fold(self, task_tensor: torch.Tensor) -> None: ...

    @abstractmethod
    def _finish(self) -> torch.Tensor: ...

    def state(self) -> dict[str, torch.Tensor]:
        return {name: getattr(self, name) for name in self.state_fields}

    def load_state(self, state: dict[str, torch.Tensor], count: int) -> None:
        """Restore a running state saved with `state()` after `count` runs were folded."""
        self.shape = tuple(state[self.state_fields[0]].shape)
        self._start(torch.Size(self.shape))
        for name in self.state_fields:  # cast: states saved by older versions may use other dtypes
            setattr(self, name, state[name].to(getattr(self, name).dtype))
        self.count = count


@dataclass(frozen=True)
class MergeMethod:
    """A registered merge method: how to build its merger and what it needs."""

    name: str
    merger: Callable[[NegMergeConfig], TensorMerger]
    summary: str
    reference: str
    min_models: int = 1
    max_models: int | None = None

    def check_count(self, count: int) -> None:
        if count < self.min_models:
            raise MergeError(
                f"Merge method '{self.name}' needs at least {self.min_models} task vector(s), got {count}."
            )
        if self.max_models is not None and count > self.max_models:
            raise MergeError(
                f"Merge method '{self.name}' takes at most {self.max_models} task vector(s), got {count}"
                + ("; use 'uniform' or 'negmerge' to combine several." if self.max_models == 1 else ".")
            )


MERGE_METHODS: dict[str, MergeMethod] = {}


def register_merge_method(method: MergeMethod) -> MergeMethod:
    if method.name in MERGE_METHODS:
        raise ValueError(f"Merge method '{method.name}' is already registered.")
    MERGE_METHODS[method.name] = method
    return method


def get_merge_method(name: str) -> MergeMethod:
    try:
        return MERGE_METHODS[name]
    except KeyError:
        raise MergeError(
            f"Unknown merge method '{name}'; choose one of {', '.join(MERGE_METHODS)}."
        ) from None


def available_methods() -> list[str]:
    return list(MERGE_METHODS)
