"""Reach the Hub: which endpoint, which client, and how failures are reported.

Every Hub call in hf-negmerge goes through `hub_client` and `hub_errors` so that an offline
machine gets one clear `HubUnavailableError` naming the repo and the endpoint, and so that a
token never appears in a message (it is only ever handed to `huggingface_hub`, which sends it
as an HTTP header).
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import re
from collections.abc import Callable, Iterator
from typing import TypeVar

from huggingface_hub import HfApi, constants
from huggingface_hub.errors import (
    EntryNotFoundError,
    HfHubHTTPError,
    LocalEntryNotFoundError,
    OfflineModeIsEnabled,
    RepositoryNotFoundError,
    RevisionNotFoundError,
)

from ..errors import CheckpointError, ConfigError, HubUnavailableError

logger = logging.getLogger(__name__)

_REPO_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")
_TRUE = {"1", "true", "yes", "on"}
_T = TypeVar("_T")

# Bounded network waits: no Hub call waits longer than this for the server between two bytes
# (connect, read, write), and a push that times out or loses the connection is tried this many
# times in all. huggingface_hub's own default is to wait forever.
TIMEOUT_ENV = "HF_NEGMERGE_HUB_TIMEOUT"
ATTEMPTS_ENV = "HF_NEGMERGE_HUB_ATTEMPTS"
DEFAULT_TIMEOUT_S = 60.0
DEFAULT_ATTEMPTS = 3


def hub_timeout() -> float:
    """Seconds any one Hub call may wait for the server (`HF_NEGMERGE_HUB_TIMEOUT`, default 60)."""
    raw = os.environ.get(TIMEOUT_ENV, "").strip()
    if not raw:
        return DEFAULT_TIMEOUT_S
    try:
        value = float(raw)
    except ValueError:
        value = math.nan
    if not math.isfinite(value) or value <= 0:
        raise ConfigError(f"{TIMEOUT_ENV}={raw!r} must be a positive number of seconds.")
    return value


def hub_attempts() -> int:
    """How many times a push is tried on timeouts and lost connections (`HF_NEGMERGE_HUB_ATTEMPTS`)."""
    raw = os.environ.get(ATTEMPTS_ENV, "").strip()
    if not raw:
        return DEFAULT_ATTEMPTS
    if not raw.isdigit() or int(raw) < 1:
        raise ConfigError(f"{ATTEMPTS_ENV}={raw!r} must be a whole number ≥ 1.")
    return int(raw)


@contextlib.contextmanager
def bounded_session(timeout: float) -> Iterator[None]:
    """huggingface_hub's shared HTTP client with `timeout` for the duration of the block."""
    import httpx2
    from huggingface_hub.utils import get_session

    session = get_session()
    previous = session.timeout
    session.timeout = httpx2.Timeout(timeout)
    try:
        yield
    finally:
        session.timeout = previous


def with_retries(call: Callable[[], _T], attempts: int, what: str) -> _T:
    """`call()`, tried up to `attempts` times while it times out or loses the connection."""
    for attempt in range(1, attempts + 1):
        try:
            return call()
        except Exception as error:
            if attempt == attempts or not _is_connection_error(error):
                raise
            logger.warning("%s failed (%s); attempt %d of %d.", what, _describe(error), attempt + 1, attempts)
    raise AssertionError("unreachable")  # the loop returns or raises


def hub_endpoint() -> str:
    """The Hub URL in force now: `HF_ENDPOINT` read at call time, else huggingface_hub's default."""
    return (os.environ.get("HF_ENDPOINT") or constants.ENDPOINT).rstrip("/")


def hub_offline() -> bool:
    """True when the user switched the Hub off (`HF_HUB_OFFLINE` / `TRANSFORMERS_OFFLINE`)."""
    flags = (os.environ.get("HF_HUB_OFFLINE", ""), os.environ.get("TRANSFORMERS_OFFLINE", ""))
    return constants.HF_HUB_OFFLINE or any(flag.strip().lower() in _TRUE for flag in flags)


