"""URLs of the web pages (the Hub's own: `/{ns}/{name}`, `/tree/`, `/blob/`, `/commits/`, `/compare/`),
login/logout, card images (`/raw/`) and the pages' static files.

Pages are chosen by path only: nothing here answers under `/api/`, and API paths are matched first
(see `HubApp`), so these routes only see what would otherwise be a 404."""

from __future__ import annotations

import gzip
import logging
import mimetypes
from importlib import resources
from typing import Any
from urllib.parse import unquote

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import FileResponse, Response

from ...errors import HubHTTPError
from ..context import Caller, HubContext
from ..http_errors import to_http
from ..routes_discussions import pr_number
from ..routing import Router
from . import access, pages
from .render import page, path_url, seg

logger = logging.getLogger(__name__)
router = Router()

_STATIC = resources.files("hubckpt.server.web") / "static"
_STATIC_FILES = {p.name for p in _STATIC.iterdir() if p.is_file()}
_STATIC_TYPES = {".css": "text/css; charset=utf-8", ".js": "text/javascript; charset=utf-8", ".svg": "image/svg+xml"}
_IMAGE_TYPES = {
    ".png": "image/png",
    ".jpg": "image/jpeg",
    ".jpeg": "image/jpeg",
    ".gif": "image/gif",
    ".webp": "image/webp",
    ".svg": "image/svg+xml",
}
# Raw files are user content: never a document that can run anything in our origin.
_RAW_CSP = "default-src 'none'; style-src 'unsafe-inline'; img-src data:; sandbox"


async def dispatch(ctx: HubContext, request: Request, method: str, raw_path: str) -> Response | None:
    """The page at `raw_path`, or None when no page lives there (the caller answers the API's 404)."""
    if raw_path.startswith("/api/"):
        return None
    found = router.match(method, raw_path)
    if not isinstance(found, tuple):
        return None
    route, path_params = found
    params: dict[str, Any] = dict(path_params)  # the path's parameters, and the form of a POST
    handler = route.handler
    if method == "POST":
        if not access.same_origin(request):
            return _error(ctx, access.ANONYMOUS, HubHTTPError(403, "This form must be sent from the hub's own pages."))
        params["form"] = await access.read_form(request)
    return await run_in_threadpool(_run, ctx, request, handler, params)


def _run(ctx: HubContext, request: Request, handler, params: dict) -> Response:
    caller, stale_cookie = access.ANONYMOUS, False
    try:
        caller, stale_cookie = access.viewer(ctx, request)
        response = handler(ctx, request, caller, **params)
    except Exception as e:  # a page must answer HTML, whatever went wrong
        error = to_http(e)  # the API's mapping of domain errors (unknown revision, storage busy, ...)
        if error is None:
            logger.exception("unexpected error rendering %s", request.url.path)
            error = HubHTTPError(500, f"Internal error of the hubckpt local hub: {type(e).__name__}: {e}")
        response = _error(ctx, caller, error, request.url.path)
    if stale_cookie:
        access.clear_cookie(response)
    return _compressed(request, response)


def _compressed(request: Request, response: Response) -> Response:
    """Large HTML gzipped for clients that accept it (a 1,000-revision model page: ~1 MB → ~80 kB)."""
    body = getattr(response, "body", None)
    if (
        not body
        or len(body) < 16 * 1024
        or not response.media_type
        or not response.media_type.startswith("text/html")
        or "gzip" not in request.headers.get("accept-encoding", "")
    ):
        return response
    packed = gzip.compress(body, compresslevel=5)
    response.body = packed
    response.headers["Content-Length"] = str(len(packed))
    response.headers["Content-Encoding"] = "gzip"
    response.headers["Vary"] = "Accept-Encoding"
    return response


def _base(ctx: HubContext, request: Request, caller: Caller) -> dict:
    return {"viewer": caller, "single_user": ctx.single_user, "here": request.url.path}


def _error(ctx: HubContext, caller: Caller, error: HubHTTPError, here: str = "/") -> Response:
    status = error.status
    message = error.message
    if error.code == "RepoNotFound":
        # Not "401 log in": a private repo's page must look exactly like a missing one.
        status, message = 404, "Repository not found."
    elif error.code == "RevisionNotFound":
        status = 404
    response = page(
        "error.html",
        status=status,
        status_code=status,
        message=message,
        viewer=caller,
        single_user=ctx.single_user,
        here=here,
    )
    response.headers.update(error.headers)  # e.g. Retry-After of a busy hub
    return response


