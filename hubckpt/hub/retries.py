"""How hubckpt talks HTTP to a hub: per-request timeouts and retries of transient failures.

One mechanism for both sides: the reader (`reader.HubReader`) and the writer (`writer.HubTarget`)
run every request through `with_retries`, which retries rate limits, server errors, timeouts and dropped
connections with exponential backoff, honouring `Retry-After` / `RateLimit` headers (read with
huggingface_hub's own parser). `install_timeouts` gives every huggingface_hub request a timeout
(through `patches.add_request_hook`).

A refused connection from a hub that never answered this process is not transient: nothing listens
at that address (a wrong `--hub`, a server not started), and waiting will not start it. It fails at
once with `HubUnavailableError` naming the URL (`unreachable`), unless the caller can bring the hub
back itself (`revive`: the reader restarts a local hub that died, `reader.HubReader`). A hub that has
answered before and now refuses is restarting: that is retried with backoff like any dropped connection.
"""

from __future__ import annotations

import errno
import logging
import time
from collections.abc import Callable
from typing import TypeVar

from .. import environment
from ..errors import HubckptError, HubUnavailableError
from .patches import add_request_hook
from .select import is_huggingface_co

logger = logging.getLogger(__name__)

T = TypeVar("T")
TRANSIENT_STATUS = {408, 429, 500, 502, 503, 504}
MAX_RETRY_AFTER_S = 300.0
# A hub's rate limit (429 saying how long to wait) is waited out without counting as a failed attempt,
# up to this long in total for one request: a commit budget (huggingface.co: 128 commits per repo per
# hour) can keep a commit waiting for minutes; a 429 storm beyond this is reported.
MAX_RATE_LIMITED_S = 3600.0


# -- timeouts --------------------------------------------------------------------------------------


def hub_timeouts() -> dict[str, float]:
    """Per-request timeouts in seconds: connect 10 (`HUBCKPT_CONNECT_TIMEOUT`), read/write/pool 120
    (`HUBCKPT_HTTP_TIMEOUT`): the time one request may stall, not the time a large upload may take."""
    read = environment.http_timeout()
    return {"connect": environment.connect_timeout(), "read": read, "write": read, "pool": read}


def _default_timeout_hook(request) -> None:
    """huggingface_hub's client has no timeout (timeout=None): fill one in where the caller set none."""
    timeout = request.extensions.get("timeout")
    if not timeout or all(v is None for v in timeout.values()):
        request.extensions["timeout"] = hub_timeouts()


def install_timeouts() -> None:
    """Give every huggingface_hub request without an explicit timeout the `hub_timeouts()` (idempotent).

    The hook goes on every client huggingface_hub makes, now and later (it re-creates its client after
    a fork or an SSL error); requests that pass their own timeout keep it.
    """
    add_request_hook(_default_timeout_hook)


# -- retries ---------------------------------------------------------------------------------------


def status_of(error: BaseException) -> int | None:
    """The HTTP status of a failed request (None for transport errors)."""
    response = getattr(error, "response", None)
    return getattr(response, "status_code", None)


def is_refused(error: BaseException) -> bool:
    """The connection was refused: nothing listens there (the client wraps the OS error, so look along the chain)."""
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, ConnectionRefusedError) or (
            isinstance(current, OSError) and current.errno == errno.ECONNREFUSED
        ):
            return True
        current = current.__cause__ or current.__context__
    return False


def _origin(error: BaseException) -> str | None:
    """scheme://host:port of the request that failed, when the error carries it (httpx2's errors do)."""
    from urllib.parse import urlsplit

    try:
        url = str(error.request.url)  # type: ignore[attr-defined]  # a property that raises when unset
    except (AttributeError, RuntimeError):
        return None
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}" if parts.scheme and parts.netloc else None


def unreachable(error: BaseException, endpoint: str | None = None) -> HubUnavailableError:
    """The one message for a hub that refuses connections: which URL, and the two likely causes."""
    where = endpoint or _origin(error) or "that address"
    return HubUnavailableError(
        f"The hub at {where} is not reachable (connection refused): is it running (`hubckpt serve`)? "
        "is `--hub` (or HUBCKPT_HUB / HF_ENDPOINT) right?"
    )


def check_reachable(endpoint: str) -> None:
    """Raise `unreachable` if `endpoint` refuses connections: one TCP connect, no HTTP request.

    huggingface.co is not probed. Other failures (DNS, a timeout) pass: the requests that follow retry them.
    """
    import socket
    from urllib.parse import urlsplit

    parts = urlsplit(endpoint)
    if not parts.hostname or is_huggingface_co(endpoint):
        return
    port = parts.port or (443 if parts.scheme == "https" else 80)
    try:
        socket.create_connection((parts.hostname, port), timeout=min(environment.connect_timeout(), 3.0)).close()
    except OSError as e:
        if is_refused(e):
            raise unreachable(e, endpoint) from e
        return
    answered(endpoint)


def is_transient(error: BaseException) -> bool:
    """Worth retrying: rate limits, server errors, timeouts, refused or dropped connections.

    (A refused connection to a hub that never answered is decided before this, by `refused`.)
    """
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


