"""How many CPU threads torch uses, chosen on purpose rather than left to torch's default.

torch starts one intra-op thread per core. On a machine that other jobs share, those threads
spin against each other and a tiny model's training runs many times slower (10× was measured on
2 shared cores); the thread count also changes the order of floating-point sums, so the same
recipe trains slightly different weights with another count, and θ₀'s cache key holds it.
`hf-negmerge unlearn` and `run_unlearning` from Python therefore apply the same policy per
process: `OMP_NUM_THREADS` when the user set it, else one thread, which never oversubscribes the
cores (one process per core under `accelerate launch`), gives the built-in default the same
numbers on every machine, and lets a folder started by one resume in the other.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator, Mapping

DEFAULT_THREADS = 1


def chosen_thread_count(environ: Mapping[str, str] | None = None) -> int:
    """OMP_NUM_THREADS when it is a positive integer, else `DEFAULT_THREADS`."""
    requested = (os.environ if environ is None else environ).get("OMP_NUM_THREADS", "").strip()
    return int(requested) if requested.isdigit() and int(requested) >= 1 else DEFAULT_THREADS


def configure_torch_threads() -> int:
    """Set torch's intra-op thread count to `chosen_thread_count()` and return it."""
    import torch

    threads = chosen_thread_count()
    torch.set_num_threads(threads)
    return threads


@contextlib.contextmanager
def policy_threads() -> Iterator[int]:
    """Run a block with `chosen_thread_count()` threads, then give the caller's count back.

    Python callers of the pipeline get the CLI's count for the run without their own torch
    setting being changed for the rest of their program.
    """
    import torch

    previous = torch.get_num_threads()
    threads = chosen_thread_count()
    torch.set_num_threads(threads)
    try:
        yield threads
    finally:
        torch.set_num_threads(previous)
