"""Exceptions that name what went wrong (file, key, shape, option) so users can fix it."""


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
