"""Jinja2 environment of the pages, and HTML responses with the pages' security headers."""

from __future__ import annotations

import datetime as dt
from functools import lru_cache
from urllib.parse import quote

from jinja2 import Environment, PackageLoader, select_autoescape
from starlette.responses import HTMLResponse

from ...cards import human_size

# Only the page's own (static) files; nothing inline, nothing from elsewhere; no plugins, frames or forms elsewhere.
CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; font-src 'self'; "
    "connect-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'"
)
SECURITY_HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "X-Frame-Options": "DENY",
    "Cache-Control": "no-store",
}
STATIC_PREFIX = "/front/hubckpt"


def seg(value: str) -> str:
    """One URL path segment (revisions such as `feat/x` become `feat%2Fx`, as on the Hub)."""
    return quote(str(value), safe="")


def path_url(value: str) -> str:
    """A file path in a URL (its slashes kept)."""
    return quote(str(value), safe="/")


def short_date(value: str | None) -> str:
    """'2026-12-02T01:02:03.456Z' → '2026-12-02 01:02' (UTC)."""
    if not value:
        return "—"
    return str(value)[:16].replace("T", " ")


def number(value) -> str:
    """Numbers as the tables show them; anything else (a hand-edited index) as text, to be escaped."""
    if value is None:
        return "—"
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def size(value) -> str:
    return human_size(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else "—"


def ago(value: str | None) -> str:
    """Human 'x ago' of an ISO date, relative to now (for lists)."""
    if not value:
        return "—"
    try:
        then = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return value
    seconds = (dt.datetime.now(dt.UTC) - then).total_seconds()
    for unit, size in (("day", 86400), ("hour", 3600), ("minute", 60)):
        if seconds >= size:
            n = int(seconds // size)
            return f"{n} {unit}{'s' if n != 1 else ''} ago"
    return "just now"


@lru_cache(maxsize=1)
def environment() -> Environment:
    env = Environment(
        loader=PackageLoader("hubckpt.server.web", "templates"),
        autoescape=select_autoescape(default=True),
        trim_blocks=True,
        lstrip_blocks=True,
        auto_reload=False,
    )
    env.filters.update(seg=seg, path_url=path_url, size=size, date=short_date, number=number, ago=ago)
    env.globals["static"] = STATIC_PREFIX
    return env


def page(template: str, status: int = 200, **context) -> HTMLResponse:
    html = environment().get_template(template).render(**context)
    return HTMLResponse(html, status_code=status, headers=dict(SECURITY_HEADERS))
