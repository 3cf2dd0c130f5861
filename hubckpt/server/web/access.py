"""Who is looking at a page: the API's rules (see `HubContext.caller`), with the token taken from a
login cookie. The cookie is HttpOnly and SameSite=Strict, and only pages read it: the API still wants
an Authorization header, so a cookie never authorises a write."""

from __future__ import annotations

from urllib.parse import parse_qs

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from ...errors import HubHTTPError
from ..context import Caller, HubContext

COOKIE = "hubckpt_token"
ANONYMOUS = Caller(None, "none")


def viewer(ctx: HubContext, request: Request) -> tuple[Caller, bool]:
    """(caller, whether a stale login cookie should be cleared)."""
    if ctx.single_user:
        return ctx.caller(request), False
    token = request.cookies.get(COOKIE, "")
    if not token:
        try:
            return ctx.caller(request), False  # e.g. a script sending an Authorization header
        except HubHTTPError:
            return ANONYMOUS, False
    return _caller_for_token(ctx, request, token)


def _caller_for_token(ctx: HubContext, request: Request, token: str) -> tuple[Caller, bool]:
    # Reuse the API's own authentication by presenting the token as it would arrive there.
    headers = [(k, v) for k, v in request.scope["headers"] if k != b"authorization"]
    headers.append((b"authorization", b"Bearer " + token.encode("latin-1", "replace")))
    try:
        caller = ctx.caller(Request({**request.scope, "headers": headers}))
    except HubHTTPError:
        return ANONYMOUS, True
    return (caller, False) if caller.name is not None else (ANONYMOUS, True)


def same_origin(request: Request) -> bool:
    """A form POST from one of our own pages (browsers send Origin on POST)."""
    origin = request.headers.get("origin")
    if origin is None or origin == "null":
        return origin is None
    return origin.rstrip("/") == str(request.base_url).rstrip("/")


def safe_next(value: str | None) -> str:
    """Only local paths as a post-login destination (no open redirect)."""
    # Browsers drop tabs and newlines from URLs ("/\t/evil" is "//evil"), so no control characters either.
    if (
        not value
        or not value.startswith("/")
        or value.startswith("//")
        or "\\" in value
        or any(c < " " or c == "\x7f" for c in value)
    ):
        return "/"
    return value


async def read_form(request: Request) -> dict[str, str]:
    body = (await request.body())[: 64 * 1024]
    form = parse_qs(body.decode("utf-8", "replace"), keep_blank_values=True)
    return {k: v[0] for k, v in form.items()}


def login_cookie(response: Response, request: Request, token: str) -> None:
    response.set_cookie(
        COOKIE,
        token,
        httponly=True,
        samesite="strict",
        path="/",
        secure=request.url.scheme == "https",
        max_age=30 * 24 * 3600,
    )


def clear_cookie(response: Response) -> None:
    response.delete_cookie(COOKIE, path="/", httponly=True, samesite="strict")


def check_token(ctx: HubContext, request: Request, token: str) -> Caller | None:
    caller, _ = _caller_for_token(ctx, request, token)
    return caller if caller.name is not None else None


def redirect(url: str) -> RedirectResponse:
    return RedirectResponse(url, status_code=303)
