"""huggingface_hub's downloads from one hub, held to the rules of every other hubckpt read.

hubckpt downloads whole files (`checkpoint.json`, configs, sharded indexes, `pull`, `load_model`, a
weight file the fast path cannot stream) with `hf_hub_download`, which sends its requests through
huggingface_hub's one shared HTTP client with huggingface_hub's own rules. Two of those are not
hubckpt's, so inside `guarded(endpoint, what)` two hooks on that client (installed through
`patches.add_request_hook`, active only in the calling context) apply hubckpt's instead:

- **Credentials to the hub's exact origin only.** huggingface_hub forwards the token on a redirect to
  the same origin *or to one of its own hub origins* (`https://huggingface.co`, `https://hf.co`, the
  staging hub, `HF_ENDPOINT`), so a self-hosted hub that redirects there would hand its token to them.
  Every request of a guarded call, each hop of a redirect included, goes out without `Authorization`
  (and cookies) unless `origin.same_origin` says its URL is on the hub's own origin.
- **A stalled download fails within the bound of every other read.** huggingface_hub retries a
  metadata request up to 6 times (timeouts up to 60 s each) and resumes a body that stalls as long as
  any byte came since the last try, so a hub that stalls, or drips a few bytes per try, could hold a
  download for many minutes or forever, and sleeps whatever `Retry-After` a hub names. A guarded call
  shares one `ReadBudget`: every request's timeouts are cut to what is left of it, a request past it is
  not sent, a wait the hub asks for that would pass it fails at once, and the body counts its bytes
  against it; once 2 x `HUBCKPT_HTTP_TIMEOUT` pass with less than 64 KiB arriving, the download
  fails with `HubUnavailableError` (at the latest one read timeout later, for the read in flight).

Outside a guarded call (the user's own huggingface_hub calls in the same process) both hooks do nothing.
"""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from ..errors import HubUnavailableError
from .origin import CREDENTIAL_HEADERS, same_origin
from .patches import add_request_hook, add_response_hook
from .reader import ReadBudget
from .retries import TRANSIENT_STATUS


@dataclass
class _Guard:
    endpoint: str
    what: str
    budget: ReadBudget


_current: contextvars.ContextVar[_Guard | None] = contextvars.ContextVar("hubckpt_guard", default=None)


@contextlib.contextmanager
def guarded(endpoint: str, what: str) -> Iterator[None]:
    """huggingface_hub requests made inside (in this thread) follow hubckpt's rules for `endpoint`."""
    add_request_hook(_on_request)
    add_response_hook(_on_response)
    token = _current.set(_Guard(endpoint, what, ReadBudget()))
    try:
        yield
    finally:
        _current.reset(token)


def _on_request(request: Any) -> None:
    guard = _current.get()
    if guard is None:
        return
    if not same_origin(str(request.url), guard.endpoint):
        for name in CREDENTIAL_HEADERS:
            if name in request.headers:
                del request.headers[name]
    guard.budget.check(guard.what)
    timeout = {k: min(v, guard.budget.remaining()) for k, v in _timeouts(request).items()}
    request.extensions["timeout"] = {k: max(v, 0.001) for k, v in timeout.items()}


def _timeouts(request: Any) -> dict[str, float]:
    from .retries import hub_timeouts

    ours = hub_timeouts()
    given = request.extensions.get("timeout") or {}
    return {k: given[k] if given.get(k) is not None else ours[k] for k in ours}


def _on_response(response: Any) -> None:
    guard = _current.get()
    if guard is None:
        return
    if response.status_code in TRANSIENT_STATUS:
        asked = _asked_wait(response.headers)
        if asked is not None and asked + 1 >= guard.budget.remaining():  # huggingface_hub sleeps it + 1 s
            raise HubUnavailableError(
                f"{guard.what}: the hub answered {response.status_code} asking to wait "
                f"{'an unreadable time' if asked == float('inf') else f'{asked:.0f} s'}, past the "
                f"{max(guard.budget.remaining(), 0):.1f} s left of the bound on a stalled read "
                "(2 x HUBCKPT_HTTP_TIMEOUT, all tries together): check the hub and try again later, or raise "
                "HUBCKPT_HTTP_TIMEOUT"
            )
    response.stream = _counted(response.stream, guard)


def _asked_wait(headers: Any) -> float | None:
    """Seconds huggingface_hub would sleep before its next try because the hub said so (uncapped, as it
    sleeps them); inf for a wait it names in a form not read here; None if it names none."""
    from huggingface_hub.utils import parse_ratelimit_headers

    waits = []
    info = parse_ratelimit_headers(headers)
    if info is not None and info.remaining == 0:
        waits.append(float(info.reset_in_seconds))
    value = headers.get("retry-after")
    if value is not None:
        value = value.strip()
        waits.append(float(value) if value.isdigit() else float("inf"))
    return max(waits) if waits else None


def _counted(inner: Any, guard: _Guard) -> Any:
    """`inner` (a response body) with its bytes counted as progress against the guarded call's budget."""
    import httpx2

    class Counted(httpx2.SyncByteStream):
        def __iter__(self) -> Iterator[bytes]:
            for chunk in inner:
                guard.budget.progress(len(chunk), guard.what)
                yield chunk

        def close(self) -> None:
            inner.close()

    return Counted()