def _repo(ctx: HubContext, caller: Caller, ns: str, name: str):
    return ctx.repo_for(ns, name, caller)


def _split_revision(ctx: HubContext, repo, rev: str, path: str) -> tuple[str, str]:
    """Revision and path from `/tree/feat/x/dir`: links written by hand (or by a card template) often leave the
    `/` of a branch name unencoded. The shortest prefix that names a ref wins, as unencoded links are read on GitHub."""
    if not path or ctx.store.resolve(repo, rev) is not None:
        return rev, path
    parts = path.split("/")
    for i in range(1, len(parts) + 1):
        candidate = "/".join([rev, *parts[:i]])
        if ctx.store.resolve(repo, candidate) is not None:
            return candidate, "/".join(parts[i:])
    return rev, path


# -- pages ------------------------------------------------------------------------------------------


@router.route("GET HEAD", "/")
def home(ctx: HubContext, request: Request, caller: Caller) -> Response:
    return page("home.html", **_base(ctx, request, caller), **pages.home(ctx, caller))


@router.route("GET HEAD", "/{ns}/{name}")
def model(ctx: HubContext, request: Request, caller: Caller, ns: str, name: str) -> Response:
    repo = _repo(ctx, caller, ns, name)
    return page("model.html", **_base(ctx, request, caller), **pages.model(ctx, repo), tab="card")


@router.route("GET HEAD", "/{ns}/{name}/tree/{rev}{opt_path}")
def tree(ctx: HubContext, request: Request, caller: Caller, ns: str, name: str, rev: str, path: str = "") -> Response:
    repo = _repo(ctx, caller, ns, name)
    rev, path = _split_revision(ctx, repo, rev, path.strip("/"))
    data = pages.tree(ctx, repo, rev, path)
    if len(data["listing"]) == 1 and data["listing"][0]["kind"] == "file" and data["listing"][0]["path"] == path:
        return access.redirect(f"/{repo.repo_id}/blob/{seg(rev)}/{path_url(path)}")
    return page("tree.html", **_base(ctx, request, caller), **data, tab="files")


@router.route("GET HEAD", "/{ns}/{name}/blob/{rev}/{path}")
def blob(ctx: HubContext, request: Request, caller: Caller, ns: str, name: str, rev: str, path: str) -> Response:
    repo = _repo(ctx, caller, ns, name)
    rev, path = _split_revision(ctx, repo, rev, path)
    return page("blob.html", **_base(ctx, request, caller), **pages.blob(ctx, repo, rev, path), tab="files")


@router.route("GET HEAD", "/{ns}/{name}/raw/{rev}/{path}")
def raw(ctx: HubContext, request: Request, caller: Caller, ns: str, name: str, rev: str, path: str) -> Response:
    """A file's bytes with an image type where it is one (card images); everything else as plain text."""
    repo = _repo(ctx, caller, ns, name)
    sha = ctx.resolve(repo, rev)
    entry = ctx.store.files(repo, sha).get(path)
    if entry is None:
        raise HubHTTPError(404, f"{path} does not exist on {rev}", "EntryNotFound")
    suffix = "." + path.rsplit(".", 1)[-1].lower() if "." in path else ""
    media = _IMAGE_TYPES.get(suffix, "text/plain; charset=utf-8")
    headers = {
        "Content-Security-Policy": _RAW_CSP,
        "X-Content-Type-Options": "nosniff",
        "Cache-Control": "private, max-age=0",
        "ETag": f'"{entry.sha256}"',
    }
    return FileResponse(ctx.blobs.path(entry.sha256), media_type=media, headers=headers)


@router.route("GET HEAD", "/{ns}/{name}/commits/{rev}")
def commits(ctx: HubContext, request: Request, caller: Caller, ns: str, name: str, rev: str) -> Response:
    repo = _repo(ctx, caller, ns, name)
    try:
        number = int(request.query_params.get("p", "0"))
    except ValueError:
        number = 0
    data = pages.commits(ctx, repo, rev, number, ctx.commits_page_size)
    return page("commits.html", **_base(ctx, request, caller), **data, tab="commits")