def looks_like_repo_id(name: str) -> bool:
    return bool(_REPO_ID.match(name)) and not name.startswith(".") and ".." not in name


def hub_client(token: str | bool | None = None) -> HfApi:
    """An `HfApi` bound to the current endpoint. `token=None` lets huggingface_hub use `HF_TOKEN`
    or the cached login; the token is never read or stored by hf-negmerge itself."""
    return HfApi(endpoint=hub_endpoint(), token=token)


def redact(text: str, token: str | bool | None) -> str:
    """Remove the token (given or ambient) from a message before it is shown or raised."""
    secrets = [token] if isinstance(token, str) else []
    secrets.append(os.environ.get("HF_TOKEN", ""))
    for secret in secrets:
        if secret and len(secret) >= 4:
            text = text.replace(secret, "***")
    return text


@contextlib.contextmanager
def hub_errors(
    action: str, repo_id: str, token: str | bool | None = None, local_note: str = "", attempts: int = 1
) -> Iterator[str]:
    """Translate huggingface_hub/network failures into hf-negmerge errors that name the repo.

    Yields the endpoint so callers can pass it on. Every call in the block waits at most
    `hub_timeout()` for the server. Connection failures, timeouts and offline mode become
    `HubUnavailableError`; a missing repo, revision or file becomes `CheckpointError`; any
    other HTTP error is re-raised with the token scrubbed from its message. `attempts` is how
    many times the caller tried (it is named in the message).
    """
    endpoint = hub_endpoint()
    suffix = f" {local_note}" if local_note else ""
    if hub_offline():
        raise HubUnavailableError(
            f"Cannot {action} '{repo_id}': the Hub at {endpoint} is switched off on this machine "
            f"(HF_HUB_OFFLINE/TRANSFORMERS_OFFLINE is set).{suffix}"
        )
    timeout = hub_timeout()
    try:
        with bounded_session(timeout):
            yield endpoint
    except (OfflineModeIsEnabled, LocalEntryNotFoundError) as error:  # before EntryNotFoundError: a subclass
        raise HubUnavailableError(_unreachable(action, repo_id, endpoint, error, suffix, token)) from None
    except (RepositoryNotFoundError, RevisionNotFoundError, EntryNotFoundError) as error:
        raise CheckpointError(
            redact(f"Cannot {action} '{repo_id}' at {endpoint}: {_describe(error)}.{suffix}", token)
        ) from None
    except HfHubHTTPError as error:
        raise HubUnavailableError(
            redact(
                f"Cannot {action} '{repo_id}' at {endpoint}: the Hub answered {_describe(error)}.{suffix}",
                token,
            )
        ) from None
    except Exception as error:
        if _is_timeout(error):
            tries = f"{attempts} attempts" if attempts > 1 else "1 attempt"
            raise HubUnavailableError(
                redact(
                    f"Cannot {action} '{repo_id}': the Hub at {endpoint} did not answer within {timeout:g} s "
                    f"({tries}; {_describe(error)}). Try again later, or set {TIMEOUT_ENV} (seconds) or "
                    f"{ATTEMPTS_ENV} to wait longer.{suffix}",
                    token,
                )
            ) from None
        if _is_connection_error(error):
            raise HubUnavailableError(_unreachable(action, repo_id, endpoint, error, suffix, token)) from None
        raise


def _unreachable(
    action: str, repo_id: str, endpoint: str, error: BaseException, suffix: str, token: str | bool | None
) -> str:
    return redact(
        f"Cannot {action} '{repo_id}': the Hub at {endpoint} is unreachable ({_describe(error)}).{suffix}",
        token,
    )


def _is_connection_error(error: BaseException) -> bool:
    import httpx2

    return isinstance(error, (httpx2.TransportError, ConnectionError, TimeoutError))


def _is_timeout(error: BaseException) -> bool:
    import httpx2

    return isinstance(error, (httpx2.TimeoutException, TimeoutError))


def _describe(error: BaseException) -> str:
    first_line = str(error).strip().splitlines()[0] if str(error).strip() else ""
    return f"{type(error).__name__}: {first_line}" if first_line else type(error).__name__
