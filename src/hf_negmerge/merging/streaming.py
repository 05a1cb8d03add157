"""The streaming merge's inner loop: every tensor folded from N checkpoints in cache-sized blocks.

Folding a whole tensor per run streams the merger's state (sum, sign count) through main memory
once per run. Folding one block of `BLOCK_ELEMENTS` through all N runs keeps the state, the task
block and its signs in the core's cache, so main memory is read once: the checkpoints' pages,
through zero-copy views of the mapped files (`CheckpointReader.view`), handed back as soon as
they are folded so the resident set stays flat in N. Several tensors are folded at once, one per
worker thread (torch releases the GIL). Methods whose result needs more than one element at a
time (TIES' trim) fold whole tensors, as before.

Unanimous NegMerge on float32 checkpoints, the paper's case, goes through the compiled kernel
instead (`kernel.py`, `fold_compiled`): each block of every file is read with one `pread` into a
buffer the worker reuses, and folded in one pass; no file is mapped.
"""

from __future__ import annotations

import contextlib
import math
import os
import queue
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import torch
from tqdm.auto import tqdm

from ..checkpoints import CheckpointReader
from ..task_vector import check_finite
from .base import MergeSession, TensorMerger, accumulation_dtype
from .kernel import RunBlocks, kernel_applies
from .stats import TensorStats

#: elements per block: 1 MiB of float32, so a block's task values, sum and signs stay in L2/L3
BLOCK_ELEMENTS = 1 << 18
#: mapped bytes (all N + 1 files together) a worker reads before handing their pages back
RELEASE_BYTES = 64 << 20
#: bytes of one worker's read buffers for the compiled fold (base + N runs): they stay in L3
COMPILED_BUFFER_BYTES = 8 << 20


@dataclass
class FoldedTensor:
    """One tensor's outcome and its runs' squared task-vector norms (in fold order).

    Blocked methods give the merged values and their stats at once; whole-tensor methods give
    the sealed merger, whose result waits for `MergeSession.finish`.
    """

    squared_norms: list[float]
    merged: torch.Tensor | None = None
    stats: TensorStats | None = None
    merger: TensorMerger | None = None


def _squared_norm(
    task: torch.Tensor, key: str, base: torch.Tensor, tuned: torch.Tensor, sources: tuple[object, object]
) -> float:
    """‖task‖², which is also the finiteness test: a NaN or Inf input makes it non-finite.

    Only then is the exact scan run, to name the file; a float32 overflow of the square (all
    inputs finite) is recomputed in float64.
    """
    value = float(torch.dot(task, task))  # float32 per block, summed in float64: ~1e-6 relative
    if math.isfinite(value):
        return value
    check_finite(base, key, sources[0])
    check_finite(tuned, key, sources[1])
    return float(torch.linalg.vector_norm(task, dtype=torch.float64)) ** 2


