"""A tiny router over the *raw* request path.

The Hub puts revisions such as `feat/x` in one `%2F`-encoded path segment, and most frameworks
(Starlette included) decode `%2F` before routing, which would split it. We match on
`scope["raw_path"]` and percent-decode each captured piece ourselves.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Awaitable, Callable
from urllib.parse import unquote

from starlette.requests import Request
from starlette.responses import Response

Handler = Callable[..., Awaitable[Response]]

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


class Router:
    """Ordered list of (methods, raw-path pattern, handler); the first match wins."""

    def __init__(self) -> None:
        self.routes: list[Route] = []

    def add(self, methods: str, pattern: str, handler: Handler) -> None:
        regex = re.escape(pattern).replace(r"\{", "{").replace(r"\}", "}")
        for placeholder, group in _PLACEHOLDERS.items():
            regex = regex.replace(placeholder, group)
        self.routes.append(Route(frozenset(methods.split()), re.compile(f"^{regex}$"), handler))

    def route(self, methods: str, pattern: str) -> Callable[[Handler], Handler]:
        def decorator(handler: Handler) -> Handler:
            self.add(methods, pattern, handler)
            return handler
        return decorator

    def match(self, method: str, raw_path: str) -> tuple[Handler, dict[str, str]] | None | str:
        """(handler, decoded params); 'method' if the path matched with another method; None otherwise."""
        path_matched = False
        for route in self.routes:
            m = route.regex.match(raw_path)
            if m is None:
                continue
            if method not in route.methods:
                path_matched = True
                continue
            params = {k: unquote(v) for k, v in m.groupdict().items() if v is not None}
            return route.handler, params
        return "method" if path_matched else None


def query_bool(request: Request, key: str, default: bool = False) -> bool:
    value = request.query_params.get(key)
    if value is None:
        return default
    return value.lower() in ("1", "true", "yes")
