"""A tiny router over the *raw* request path.

The Hub puts revisions such as `feat/x` in one `%2F`-encoded path segment, and most frameworks
(Starlette included) decode `%2F` before routing, which would split it. We match on
`scope["raw_path"]` and percent-decode each captured piece ourselves.

Handlers come in two kinds:

- plain functions `def handler(ctx, request, **params) -> Response` (the usual kind): the app reads
  the request body first, then runs the handler in a worker thread, so storage calls (SQLite,
  files) never block the event loop. Read the body with `body_bytes(request)` / `json_body(request)`.
- coroutines `async def handler(...)`: run on the event loop, for handlers that stream the request
  body; they must offload any blocking call themselves (`run_in_threadpool`).
"""

from __future__ import annotations

import inspect
import json
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from urllib.parse import unquote, urlencode

from starlette.requests import Request
from starlette.responses import Response

Handler = Callable[..., "Awaitable[Response] | Response"]

# Placeholders usable in route patterns.
_PLACEHOLDERS = {
    "{ns}": r"(?P<ns>[^/]+)",
    "{name}": r"(?P<name>[^/]+?)",
    "{rev}": r"(?P<rev>[^/]+)",
    "{path}": r"(?P<path>.+)",
    "{opt_path}": r"(?:/(?P<path>.*))?",
    "{any}": r"(?P<any>.*)",
}


@dataclass(frozen=True)
class Route:
    methods: frozenset[str]
    regex: re.Pattern[str]
    handler: Handler
    is_async: bool


class Router:
    """Ordered list of (methods, raw-path pattern, handler); the first match wins."""

    def __init__(self) -> None:
        self.routes: list[Route] = []

    def add(self, methods: str, pattern: str, handler: Handler) -> None:
        regex = re.escape(pattern).replace(r"\{", "{").replace(r"\}", "}")
        for placeholder, group in _PLACEHOLDERS.items():
            regex = regex.replace(placeholder, group)
        self.routes.append(
            Route(frozenset(methods.split()), re.compile(f"^{regex}$"), handler, inspect.iscoroutinefunction(handler))
        )

    def route(self, methods: str, pattern: str) -> Callable[[Handler], Handler]:
        def decorator(handler: Handler) -> Handler:
            self.add(methods, pattern, handler)
            return handler

        return decorator

    def match(self, method: str, raw_path: str) -> tuple[Route, dict[str, str]] | None | str:
        """(route, decoded params); 'method' if the path matched with another method; None otherwise."""
        path_matched = False
        for route in self.routes:
            m = route.regex.match(raw_path)
            if m is None:
                continue
            if method not in route.methods:
                path_matched = True
                continue
            params = {k: unquote(v) for k, v in m.groupdict().items() if v is not None}
            return route, params
        return "method" if path_matched else None


def next_link(request: Request, key: str, value: int) -> str:
    """The `Link` header to the next page: this URL with the query parameter `key` set to `value`."""
    params = [(k, v) for k, v in request.query_params.multi_items() if k != key] + [(key, str(value))]
    return f'<{str(request.url).split("?")[0]}?{urlencode(params)}>; rel="next"'


def query_bool(request: Request, key: str, default: bool = False) -> bool:
    value = request.query_params.get(key)
    if value is None:
        return default
    return value.lower() in ("1", "true", "yes")


async def read_body(request: Request, limit: int) -> bytes:
    """The whole request body, or HubHTTPError 413 as soon as it is known to exceed `limit` bytes."""
    from ..errors import HubHTTPError

    def too_large() -> HubHTTPError:
        # Connection: close, since the rest of the body is left unread on the socket.
        return HubHTTPError(
            413,
            f"Request body is larger than this hub accepts ({limit} bytes); upload large files through LFS.",
            headers={"Connection": "close"},
        )

    length = request.headers.get("content-length", "")
    if length.isdigit() and int(length) > limit:
        raise too_large()
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise too_large()
    return bytes(body)


def body_bytes(request: Request) -> bytes:
    """The request body, read by the app before a plain (threaded) handler runs."""
    return getattr(request.state, "body", b"")


def json_body(request: Request) -> object:
    """The request body parsed as JSON (any JSON value); HubHTTPError 400 if it is not JSON."""
    from ..errors import HubHTTPError

    try:
        return json.loads(body_bytes(request) or b"null")
    except ValueError as e:
        raise HubHTTPError(400, f"Request body is not valid JSON: {e}") from e