def fold_blocks(
    key: str, session: MergeSession, base: CheckpointReader, runs: Sequence[CheckpointReader]
) -> FoldedTensor:
    """Merge `key` block by block: each block through every run, then into the result.

    The task values are computed exactly as the whole-tensor fold computes them (checkpoint
    minus base, both in the accumulation dtype), and an elementwise merger folds the runs in the
    same order, so the result is bit-identical.
    """
    dtype = accumulation_dtype(session.config)
    base_view = base.view(key)
    shape = base_view.shape
    base_flat = base_view.reshape(-1)
    tuned_flat = [run.view(key).reshape(-1) for run in runs]
    size = base_flat.numel()
    merged = torch.empty(size, dtype=dtype)
    squared = [0.0] * len(runs)
    kept, merged_squared = 0, 0.0
    task = torch.empty(min(size, BLOCK_ELEMENTS), dtype=dtype)
    release_every = max(BLOCK_ELEMENTS, RELEASE_BYTES // ((len(runs) + 1) * base_flat.element_size()))
    released = 0
    merger: TensorMerger | None = None
    for start in range(0, size, BLOCK_ELEMENTS):
        stop = min(size, start + BLOCK_ELEMENTS)
        base_block = base_flat[start:stop].to(dtype)  # a view, not a copy, when the dtypes match
        task_block = task[: stop - start]
        if merger is None or merger.shape != (stop - start,):
            merger = session.new_merger()
        else:
            merger.restart()
        for index, (run, flat) in enumerate(zip(runs, tuned_flat, strict=True)):
            tuned_block = flat[start:stop]
            torch.sub(tuned_block.to(dtype), base_block, out=task_block)
            sources = (base.path_of(key), run.path_of(key))
            squared[index] += _squared_norm(task_block, key, base_block, tuned_block, sources)
            merger.add(task_block)
        block = merger.result()
        merged[start:stop] = block
        kept += int(block.bool().sum())  # = count_nonzero, which is ~10x slower on mixed zeros
        merged_squared += float(torch.dot(block, block))
        if stop - released >= release_every or stop == size:
            for reader, flat in zip((base, *runs), (base_flat, *tuned_flat), strict=True):
                reader.release(key, flat[released:stop])
            released = stop
    stats = TensorStats(size, kept, math.sqrt(merged_squared))
    return FoldedTensor(squared, merged=merged.reshape(shape), stats=stats)


def fold_whole(
    key: str, session: MergeSession, base: CheckpointReader, runs: Sequence[CheckpointReader]
) -> FoldedTensor:
    """Merge `key` one whole tensor per run (methods that are not elementwise)."""
    merger = session.new_merger()
    base_tensor = base[key].to(merger.dtype)
    squared = []
    for run in runs:
        tuned = run[key]
        converted = tuned.to(merger.dtype)
        # subtract in place only into a copy made here, never into what the reader returned
        task_tensor = converted.sub_(base_tensor) if converted is not tuned else tuned - base_tensor
        squared_norm = float(torch.linalg.vector_norm(task_tensor, dtype=torch.float64)) ** 2
        if not math.isfinite(squared_norm):  # only now pay for the exact scan that names the culprit
            check_finite(base_tensor, key, base.path_of(key))
            check_finite(tuned, key, run.path_of(key))
        squared.append(squared_norm)
        merger.add(task_tensor)
    merger.seal()
    return FoldedTensor(squared, merger=merger)


def compiled_block_elements(runs: int) -> int:
    """Elements per block of the compiled fold: 64 Ki, fewer when N + 1 blocks exceed the budget."""
    fitting = COMPILED_BUFFER_BYTES // (4 * (runs + 1))
    return max(4096, min(1 << 16, fitting // 64 * 64))


def fold_compiled(
    key: str, base: CheckpointReader, runs: Sequence[CheckpointReader], buffers: RunBlocks
) -> FoldedTensor:
    """Merge `key` with the compiled kernel: per block, one read of each file, one fold.

    Bit-identical to `fold_blocks` (same differences, sums in run order, same division); the
    squared norms are summed in another order (~1e-6 relative). A non-finite norm is traced to
    its file as in the generic fold, and recomputed in float64 when every input is finite.
    """
    shape = base.shape(key)
    size = math.prod(shape)
    locations = [reader.locate(key) for reader in (base, *runs)]
    merged = torch.empty(size, dtype=torch.float32)
    squared = torch.zeros(len(runs), dtype=torch.float64)
    kept, merged_squared = 0, 0.0
    for start in range(0, size, buffers.block):
        stop = min(size, start + buffers.block)
        length, offset = 4 * (stop - start), 4 * start
        for location, view in zip(locations, buffers.views, strict=True):
            target = view[:length]
            done = os.preadv(location.descriptor, [target], location.offset + offset)
            if done != length:  # short read: finish it, or name the truncated file
                location.read_exactly(target, offset, done)
        nonzero, block_squared = buffers.fold(merged[start:stop], squared)
        kept += nonzero
        merged_squared += block_squared
    norms = squared.tolist()
    for index, value in enumerate(norms):
        if not math.isfinite(value):
            base_tensor, tuned = base[key], runs[index][key]
            check_finite(base_tensor, key, base.path_of(key))
            check_finite(tuned, key, runs[index].path_of(key))
            norms[index] = float(torch.linalg.vector_norm(tuned.double() - base_tensor.double())) ** 2
    stats = TensorStats(size, kept, math.sqrt(merged_squared))
    return FoldedTensor(norms, merged=merged.reshape(shape), stats=stats)


@contextlib.contextmanager
def _one_thread_per_op() -> Iterator[None]:
    """Each torch op on one thread while the merge lasts: the workers are the parallelism.

    Splitting every block-sized op over intra-op threads costs a barrier per op, which on a
    shared machine (threads descheduled while others spin) was 7-14x slower than one thread.
    """
    previous = torch.get_num_threads()
    if previous == 1:
        yield
        return
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def fold_tensors(
    keys: Sequence[str],
    session: MergeSession,
    base: CheckpointReader,
    runs: Sequence[CheckpointReader],
    workers: int,
    progress: tqdm | None = None,
) -> dict[str, FoldedTensor]:
    """Fold every key with `workers` threads (keys in parallel, results in key order)."""
    generic: Callable[..., FoldedTensor] = fold_blocks if session.new_merger().elementwise else fold_whole
    workers = max(1, min(workers, len(keys)))
    compiled = {
        key
        for key in keys
        if kernel_applies(session.config, [reader.dtype(key) for reader in (base, *runs)])
        and all(reader.locate(key) is not None for reader in (base, *runs))
    }
    buffers: queue.SimpleQueue[RunBlocks] = queue.SimpleQueue()
    for _ in range(workers if compiled else 0):
        buffers.put(RunBlocks(len(runs), compiled_block_elements(len(runs))))

    def fold(key: str) -> FoldedTensor:
        if key not in compiled:
            return generic(key, session, base, runs)
        worker_buffers = buffers.get()  # one set per worker: never shared by two threads
        try:
            return fold_compiled(key, base, runs, worker_buffers)
        finally:
            buffers.put(worker_buffers)

    # largest first, so no worker is left with a big tensor while the others are done
    order = sorted(keys, key=lambda key: math.prod(base.shape(key)), reverse=True)
    folded: dict[str, FoldedTensor] = {}
    with _one_thread_per_op(), ThreadPoolExecutor(workers) as pool:
        results = pool.map(fold, order) if workers > 1 else (fold(key) for key in order)
        for key, outcome in zip(order, results, strict=True):
            folded[key] = outcome
            if progress is not None:
                progress.update()
    return {key: folded[key] for key in keys}
