"""Bounded retries of network calls (the Hub, dataset downloads): a transient failure is waited out here, and only
one that outlasts every attempt ends the pod, with its own exit code (NETWORK, retried by the Job).

Whether an error is transient is read from the error itself and its causes (libraries wrap the network error in
their own): HTTP 408/425/429/5xx, timeouts and broken or refused connections are; any other HTTP status (401,
403, 404: no access, no such repository or file), offline mode and everything else is not, and is raised at once.
"""

from __future__ import annotations

import logging
import os
import socket
import time
import urllib.error
from collections.abc import Callable, Iterator
from typing import TypeVar

from .errors import NetworkError

log = logging.getLogger(__name__)

T = TypeVar("T")
ATTEMPTS = 6
BASE_DELAY_SECONDS = 2.0
MAX_DELAY_SECONDS = 60.0
TRANSIENT_STATUS = frozenset({408, 425, 429, 500, 502, 503, 504})
# Transport errors of httpx (and huggingface_hub's httpx2), requests and urllib3, matched by class name so that no
# HTTP library has to be imported to recognise its errors.
TRANSIENT_TYPES = frozenset(
    {"TransportError", "TimeoutException", "Timeout", "ConnectTimeout", "ReadTimeout", "ChunkedEncodingError"}
)
NOT_TRANSIENT_TYPES = frozenset({"OfflineModeIsEnabled"})  # a ConnectionError subclass, but waiting cannot help


def _chain(error: BaseException) -> Iterator[BaseException]:
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        yield current
        current = current.__cause__ or current.__context__


def http_status(error: BaseException) -> int | None:
    """The HTTP status an error carries (httpx/requests `.response.status_code`, urllib `.code`), if any."""
    if isinstance(error, urllib.error.HTTPError):
        return int(error.code)
    status = getattr(getattr(error, "response", None), "status_code", None)
    return int(status) if isinstance(status, int) else None


def hub_offline() -> bool:
    """HF_HUB_OFFLINE is on: no request leaves the pod, so no failure is a network one that waiting could fix."""
    return os.environ.get("HF_HUB_OFFLINE", "").strip().upper() in {"1", "ON", "YES", "TRUE"}


def is_transient(error: BaseException) -> bool:
    """True when waiting and trying again may succeed (see the module docstring)."""
    if hub_offline():
        return False
    for link in _chain(error):
        names = {cls.__name__ for cls in type(link).__mro__}
        # `datasets` re-raises offline mode as a plain ConnectionError that only names it
        if names & NOT_TRANSIENT_TYPES or any(name in str(link) for name in NOT_TRANSIENT_TYPES):
            return False
        status = http_status(link)
        if status is not None:
            return status in TRANSIENT_STATUS
        if isinstance(link, TimeoutError | ConnectionError) or names & TRANSIENT_TYPES:
            return True
        if isinstance(link, urllib.error.URLError):  # not an HTTPError (handled above): look at why
            return isinstance(link.reason, BaseException) and _transient_socket_error(link.reason)
    return False


def _transient_socket_error(error: BaseException) -> bool:
    """A refused or reset connection, a timeout, or DNS saying "try again"; not a certificate or an unknown host."""
    if isinstance(error, socket.gaierror):
        return error.errno == socket.EAI_AGAIN
    return isinstance(error, TimeoutError | ConnectionError)


def retry_after(error: BaseException) -> float | None:
    """Seconds a 429/503 answer asked to wait (Retry-After in seconds), if it said."""
    for link in _chain(error):
        headers = getattr(getattr(link, "response", None), "headers", None) or getattr(link, "headers", None)
        value = headers.get("Retry-After") if headers is not None else None
        if value is not None:
            try:
                return max(0.0, float(value))
            except ValueError:
                return None
    return None


def with_retries(
    what: str,
    call: Callable[[], T],
    attempts: int = ATTEMPTS,
    sleep: Callable[[float], None] | None = None,
) -> T:
    """`call()`, tried up to `attempts` times while it fails transiently, with exponential back-off (2, 4, 8, ...
    seconds, at most 60, or what Retry-After asks). A non-transient error is raised as it is; a transient one that
    outlasts the attempts becomes NetworkError naming `what`."""
    for attempt in range(1, attempts + 1):
        try:
            return call()
        except Exception as error:
            if not is_transient(error):
                raise
            if attempt == attempts:
                raise NetworkError(
                    f"{what}: still failing after {attempts} attempts (a network or Hub problem, retried by the "
                    f"Job): {type(error).__name__}: {error}"
                ) from error
            delay = min(MAX_DELAY_SECONDS, retry_after(error) or BASE_DELAY_SECONDS * 2 ** (attempt - 1))
            log.warning(
                "%s failed (attempt %d of %d: %s: %s); retrying in %.0f s",
                what,
                attempt,
                attempts,
                type(error).__name__,
                error,
                delay,
            )
            (sleep or time.sleep)(delay)
    raise AssertionError("unreachable")  # pragma: no cover - the loop returns or raises


def with_retries_or(what: str, call: Callable[[], T], failed: Callable[[Exception], Exception]) -> T:
    """with_retries(what, call), where any other failure than the network's is raised as `failed(error)`: loaders
    raise many types (HTTP, file, value errors) that retrying cannot fix, so each caller says them in its field's
    terms. NetworkError (transient, retried by the Job) passes through as it is."""
    try:
        return with_retries(what, call)
    except NetworkError:
        raise
    except Exception as error:
        raise failed(error) from error