@router.route("GET HEAD", "/{ns}/{name}/compare")
def compare_form(ctx: HubContext, request: Request, caller: Caller, ns: str, name: str) -> Response:
    """The compare form's target: `?a=..&b=..` → the canonical `/compare/a...b`."""
    repo = _repo(ctx, caller, ns, name)
    a, b = request.query_params.get("a", ""), request.query_params.get("b", "")
    if not a or not b:
        raise HubHTTPError(400, "Pick two revisions to compare.")
    return access.redirect(f"/{repo.repo_id}/compare/{seg(a)}...{seg(b)}")


@router.route("GET HEAD", "/{ns}/{name}/compare/{any}")
def compare(ctx: HubContext, request: Request, caller: Caller, ns: str, name: str, any: str) -> Response:
    repo = _repo(ctx, caller, ns, name)
    raw_spec = request.scope.get("raw_path", b"").decode("latin-1").split("?", 1)[0].rsplit("/compare/", 1)[-1]
    if "..." not in raw_spec:
        raise HubHTTPError(400, "Compare two revisions as /compare/A...B.")
    a, b = (unquote(p) for p in raw_spec.split("...", 1))
    return page("compare.html", **_base(ctx, request, caller), **pages.compare(ctx, repo, a, b), tab="files")


@router.route("GET HEAD", "/{ns}/{name}/discussions")
def discussions(ctx: HubContext, request: Request, caller: Caller, ns: str, name: str) -> Response:
    repo = _repo(ctx, caller, ns, name)
    data = pages.discussions(ctx, repo)
    return page("discussions.html", **_base(ctx, request, caller), **data, tab="discussions")


@router.route("GET HEAD", "/{ns}/{name}/discussions/{rev}")
def discussion(ctx: HubContext, request: Request, caller: Caller, ns: str, name: str, rev: str) -> Response:
    repo = _repo(ctx, caller, ns, name)
    number = pr_number(rev)
    found = ctx.store.discussion(repo, number) if number is not None else None
    if found is None:
        raise HubHTTPError(404, f"Discussion #{rev} not found in {repo.repo_id}.")
    data = pages.discussion(ctx, repo, found)
    return page("discussion.html", **_base(ctx, request, caller), **data, tab="discussions")


# -- login ------------------------------------------------------------------------------------------


@router.route("GET HEAD", "/login")
def login_form(ctx: HubContext, request: Request, caller: Caller) -> Response:
    return page(
        "login.html", **_base(ctx, request, caller), next=access.safe_next(request.query_params.get("next")), error=None
    )


@router.route("POST", "/login")
def login(ctx: HubContext, request: Request, caller: Caller, form: dict) -> Response:
    destination = access.safe_next(form.get("next"))
    if ctx.single_user:
        return access.redirect(destination)
    token = form.get("token", "").strip()
    who = access.check_token(ctx, request, token) if token else None
    if who is None:
        return page(
            "login.html",
            status=401,
            **_base(ctx, request, access.ANONYMOUS),
            next=destination,
            error="This token is not valid on this hub.",
        )
    response = access.redirect(destination)
    access.login_cookie(response, request, token)
    return response


@router.route("POST", "/logout")
def logout(ctx: HubContext, request: Request, caller: Caller, form: dict) -> Response:
    response = access.redirect("/")
    access.clear_cookie(response)
    return response


# -- static files -----------------------------------------------------------------------------------


@router.route("GET HEAD", "/front/hubckpt/{path}")
def static(ctx: HubContext, request: Request, caller: Caller, path: str) -> Response:
    if path not in _STATIC_FILES:
        raise HubHTTPError(404, "No such file.")
    suffix = "." + path.rsplit(".", 1)[-1]
    media = _STATIC_TYPES.get(suffix) or mimetypes.guess_type(path)[0] or "application/octet-stream"
    body = (_STATIC / path).read_bytes()
    return Response(
        body, media_type=media, headers={"Cache-Control": "public, max-age=3600", "X-Content-Type-Options": "nosniff"}
    )
