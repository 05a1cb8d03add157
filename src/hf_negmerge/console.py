"""What `hf-negmerge unlearn` shows in the terminal: our bars, on the main process only.

Third-party progress bars (transformers' "Loading weights", "Writing model shards", datasets'
"Filter"/"Map", huggingface_hub downloads) and library warnings drown the run's own bars, so
they are switched off unless `--verbose`. Under `accelerate launch` / `torchrun` every process
runs the same command: only the process with RANK 0 prints, so nothing appears twice.
"""

from __future__ import annotations

import logging
import os
import warnings
from dataclasses import dataclass
from typing import Any

VERBOSITIES = ("quiet", "normal", "verbose")


def is_main_process() -> bool:
    """True on the process that prints: RANK 0 (set by accelerate launch and torchrun), or alone.

    Read from the environment so the CLI can decide before any accelerate state exists.
    """
    return os.environ.get("RANK", "0") == "0"


@dataclass(frozen=True)
class Console:
    """How much this process shows: `verbosity` (quiet / normal / verbose) and whether bars are on."""

    verbosity: str = "normal"
    bars: bool = True

    def __post_init__(self) -> None:
        if self.verbosity not in VERBOSITIES:
            raise ValueError(f"verbosity {self.verbosity!r} is not one of {VERBOSITIES}.")

    @property
    def main(self) -> bool:
        return is_main_process()

    @property
    def progress(self) -> bool:
        """Our own bars: on the main process, not quiet, not --no-progress."""
        return self.bars and self.verbosity != "quiet" and self.main

    def say(self, text: str) -> None:
        """A line of the normal stream (plan, notes): main process, not quiet."""
        if self.verbosity != "quiet" and self.main:
            print(text, flush=True)


def quiet_libraries() -> None:
    """Third-party bars and library warnings off for the rest of this process (not for --verbose).

    Errors still surface: they are raised, not logged. Our own `OutcomeWarning`s are printed by
    the CLI with the summary.
    """
    import datasets
    import huggingface_hub.utils
    import transformers

    transformers.utils.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    datasets.disable_progress_bars()
    datasets.utils.logging.set_verbosity_error()
    huggingface_hub.utils.disable_progress_bars()
    for name in ("accelerate", "torch.distributed"):
        logging.getLogger(name).setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", category=UserWarning, module=r"(torch|transformers|accelerate)\b")
    warnings.filterwarnings("ignore", category=FutureWarning)


def silence_other_processes() -> None:
    """On a process that is not the main one: no bars, no warnings, no library logs at all."""
    quiet_libraries()
    warnings.simplefilter("ignore")
    logging.getLogger().setLevel(logging.ERROR)


def bar(total: int, description: str, enabled: bool, unit: str = "it", leave: bool = True) -> Any:
    """A tqdm bar of ours (disabled bars cost nothing and print nothing)."""
    from tqdm.auto import tqdm

    return tqdm(
        total=total, desc=description, unit=unit, disable=not enabled, leave=leave, dynamic_ncols=True
    )
