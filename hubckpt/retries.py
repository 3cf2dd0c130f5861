"""How hubckpt talks HTTP to a hub: per-request timeouts and retries of transient failures.

One mechanism for both sides: the reader (`hub_reader.HubReader`) and the writer (`hub_client.HubTarget`)
run every request through `with_retries`, which retries rate limits, server errors, timeouts and dropped
connections with exponential backoff, honouring `Retry-After` / `RateLimit` headers (read with
huggingface_hub's own parser). `install_timeouts` gives every huggingface_hub request a timeout.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import TypeVar

from .errors import HubckptError, HubUnavailableError

logger = logging.getLogger(__name__)

T = TypeVar("T")
TRANSIENT_STATUS = {408, 429, 500, 502, 503, 504}
MAX_RETRY_AFTER_S = 300.0


# -- timeouts --------------------------------------------------------------------------------------


def hub_timeouts() -> dict[str, float]:
    """Per-request timeouts in seconds: connect 10 (`HUBCKPT_CONNECT_TIMEOUT`), read/write/pool 120
    (`HUBCKPT_HTTP_TIMEOUT`): the time one request may stall, not the time a large upload may take."""

    from hubckpt import environment

    read = environment.http_timeout()
    return {"connect": environment.connect_timeout(), "read": read, "write": read, "pool": read}


def _default_timeout_hook(request) -> None:
    """huggingface_hub's client has no timeout (timeout=None): fill one in where the caller set none."""
    timeout = request.extensions.get("timeout")
    if not timeout or all(v is None for v in timeout.values()):
        request.extensions["timeout"] = hub_timeouts()


_hook_lock = threading.Lock()


def install_timeouts() -> None:
    """Give every huggingface_hub request without an explicit timeout the `hub_timeouts()` (idempotent).

    The hook is added to the shared client and to the clients the factory makes later (the client is
    re-created after connection errors); requests that pass their own timeout keep it.
    """
    from huggingface_hub.utils import _http

    with _hook_lock:
        factory = _http._GLOBAL_CLIENT_FACTORY
        if not getattr(factory, "_hubckpt_timeouts", False):

            def with_timeouts():
                client = factory()
                client.event_hooks["request"].append(_default_timeout_hook)
                return client

            with_timeouts._hubckpt_timeouts = True  # type: ignore[attr-defined]
            _http._GLOBAL_CLIENT_FACTORY = with_timeouts
        client = _http._GLOBAL_CLIENT
        if client is not None and _default_timeout_hook not in client.event_hooks["request"]:
            client.event_hooks["request"].append(_default_timeout_hook)


# -- retries ---------------------------------------------------------------------------------------


def status_of(error: BaseException) -> int | None:
    """The HTTP status of a failed request (None for transport errors)."""
    response = getattr(error, "response", None)
    return getattr(response, "status_code", None)


def is_transient(error: BaseException) -> bool:
    """Worth retrying: rate limits, server errors, timeouts, refused or dropped connections."""
    from huggingface_hub.errors import HfHubHTTPError

    if isinstance(error, HfHubHTTPError):
        return status_of(error) in TRANSIENT_STATUS
    if isinstance(error, HubckptError):  # our own errors (disk full, bad checkpoint...) never heal by retrying
        return False
    # httpx2's transport errors (timeouts, refused or dropped connections), matched by class name along
    # the MRO so we need not import the client's transport library; plus the builtin network errors.
    names = {cls.__name__ for cls in type(error).__mro__}
    return isinstance(error, (ConnectionError, TimeoutError)) or bool(names & {"TransportError", "TimeoutException"})


def retry_after(error: BaseException) -> float | None:
    """Seconds the server asked us to wait, capped; None if it did not say.

    Read from `RateLimit` on a 429, else from `Retry-After`.
    """
    from huggingface_hub.utils import parse_ratelimit_headers

    headers = getattr(getattr(error, "response", None), "headers", None)
    if not headers:
        return None
    if status_of(error) == 429:
        info = parse_ratelimit_headers(headers)
        if info is not None and info.remaining == 0:
            return min(float(info.reset_in_seconds), MAX_RETRY_AFTER_S)
    value = headers.get("retry-after")
    if value is not None and value.strip().isdigit():
        return min(float(value.strip()), MAX_RETRY_AFTER_S)
    return None


def backoff_delay(error: BaseException, attempt: int, base_delay: float) -> float:
    """Seconds to wait before attempt `attempt + 1`: exponential, or longer if the server asked."""
    delay = base_delay * 2 ** (attempt - 1)
    asked = retry_after(error)
    return max(delay, asked) if asked is not None else delay


def with_retries(action: Callable[[], T], *, what: str, attempts: int = 5, base_delay: float = 0.5) -> T:
    """Run `action`, retrying transient failures with exponential backoff (or as long as the server asks)."""
    install_timeouts()
    for attempt in range(1, attempts + 1):
        try:
            return action()
        except Exception as e:  # noqa: BLE001 - filtered by is_transient
            if not is_transient(e) or attempt == attempts:
                if is_transient(e):
                    raise HubUnavailableError(f"{what} failed {attempts} times; last error: {e}") from e
                raise
            delay = backoff_delay(e, attempt, base_delay)
            logger.warning("%s failed (%s); retrying in %.1fs", what, e, delay)
            time.sleep(delay)
    raise AssertionError("unreachable")
