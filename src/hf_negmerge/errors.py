"""Exceptions and warnings that name what went wrong (file, key, shape, option) so users can fix it."""

import contextlib
import os
import sys
import warnings

_PACKAGE_DIR = os.path.dirname(__file__) + os.sep
#: frames a warning skips: the package's own, and contextlib's (the package's `with` blocks)
_LIBRARY_FILES = (_PACKAGE_DIR, contextlib.__file__)


class NegMergeError(Exception):
    """Base class for every error raised on purpose by hf-negmerge."""


class ConfigError(NegMergeError, ValueError):
    """A configuration value or recipe key is invalid."""


class CheckpointError(NegMergeError, ValueError):
    """A checkpoint is missing, corrupt, non-finite or incompatible with the others."""


class MergeError(NegMergeError, ValueError):
    """A merge cannot be carried out (e.g. too few task vectors for the method)."""


class HubUnavailableError(NegMergeError, OSError):
    """The Hugging Face Hub cannot be reached (offline machine, no network, HF_HUB_OFFLINE set)."""


class OutputError(NegMergeError, OSError):
    """An output cannot or must not be written (path too long, not writable, not ours, disk full)."""


class NegMergeWarning(UserWarning):
    """Base class for every warning raised on purpose by hf-negmerge (the CLI prints them as messages)."""


def warn(message: str, category: type[NegMergeWarning]) -> None:
    """`warnings.warn` pointed at the first caller outside hf-negmerge (and the `contextlib`
    frames of its `with` blocks), so that the warning names the user's line and filters by
    module match the user's code, not the library's."""
    level, frame = 2, sys._getframe(1)
    while frame.f_back is not None and frame.f_code.co_filename.startswith(_LIBRARY_FILES):
        level, frame = level + 1, frame.f_back
    warnings.warn(message, category, stacklevel=level)
