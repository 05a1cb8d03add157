"""Fetch single files from the Hub, failing fast with a clear message when it cannot be reached."""

from __future__ import annotations

from pathlib import Path

from .errors import HubUnavailableError


def download_file(
    repo_id: str, filename: str, revision: str | None = None, token: str | bool | None = None
) -> Path:
    """Download (or take from the local cache) one file of a Hub repo.

    Raises HubUnavailableError naming the repo when offline or unreachable, and tells the user
    to pass a local folder instead.
    """
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import EntryNotFoundError, LocalEntryNotFoundError, RepositoryNotFoundError

    try:
        return Path(hf_hub_download(repo_id, filename, revision=revision, token=token))
    except LocalEntryNotFoundError as error:  # offline, unreachable, and not in the cache
        raise _unavailable(repo_id, filename, error) from error
    except (EntryNotFoundError, RepositoryNotFoundError) as error:
        raise FileNotFoundError(f"{filename} not found in Hub repo '{repo_id}' ({error}).") from error
    except OSError as error:
        raise _unavailable(repo_id, filename, error) from error


def _unavailable(repo_id: str, filename: str, error: Exception) -> HubUnavailableError:
    from huggingface_hub import constants

    return HubUnavailableError(
        f"Cannot fetch {filename} from Hub repo '{repo_id}' at {constants.ENDPOINT} "
        f"(offline={constants.HF_HUB_OFFLINE}): {type(error).__name__}. "
        "Pass a local folder path instead, or connect to the Hub."
    )
