"""Process-wide settings of other libraries that offer no public hook for them: all here, each with why.

Everything else hubckpt needs from huggingface_hub goes through its public API: an `HfApi` per hub with
an explicit `endpoint=`, tokens passed explicitly, the shared HTTP client replaced through
`huggingface_hub.set_client_factory`. What is left reaches into another library's module state, so
it lives in this one module, and tests/test_hub_patches.py fails as soon as a library changes the
thing relied on here (names, shapes, messages):

- `add_request_hook` / `add_response_hook`: huggingface_hub sends every request from one shared client
  and has no timeout of its own (`timeout=None`), nor a way to see the headers of the answer to a
  commit (the target's commit budget, `hub/budget.py`). The hooks go on through the public
  `set_client_factory`, wrapping the factory in place, which only the private
  `huggingface_hub.utils._http._GLOBAL_CLIENT_FACTORY` tells (there is no public getter): replacing it
  instead would drop a user's own factory (proxies, CA).
- `set_default_endpoint`: huggingface_hub reads `HF_ENDPOINT` once, at import, into
  `constants.ENDPOINT` / `constants.HUGGINGFACE_CO_URL_TEMPLATE`, which its module-level download
  helpers (and so transformers' `from_pretrained`) read at call time; no function sets them.
- `read_uploads_in_large_pieces`: httpx reads a streamed request body `IteratorByteStream.CHUNK_SIZE`
  (64 KiB) at a time, a class attribute of a private module with no setting to change it.
- `dropped_log_messages`: two warnings of huggingface_hub that are wrong for how hubckpt calls it have
  no switch of their own; a filter on its loggers drops exactly those messages, only while hubckpt
  commits (other messages, and other libraries' loggers, are untouched).
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Callable, Iterator
from typing import Any

# -- every huggingface_hub request --------------------------------------------------------------------------

_factory_lock = threading.Lock()
_HOOKS_ATTR = "_hubckpt_hooks"  # marks a client factory of ours, with the (event, hook) pairs it adds


def _current_client_factory() -> Callable[[], Any]:
    from huggingface_hub.utils import _http

    return _http._GLOBAL_CLIENT_FACTORY  # private: see the module docstring


def add_request_hook(hook: Callable[[Any], None]) -> None:
    """Run `hook(request)` before every request huggingface_hub sends (idempotent; thread-safe).

    The factory in place (huggingface_hub's default or the user's) is wrapped, so the clients it makes
    later (after a fork, an SSL error) get the hook too. Installing closes the shared client once
    (`set_client_factory` does); huggingface_hub opens a fresh one on the next request. Should the user
    replace the factory afterwards, the next call wraps theirs.
    """
    _add_hook("request", hook)


def add_response_hook(hook: Callable[[Any], None]) -> None:
    """Run `hook(response)` on every answer huggingface_hub receives, before its body is read (as above)."""
    _add_hook("response", hook)


def _add_hook(event: str, hook: Callable[[Any], None]) -> None:
    from huggingface_hub import set_client_factory

    with _factory_lock:
        inner = _current_client_factory()
        hooks = getattr(inner, _HOOKS_ATTR, ())
        if (event, hook) in hooks:
            return

        def factory():
            client = inner()
            client.event_hooks = {**client.event_hooks, event: [*client.event_hooks.get(event, []), hook]}
            return client

        setattr(factory, _HOOKS_ATTR, (*hooks, (event, hook)))
        set_client_factory(factory)


# -- the endpoint of huggingface_hub's module-level helpers --------------------------------------------------


def set_default_endpoint(endpoint: str) -> None:
    """Point huggingface_hub's module-level helpers (`hf_hub_download`, `hf_hub_url`...) at `endpoint`."""
    from huggingface_hub import constants

    constants.ENDPOINT = endpoint.rstrip("/")
    constants.HUGGINGFACE_CO_URL_TEMPLATE = constants.ENDPOINT + "/{repo_id}/resolve/{revision}/{filename}"


# -- the HTTP client's read size for request bodies ------------------------------------------------------------

UPLOAD_READ_BYTES = 4 * 1024 * 1024
_STREAM_MODULES = ("httpx2._content", "httpx._content")  # huggingface_hub's client, then plain httpx


def read_uploads_in_large_pieces() -> None:
    """Have the HTTP client read request bodies in 4 MiB pieces instead of 64 KiB (process-wide).

    huggingface_hub uploads an LFS file as one streamed request body, which httpx reads from the file
    64 KiB at a time, each piece a trip through h11 and a socket write: measured here, that costs
    0.8 CPU-seconds per GiB more than 4 MiB pieces (bench/README.md). Called only by the publishing
    process, which hubckpt owns; a no-op where the attribute has moved.
    """
    for module in _STREAM_MODULES:
        try:
            stream = __import__(module, fromlist=["IteratorByteStream"]).IteratorByteStream
        except (ImportError, AttributeError):
            continue
        if isinstance(getattr(stream, "CHUNK_SIZE", None), int) and stream.CHUNK_SIZE < UPLOAD_READ_BYTES:
            stream.CHUNK_SIZE = UPLOAD_READ_BYTES


# -- huggingface_hub's warnings that do not apply ----------------------------------------------------------------

# (logger name, message fragment) dropped while hubckpt commits; the tests check each is still logged there.
# Streaming one file to keep a commit on LFS is deliberate (commits.py); the client's notice about it is noise.
XET_FALLBACK_NOTICE = ("huggingface_hub._commit_api", "not supported by Xet Storage")
# A commit that changes nothing (reindex of an unchanged repo, a retried main update) is a no-op the
# client handles; its warning read as a failure in CLI output.
EMPTY_COMMIT_WARNING = ("huggingface_hub.hf_api", "No files have been modified since last commit")


class _DropMessages(logging.Filter):
    def __init__(self, fragment: str) -> None:
        super().__init__()
        self.fragment = fragment

    def filter(self, record: logging.LogRecord) -> bool:
        return self.fragment not in record.getMessage()


@contextlib.contextmanager
def dropped_log_messages(*drops: tuple[str, str]) -> Iterator[None]:
    """While inside: drop records containing `fragment` from logger `name`, for each `(name, fragment)`."""
    added = [(logging.getLogger(name), _DropMessages(fragment)) for name, fragment in drops]
    for log, f in added:
        log.addFilter(f)
    try:
        yield
    finally:
        for log, f in added:
            log.removeFilter(f)
