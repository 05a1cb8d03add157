"""The merge-method registry and the per-tensor merger interface every method implements.

A merger folds the task tensors of ONE parameter, one run at a time, into a running state whose
size does not depend on how many runs there are. That single interface serves the in-memory
`merge`, the accumulator that training feeds as runs finish, and the streaming merge from disk.

A method whose per-tensor arithmetic needs numbers about the whole model (the original TIES: a
trim threshold per run over the whole flattened task vector, and a model-wide majority sign)
adds a `MergeSession`: it sees each run's task tensors once before they are folded, and all the
mergers once after the last fold, so it still never holds more than one run.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch

from ..config import MERGE_METHOD_NAMES
from ..errors import MergeError

if TYPE_CHECKING:
    from ..config import NegMergeConfig

_DTYPES = {"float32": torch.float32, "float64": torch.float64}


def accumulation_dtype(config: NegMergeConfig) -> torch.dtype:
    """The dtype task tensors are folded in (and a session's pre-pass must see them in)."""
    return _DTYPES[config.accumulation_dtype]


class TensorMerger(ABC):
    """Running state of one merge method for one parameter tensor."""

    #: names of the tensor attributes that make up the running state (saved for resume)
    state_fields: tuple[str, ...] = ()
    #: True when each element's result depends only on that element's task values (no whole-
    #: tensor or session-wide numbers): a merger fed slices of a tensor then gives that slice of
    #: the result, so the streaming merge folds cache-sized blocks. `_fold` must not keep a
    #: reference to its argument (the caller reuses the buffer).
    elementwise: bool = False

    def __init__(self, config: NegMergeConfig) -> None:
        self.config = config
        self.dtype = accumulation_dtype(config)
        self.count = 0
        self.shape: tuple[int, ...] | None = None
        self._sealed_result: torch.Tensor | None = None

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
        if self._sealed_result is not None:
            return self._sealed_result
        return self._finish()

    @abstractmethod
    def _start(self, shape: torch.Size) -> None: ...

    @abstractmethod
    def _fold(self, task_tensor: torch.Tensor) -> None: ...

    @abstractmethod
    def _finish(self) -> torch.Tensor: ...

    def seal(self) -> None:
        """Called after the last fold when the merger is kept only for `result()`: drop the state.

        By default the result is computed now, so a streaming merge holds one result per tensor
        rather than every tensor's running state; methods whose result waits for
        `MergeSession.finish` override it to keep just what that needs.
        """
        self._sealed_result = self.result()
        for name in self.state_fields:
            setattr(self, name, None)

    def restart(self) -> None:
        """Forget every fold but keep the state's memory, to fold another slice of the same shape.

        The streaming merge reuses one merger per block size: fresh state per block made the
        allocator hand memory back to the OS and fault it in again. Assumes `_start` makes zeros.
        """
        for name in self.state_fields:
            getattr(self, name).zero_()
        self.count = 0
        self._sealed_result = None

    def state(self) -> dict[str, torch.Tensor]:
        return {name: getattr(self, name) for name in self.state_fields}

    def load_state(self, state: dict[str, torch.Tensor], count: int) -> None:
        """Restore a running state saved with `state()` after `count` runs were folded."""
        self.shape = tuple(state[self.state_fields[0]].shape)
        self._start(torch.Size(self.shape))
        for name in self.state_fields:  # cast: states saved by older versions may use other dtypes
            setattr(self, name, state[name].to(getattr(self, name).dtype))
        self.count = count


class MergeSession:
    """Model-wide steps of one merge, around the per-tensor mergers (by default: none).

    Callers (the accumulator, the streaming merge, `merge`) create every merger with
    `new_merger()`, call `begin_run` with each run's task tensors before folding them when
    `needs_run_pass` is true, and call `finish` with every merger before reading any result.
    """

    #: whether `begin_run` must see each run's task tensors before they are folded
    needs_run_pass: bool = False

    def __init__(self, method: MergeMethod, config: NegMergeConfig) -> None:
        self.method = method
        self.config = config

    def new_merger(self) -> TensorMerger:
        return self.method.merger(self.config)

    def begin_run(self, run_index: int, task_tensors: Iterable[torch.Tensor]) -> None:
        """See every task tensor of run `run_index` (0-based fold order) once, before any is folded."""

    def finish(self, mergers: Iterable[TensorMerger]) -> None:
        """See every merger once after the last fold, before any `result()`."""


@dataclass(frozen=True)
class MergeMethod:
    """A registered merge method: how to build its merger and what it needs."""

    name: str
    merger: Callable[[NegMergeConfig], TensorMerger]
    summary: str
    reference: str
    min_models: int = 1
    max_models: int | None = None
    session: Callable[[MergeMethod, NegMergeConfig], MergeSession] = MergeSession

    def start(self, config: NegMergeConfig) -> MergeSession:
        """A session for one merge with `config` (see `MergeSession`)."""
        return self.session(self, config)

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
    """Add a merge method; its name becomes a valid `MergeConfig.method` (config.MERGE_METHOD_NAMES)."""
    if method.name in MERGE_METHODS:
        raise ValueError(f"Merge method '{method.name}' is already registered.")
    MERGE_METHODS[method.name] = method
    if method.name not in MERGE_METHOD_NAMES:
        MERGE_METHOD_NAMES.append(method.name)
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
