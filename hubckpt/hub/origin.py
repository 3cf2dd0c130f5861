"""Which URLs may receive a hub's credentials: the one decision, used for every URL hubckpt follows.

A token belongs to the origin (scheme, host, port) of the hub it was given for. Redirects, pagination
links and any other URL a hub hands back are followed with credentials only when they point at exactly
that origin: `https://hub.example.com.evil.net/`, another port or plain http get no Authorization header.
"""

from __future__ import annotations

from urllib.parse import urlsplit

_DEFAULT_PORTS = {"http": 80, "https": 443}
CREDENTIAL_HEADERS = ("authorization", "cookie", "proxy-authorization")


def origin(url: str) -> tuple[str, str, int | None]:
    """(scheme, host, port) of `url`, lowercased, with the scheme's default port filled in."""
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    try:
        port = parts.port
    except ValueError:  # a port that is not a number: an origin of its own, equal to none
        return scheme, "\x00invalid", None
    return scheme, (parts.hostname or "").lower(), port if port is not None else _DEFAULT_PORTS.get(scheme)


def same_origin(url: str, endpoint: str) -> bool:
    """Does `url` point at exactly the origin of `endpoint` (scheme, host and port)?"""
    return origin(url) == origin(endpoint)


def headers_for(url: str, endpoint: str, headers: dict[str, str]) -> dict[str, str]:
    """`headers` for a request to `url`: without credentials unless `url` is on `endpoint`'s origin."""
    if same_origin(url, endpoint):
        return dict(headers)
    return {k: v for k, v in headers.items() if k.lower() not in CREDENTIAL_HEADERS}
