"""Decide where pretrained weights come from (local folder, Hub, Hub cache) before loading them.

transformers retries an unreachable Hub for about a minute before it gives up; checking first
lets an offline machine fail in milliseconds with a message that says what to do instead.
"""

from __future__ import annotations

import hashlib
import os
import re
import socket
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from ..errors import CheckpointError, HubUnavailableError

_REPO_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")
_TRUE_FLAGS = {"1", "true", "yes", "on"}
PROBE_TIMEOUT_S = 3.0


@dataclass(frozen=True)
class WeightsSource:
    """A resolved `name_or_path`: what to pass to `from_pretrained` and with which extra kwargs."""

    location: str
    is_local: bool
    load_kwargs: dict[str, Any] = field(default_factory=dict)


def _offline_flag_set() -> bool:
    from huggingface_hub import constants

    flags = (os.environ.get("HF_HUB_OFFLINE", ""), os.environ.get("TRANSFORMERS_OFFLINE", ""))
    return bool(constants.HF_HUB_OFFLINE) or any(flag.strip().lower() in _TRUE_FLAGS for flag in flags)


def hub_reachable(timeout_s: float = PROBE_TIMEOUT_S) -> bool:
    """True when the offline flags are unset and a TCP connection to the Hub endpoint opens."""
    from huggingface_hub import constants

    if _offline_flag_set():
        return False
    endpoint = urlparse((os.environ.get("HF_ENDPOINT") or constants.ENDPOINT).rstrip("/"))
    port = endpoint.port or (443 if endpoint.scheme == "https" else 80)
    try:
        with socket.create_connection((endpoint.hostname or "", port), timeout=timeout_s):
            return True
    except OSError:
        return False


def _cached_on_disk(repo_id: str, revision: str | None) -> bool:
    from huggingface_hub import try_to_load_from_cache

    return isinstance(try_to_load_from_cache(repo_id, "config.json", revision=revision), str)


def resolve_weights_source(name_or_path: str, revision: str | None = None) -> WeightsSource:
    """Local folder if it exists; else a Hub id, online or from the local Hub cache.

    Raises CheckpointError for a path that does not exist and HubUnavailableError, naming the id,
    when the Hub cannot be reached and the id is not cached.
    """
    path = Path(name_or_path).expanduser()
    if path.is_dir():
        return WeightsSource(str(path), is_local=True)
    if path.exists():
        raise CheckpointError(
            f"Model source {name_or_path!r} is a file; pass the folder that holds config.json."
        )
    if name_or_path.startswith((".", "/", "~")) or not _REPO_ID.match(name_or_path) or ".." in name_or_path:
        raise CheckpointError(f"Model folder {name_or_path!r} does not exist (and it is not a Hub id).")
    revision_kwargs = {"revision": revision} if revision else {}
    if hub_reachable():
        return WeightsSource(name_or_path, is_local=False, load_kwargs=revision_kwargs)
    if _cached_on_disk(name_or_path, revision):
        return WeightsSource(
            name_or_path, is_local=False, load_kwargs={**revision_kwargs, "local_files_only": True}
        )
    raise HubUnavailableError(
        f"Cannot load {name_or_path!r}: the Hugging Face Hub is not reachable from this machine "
        f"(offline flag set: {_offline_flag_set()}) and the model is not in the local Hub cache. "
        "Pass a local folder holding the model (saved with save_pretrained) as name_or_path instead."
    )


def fetch_file(source: WeightsSource, filename: str) -> Path | None:
    """The local path of one file of the source, or None when the source has no such file."""
    if source.is_local:
        candidate = Path(source.location) / filename
        return candidate if candidate.is_file() else None
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import EntryNotFoundError, LocalEntryNotFoundError

    try:
        return Path(hf_hub_download(source.location, filename, **source.load_kwargs))
    except EntryNotFoundError:
        return None
    except LocalEntryNotFoundError:
        if source.load_kwargs.get("local_files_only"):
            return None
        raise


WEIGHT_FILE_PATTERNS = (
    "*.safetensors",
    "*.bin",
    "*.pt",
    "*.pth",
    "*.safetensors.index.json",
    "*.bin.index.json",
)


def weights_sha256(folder: str | Path) -> str:
    """sha256 over a model folder's weight files (names and contents, sorted by name).

    Two folders hash alike exactly when they hold the same weight bytes, whatever their paths:
    this is what tells a replaced model apart from the one a run was built on.
    """
    root = Path(folder)
    files = sorted(
        {path for pattern in WEIGHT_FILE_PATTERNS for path in root.glob(pattern) if path.is_file()}
    )
    if not files:
        raise CheckpointError(f"{root} holds no weight files ({', '.join(WEIGHT_FILE_PATTERNS)}).")
    digest = hashlib.sha256()
    for path in files:
        file_digest = hashlib.sha256()
        with path.open("rb") as handle:
            for chunk in iter(lambda: handle.read(1 << 20), b""):
                file_digest.update(chunk)
        digest.update(f"{path.name}\0{file_digest.hexdigest()}\n".encode())
    return digest.hexdigest()


def source_weights_sha256(source: WeightsSource) -> str:
    """:func:`weights_sha256` of a resolved source; a Hub id is hashed from its (cached) snapshot.

    For a Hub id only the safetensors files are fetched when there are any (what transformers
    loads), so repositories that also carry .bin copies are not downloaded twice.
    """
    if source.is_local:
        return weights_sha256(source.location)
    from huggingface_hub import snapshot_download

    options = {
        key: value for key, value in source.load_kwargs.items() if key in ("revision", "local_files_only")
    }
    for patterns in (["*.safetensors", "*.safetensors.index.json"], list(WEIGHT_FILE_PATTERNS)):
        folder = snapshot_download(source.location, allow_patterns=patterns, **options)
        if any(path.is_file() for pattern in patterns for path in Path(folder).glob(pattern)):
            return weights_sha256(folder)
    raise CheckpointError(f"{source.location!r} has no weight files ({', '.join(WEIGHT_FILE_PATTERNS)}).")
