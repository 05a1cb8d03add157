"""Turn "a local folder or a Hub repo id" into a local folder.

Loaders (`NegMergeConfig.from_pretrained`, `NegationVector.from_pretrained`) accept either; this
module is the one place that decides which it is and fetches from the Hub when needed, through
huggingface_hub's cache (so a second load works offline, also with `HF_HUB_OFFLINE=1`).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from ..errors import CheckpointError
from ._connection import hub_errors, hub_offline, looks_like_repo_id


def resolve_folder(
    repo_id_or_dir: str | Path,
    revision: str | None = None,
    token: str | bool | None = None,
    allow_patterns: Sequence[str] | None = None,
) -> Path:
    """A local folder holding the files of `repo_id_or_dir`.

    An existing directory is returned as is. Otherwise the name must be a Hub repo id
    ("user/name"); its files (only `allow_patterns`, when given) are downloaded with
    `snapshot_download` at `revision`. Raises `HubUnavailableError` when the Hub cannot be
    reached and nothing is cached, `CheckpointError` for a name that is neither.
    """
    local = Path(repo_id_or_dir)
    if local.is_dir():
        return local
    name = str(repo_id_or_dir)
    if local.exists() or not looks_like_repo_id(name):
        raise CheckpointError(
            f"'{name}' is neither a local folder nor a Hub repo id of the form 'user/name'."
        )
    return download_snapshot(name, revision=revision, token=token, allow_patterns=allow_patterns)


def download_snapshot(
    repo_id: str,
    revision: str | None = None,
    token: str | bool | None = None,
    allow_patterns: Sequence[str] | None = None,
    action: str = "download",
    local_note: str = "",
) -> Path:
    """The files of Hub repo `repo_id` at `revision` (only `allow_patterns`), as a cached folder.

    With the Hub switched off (`HF_HUB_OFFLINE`), a snapshot already in the cache is used;
    otherwise `HubUnavailableError` names the repo at once. `action` and `local_note` go into
    that message ("Cannot {action} '{repo_id}': … {local_note}").
    """
    from huggingface_hub import snapshot_download

    patterns = list(allow_patterns) if allow_patterns is not None else None
    if hub_offline():
        from huggingface_hub.errors import LocalEntryNotFoundError

        try:
            return Path(
                snapshot_download(repo_id, revision=revision, allow_patterns=patterns, local_files_only=True)
            )
        except (LocalEntryNotFoundError, OSError, ValueError):
            pass  # not cached: hub_errors below says the Hub is switched off
    with hub_errors(action, repo_id, token, local_note=local_note) as endpoint:
        folder = snapshot_download(
            repo_id, revision=revision, token=token, endpoint=endpoint, allow_patterns=patterns
        )
    return Path(folder)


def download_file(
    repo_id: str, filename: str, revision: str | None = None, token: str | bool | None = None
) -> Path:
    """One file of a Hub repo as a local path (cached).

    Goes through `snapshot_download` restricted to `filename` rather than `hf_hub_download`:
    its first call (repo info) is not retried, so an unreachable Hub fails in well under a
    second instead of after `hf_hub_download`'s ~30 s of back-off retries.
    """
    folder = resolve_folder(repo_id, revision=revision, token=token, allow_patterns=[filename])
    path = folder / filename
    if not path.is_file():
        raise CheckpointError(
            f"Hub repo '{repo_id}' has no file {filename}"
            + (f" at revision {revision}." if revision else ".")
        )
    return path
