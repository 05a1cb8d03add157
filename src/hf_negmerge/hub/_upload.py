"""Upload a prepared local folder to a Hub repo (create it if needed) with huggingface_hub."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from ..errors import CheckpointError
from ._connection import hub_client, hub_errors, looks_like_repo_id

DEFAULT_BRANCH = "main"


def check_repo_id(repo_id: str) -> None:
    if not isinstance(repo_id, str) or not looks_like_repo_id(repo_id):
        raise CheckpointError(f"repo_id={repo_id!r} is not a Hub repo id of the form 'user/name'.")


def upload_folder_to_repo(
    folder: str | Path,
    repo_id: str,
    *,
    commit_message: str,
    private: bool = False,
    revision: str | None = None,
    token: str | bool | None = None,
    allow_patterns: Sequence[str] | None = None,
    ignore_patterns: Sequence[str] | None = None,
    local_note: str = "",
) -> str:
    """`create_repo(exist_ok=True)`, the branch when `revision` names one, then `upload_folder`.

    Returns the commit URL. The local folder is only read: a failed push leaves it untouched
    and raises `HubUnavailableError` naming the repo and the endpoint (plus `local_note`).
    """
    check_repo_id(repo_id)
    folder = Path(folder)
    if not folder.is_dir():
        raise CheckpointError(f"Cannot push {folder}: it is not a folder.")
    with hub_errors("push to", repo_id, token, local_note=local_note):
        api = hub_client(token)
        api.create_repo(repo_id, private=private, exist_ok=True)
        if revision is not None and revision != DEFAULT_BRANCH:
            api.create_branch(repo_id, branch=revision, exist_ok=True)
        commit = api.upload_folder(
            repo_id=repo_id,
            folder_path=folder,
            revision=revision,
            commit_message=commit_message,
            allow_patterns=list(allow_patterns) if allow_patterns is not None else None,
            ignore_patterns=list(ignore_patterns) if ignore_patterns is not None else None,
        )
    return str(commit.commit_url)
