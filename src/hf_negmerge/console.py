"""What `hf-negmerge unlearn` shows in the terminal: our bars, on the main process only.

Third-party progress bars (transformers' "Loading weights", "Writing model shards", datasets'
"Filter"/"Map", huggingface_hub downloads) and library warnings drown the run's own bars, so
they are switched off unless `--verbose`. Under `accelerate launch` / `torchrun` every process
runs the same command: only the process with RANK 0 prints, so nothing appears twice.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import warnings
from collections.abc import Iterator
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


@contextlib.contextmanager
def warnings_as_messages() -> Iterator[None]:
    """hf-negmerge's own warnings shown as `Warning: <message>` on stderr, each distinct message
    once for the whole command, whatever -W or PYTHONWARNINGS say; other warnings keep Python's
    display. Filters set inside (`terminal` under --quiet, a command hiding what it prints itself)
    still hide them.
    """
    from tqdm.auto import tqdm

    from .errors import NegMergeWarning

    shown: set[str] = set()
    python_display = warnings.showwarning

    def show(message: Warning | str, category: type[Warning], *where: Any, **more: Any) -> None:
        if not issubclass(category, NegMergeWarning):
            python_display(message, category, *where, **more)
        elif str(message) not in shown:
            shown.add(str(message))
            tqdm.write(f"Warning: {message}", file=sys.stderr)  # above any bar, not through it

    with warnings.catch_warnings():
        warnings.simplefilter("always", NegMergeWarning)  # repeats are dropped by `show`, by text
        warnings.showwarning = show
        yield


_LOGGERS = ("accelerate", "torch.distributed", "hf_negmerge", "")  # "": the root logger


@contextlib.contextmanager
def terminal(console: Console) -> Iterator[None]:
    """Libraries quiet as `console` asks while the command runs, restored afterwards (so a
    caller that runs the CLI in-process, like the tests, keeps its own settings).

    verbose: untouched. normal: third-party bars and library warnings off. quiet, or a process
    other than the main one: every warning and log below ERROR off too.
    """
    if console.verbosity == "verbose" and console.main:
        yield
        return
    import datasets
    import huggingface_hub.utils
    import transformers

    tf_logging = transformers.utils.logging
    saved = {
        "transformers": tf_logging.get_verbosity(),
        "transformers_bars": tf_logging.is_progress_bar_enabled(),
        "datasets": datasets.utils.logging.get_verbosity(),
        "datasets_bars": datasets.is_progress_bar_enabled(),
        "hub_bars": not huggingface_hub.utils.are_progress_bars_disabled(),
        "levels": {name: logging.getLogger(name).level for name in _LOGGERS},
    }
    silent = console.verbosity == "quiet" or not console.main
    with warnings.catch_warnings():
        tf_logging.set_verbosity_error()
        tf_logging.disable_progress_bar()
        datasets.utils.logging.set_verbosity_error()
        datasets.disable_progress_bars()
        huggingface_hub.utils.disable_progress_bars()
        for name in _LOGGERS[:2]:
            logging.getLogger(name).setLevel(logging.ERROR)
        warnings.filterwarnings("ignore", category=UserWarning, module=r"(torch|transformers|accelerate)\b")
        warnings.filterwarnings("ignore", category=FutureWarning)
        if silent:
            warnings.simplefilter("ignore")
            for name in _LOGGERS[2:]:
                logging.getLogger(name).setLevel(logging.ERROR)
        try:
            yield
        finally:
            tf_logging.set_verbosity(saved["transformers"])
            datasets.utils.logging.set_verbosity(saved["datasets"])
            if saved["transformers_bars"]:
                tf_logging.enable_progress_bar()
            if saved["datasets_bars"]:
                datasets.enable_progress_bars()
            if saved["hub_bars"]:
                huggingface_hub.utils.enable_progress_bars()
            for name, level in saved["levels"].items():
                logging.getLogger(name).setLevel(level)


def bar(total: int, description: str, enabled: bool, unit: str = "it", leave: bool = True) -> Any:
    """A tqdm bar of ours (disabled bars cost nothing and print nothing)."""
    from tqdm.auto import tqdm

    return tqdm(
        total=total, desc=description, unit=unit, disable=not enabled, leave=leave, dynamic_ncols=True
    )