_answered: set[str] = set()  # endpoints that answered a request of this process


def answered(endpoint: str | None) -> None:
    """Record that the hub at `endpoint` answered (so a later refusal means it is restarting)."""
    if endpoint:
        _answered.add(endpoint)


def got_response(error: BaseException) -> bool:
    """The hub answered with an HTTP error (it is up, whatever it said)."""
    return getattr(error, "response", None) is not None


def refused(error: BaseException, *, endpoint: str | None, revive: Callable[[], bool] | None, revived: bool) -> bool:
    """Handle a refused connection (module docstring): True if `revive` brought the hub back (try again at once).

    False for any other error, and for a hub that answered before (retried as transient); a hub that never
    answered raises `unreachable`. `revived`: the hub was revived once already for this request (a hub that
    dies again at once is reported, not restarted in a loop).
    """
    if not is_refused(error):
        return False
    if revive is not None and not revived and revive():
        return True
    if endpoint is not None and endpoint in _answered:
        return False
    raise unreachable(error, endpoint) from error


def _check_deadline(error: Exception, what: str, delay: float, deadline: Callable[[], float] | None) -> None:
    """Raise `HubUnavailableError` if waiting `delay` seconds would pass the caller's bound (`deadline()`)."""
    left = deadline() if deadline is not None else None
    if left is not None and delay >= left:
        asked = retry_after(error)
        why = f"the hub asked to wait {asked:.0f} s (Retry-After)" if asked is not None else "the back-off"
        raise HubUnavailableError(
            f"{what} failed ({error}); {why} would pass the {max(left, 0):.1f} s left of the bound on a stalled "
            "read (2 x HUBCKPT_HTTP_TIMEOUT, all tries together): check the hub and try again later, or "
            "raise HUBCKPT_HTTP_TIMEOUT"
        ) from error


def with_retries(
    action: Callable[[], T],
    *,
    what: str,
    attempts: int = 5,
    base_delay: float = 0.5,
    endpoint: str | Callable[[], str] | None = None,
    revive: Callable[[], bool] | None = None,
    settle: Callable[[BaseException], T | None] | None = None,
    deadline: Callable[[], float] | None = None,
    give_up: Callable[[BaseException], bool] | None = None,
) -> T:
    """Run `action`, retrying transient failures with exponential backoff (or as long as the server asks).

    A refused connection from a hub that never answered (`endpoint`) raises `unreachable(endpoint)` at once,
    unless `revive()` restarts the hub and returns True: then `action` runs again (once more, not counted
    as an attempt). One that answered before is retried with backoff. `endpoint` may be a callable, read
    at each use: a revived hub can have moved to another port. After `attempts` transient failures (or
    a refused connection that is not retried) it raises `HubUnavailableError`, its cause the last error.

    `settle(error)`, for requests whose transient failure is ambiguous (a commit may have landed before
    the connection dropped): called before each retry; a result other than None is what the request
    achieved, returned instead of sending it again.

    A 429 that says how long to wait (`Retry-After` / `RateLimit`) is waited out without counting as an
    attempt, for up to `MAX_RATE_LIMITED_S` in all. `give_up(error)`, asked before each wait: True raises
    the error instead (a caller with something better to do than wait, e.g. a coalescable update of `main`).

    Timeouts come from `install_timeouts`, installed once by `HubReader` (every request goes through one).

    `deadline()`: seconds left of a bound the whole call must keep (a read's `ReadBudget`). A back-off
    (`Retry-After` included) that would end past it raises `HubUnavailableError` at once instead of sleeping.
    """

    def where() -> str | None:
        return endpoint() if callable(endpoint) else endpoint

    attempt, revived, rate_limited_s = 1, False, 0.0
    while True:
        try:
            result = action()
            answered(where())
            return result
        except Exception as e:  # noqa: BLE001 - filtered by is_transient
            if got_response(e):
                answered(where())
            if refused(e, endpoint=where(), revive=revive, revived=revived):
                revived = True
                continue
            limited = status_of(e) == 429 and retry_after(e) is not None
            if limited and give_up is not None and give_up(e):
                raise
            if limited and rate_limited_s < MAX_RATE_LIMITED_S:
                delay = retry_after(e) or base_delay
                _check_deadline(e, what, delay, deadline)
                rate_limited_s += delay
                logger.info("%s: rate limited by the hub; retrying in %.0fs", what, delay)
                time.sleep(delay)
                continue
            if not is_transient(e) or attempt == attempts:
                if is_refused(e):
                    raise unreachable(e, where()) from e
                if is_transient(e):
                    raise HubUnavailableError(f"{what} failed {attempts} times; last error: {e}") from e
                raise
            if settle is not None:
                settled = settle(e)
                if settled is not None:
                    return settled
            delay = backoff_delay(e, attempt, base_delay)
            _check_deadline(e, what, delay, deadline)
            logger.warning("%s failed (%s); retrying in %.1fs", what, e, delay)
            time.sleep(delay)
            attempt += 1
