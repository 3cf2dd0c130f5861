"""Web pages of the local hub, at the Hub's own URLs: the repos list (`/`), model pages with the
revisions table and metric charts (`/{ns}/{name}`), revision trees with cards and tensor tables
(`/tree/`), files (`/blob/`), branch history (`/commits/`) and tensor diffs (`/compare/a...b`).

Server-rendered (Jinja2), readable without JavaScript, charts as inline SVG. Cards are rendered with
markdown-it-py and sanitised with nh3; every page carries a Content-Security-Policy that allows only
its own static files. Access follows the API's rules; with tokens registered, `/login` stores a token
in an HttpOnly, SameSite=Strict cookie that only pages read.
"""

from __future__ import annotations

from ...names import page_url
from .routes import dispatch

__all__ = ["dispatch", "page_url"]
