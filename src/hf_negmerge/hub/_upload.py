"""Upload a prepared local folder to a Hub repo (create it if needed) with huggingface_hub."""

from __future__ import annotations

import re
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from ..errors import CheckpointError, ConfigError
from ._connection import hub_attempts, hub_client, hub_errors, with_retries

DEFAULT_BRANCH = "main"
MAX_REPO_ID_LENGTH = 96  # the Hub's limit (huggingface_hub.utils.validate_repo_id)
_NAME_PART = re.compile(r"^\w(?:[\w.-]*\w)?$")


def check_repo_id(repo_id: str) -> None:
    """Refuse, before any upload, a repo id the Hub would reject, naming it and the rule broken."""
    if not isinstance(repo_id, str):
        raise ConfigError(f"repo_id={repo_id!r} must be a string of the form 'user/name'.")
    problem = None
    if repo_id.count("/") != 1:
        problem = "it needs exactly one namespace, 'user/name' or 'org/name'"
    elif len(repo_id) > MAX_REPO_ID_LENGTH:
        problem = f"it is {len(repo_id)} characters long; the Hub allows at most {MAX_REPO_ID_LENGTH}"
    elif repo_id.endswith(".git"):
        problem = "it must not end in '.git'"
    elif "--" in repo_id or ".." in repo_id:
        problem = "it must not contain '--' or '..'"
    elif not all(_NAME_PART.match(part) for part in repo_id.split("/")):
        problem = "each part may hold only letters, digits, '-', '_' and '.', and must not start or end with '-' or '.'"
    if problem is not None:
        raise ConfigError(f"repo_id {repo_id!r} is not a valid Hub repo id: {problem}.")


_REF_FORBIDDEN = re.compile(r"[\x00-\x20\x7f~^:?*\[\\]")  # git check-ref-format: controls, space, ~^:?*[\\


def check_revision(revision: str | None) -> None:
    """Refuse, before any work, a branch name git (and so the Hub) would reject, naming it and the
    rule broken (git check-ref-format: no '..', spaces, control characters, ~^:?*[\\, '@{', no
    part starting with '.' or ending in '.lock', no empty part)."""
    if revision is None:
        return
    if not isinstance(revision, str):
        raise ConfigError(f"revision={revision!r} must be a branch name (a string).")
    problem = None
    if not revision:
        problem = "it is empty"
    elif _REF_FORBIDDEN.search(revision):
        problem = "it must not contain spaces, control characters or any of ~ ^ : ? * [ \\"
    elif ".." in revision or "@{" in revision or revision == "@":
        problem = "it must not contain '..' or '@{', nor be '@'"
    elif revision.endswith(".") or any(
        not part or part.startswith(".") or part.endswith(".lock") for part in revision.split("/")
    ):
        problem = (
            "no part between '/' may be empty, start with '.' or end in '.lock', and it must not end in '.'"
        )
    if problem is not None:
        raise ConfigError(f"revision {revision!r} is not a valid branch name: {problem}.")


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
    Each call waits at most `HF_NEGMERGE_HUB_TIMEOUT` seconds for the server, and the whole
    push is tried `HF_NEGMERGE_HUB_ATTEMPTS` times on timeouts and lost connections (every
    step is idempotent: the repo and branch are created only when missing).
    """
    check_repo_id(repo_id)
    check_revision(revision)
    folder = Path(folder)
    if not folder.is_dir():
        raise CheckpointError(f"Cannot push {folder}: it is not a folder.")
    attempts = hub_attempts()

    def push_once() -> str:
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

    with hub_errors("push to", repo_id, token, local_note=local_note, attempts=attempts):
        return with_retries(push_once, attempts, f"Pushing to '{repo_id}'")


def push_saved(
    save_pretrained: Callable[[Path], Any],
    repo_id: str,
    *,
    commit_message: str,
    private: bool = False,
    revision: str | None = None,
    token: str | bool | None = None,
) -> str:
    """Push what `save_pretrained(folder)` writes (a config, a vector), with the same bounded
    waits, retries and branch handling as every other hf-negmerge push; returns the commit URL."""
    check_repo_id(repo_id)
    check_revision(revision)
    with tempfile.TemporaryDirectory(prefix="hf-negmerge-push-") as staging:
        save_pretrained(Path(staging))
        return upload_folder_to_repo(
            staging, repo_id, private=private, revision=revision, token=token, commit_message=commit_message
        )
