"""Reading files: tree listings, paths-info, and resolve (HEAD/GET with Range)."""

from __future__ import annotations

from urllib.parse import parse_qs

from starlette.requests import Request
from starlette.responses import FileResponse, Response

from ..errors import HubHTTPError
from .context import HubContext, json_response, repo_not_found
from .dataplane import signed_blob_url
from .routing import Router, body_bytes, json_body, next_link, query_bool
from .trees import file_json, folder_json, list_tree

router = Router()


class BlobResponse(FileResponse):
    # Starlette's 64 KiB default costs a thread hop per chunk; large chunks keep loopback downloads fast.
    chunk_size = 4 * 1024 * 1024


def _last_commits(ctx: HubContext, repo, files: dict, paths: list[tuple[str, str]], head: str) -> dict:
    """Commit that last changed each path (folders: the newest last commit of their files)."""
    cache: dict[str, object] = {}

    def commit(sha: str):
        if sha not in cache:
            cache[sha] = ctx.store.commit(repo, sha)
        return cache[sha]

    out = {}
    for kind, path in paths:
        if kind == "file":
            out[path] = commit(files[path].last_commit)
        else:
            inner = [commit(e.last_commit) for p, e in files.items() if p.startswith(path + "/")]
            inner = [c for c in inner if c is not None]
            out[path] = max(inner, key=lambda c: c.date) if inner else commit(head)
    return out


@router.route("GET", "/api/models/{ns}/{name}/tree/{rev}{opt_path}")
def tree(ctx: HubContext, request: Request, ns: str, name: str, rev: str, path: str = "") -> Response:
    caller = ctx.caller(request)
    repo = ctx.repo_for(ns, name, caller)
    sha = ctx.resolve(repo, rev)
    path = path.strip("/")
    files = ctx.store.files(repo, sha)
    entries = list_tree(files, path, query_bool(request, "recursive"))
    if entries is None:
        raise HubHTTPError(404, f"{path} does not exist on {rev}", "EntryNotFound", {"X-Repo-Commit": sha})
    expand = query_bool(request, "expand")
    page_size = 50 if expand else ctx.tree_page_size
    try:
        cursor = max(0, int(request.query_params.get("cursor", "0")))
    except ValueError as e:
        raise HubHTTPError(400, "Invalid cursor") from e
    page = entries[cursor : cursor + page_size]
    last = _last_commits(ctx, repo, files, page, sha) if expand else {}
    body = [
        file_json(files[p], last.get(p)) if kind == "file" else folder_json(p, files, last.get(p)) for kind, p in page
    ]
    headers = {"X-Repo-Commit": sha}
    if cursor + page_size < len(entries):
        headers["Link"] = next_link(request, "cursor", cursor + page_size)
    return json_response(body, headers=headers)


@router.route("POST", "/api/models/{ns}/{name}/paths-info/{rev}")
def paths_info(ctx: HubContext, request: Request, ns: str, name: str, rev: str) -> Response:
    caller = ctx.caller(request)
    repo = ctx.repo_for(ns, name, caller)
    sha = ctx.resolve(repo, rev)
    content_type = request.headers.get("content-type", "")
    if content_type.startswith("application/json"):
        body = json_body(request)
        paths = body.get("paths", []) if isinstance(body, dict) else []
        expand = bool(body.get("expand")) if isinstance(body, dict) else False
    else:
        # application/x-www-form-urlencoded: parsed here, no multipart dependency needed.
        form = parse_qs(body_bytes(request).decode("utf-8", "replace"), keep_blank_values=True)
        paths = form.get("paths", [])
        expand = form.get("expand", ["false"])[0].lower() == "true"
    if not isinstance(paths, list) or not all(isinstance(p, str) for p in paths):
        raise HubHTTPError(400, "'paths' must be a list of paths in the repo")
    files = ctx.store.files(repo, sha)
    out = []
    for raw in paths:
        path = str(raw).strip("/")
        entries = list_tree(files, path, recursive=False)
        if entries is None:
            continue  # missing paths are silently omitted, as on the Hub
        kind = "file" if path in files else "directory"
        last = _last_commits(ctx, repo, files, [(kind, path)], sha).get(path) if expand else None
        out.append(file_json(files[path], last) if kind == "file" else folder_json(path, files, last))
    return json_response(out)


@router.route("GET HEAD", "/{ns}/{name}/resolve/{rev}/{path}")
def resolve(ctx: HubContext, request: Request, ns: str, name: str, rev: str, path: str) -> Response:
    """HEAD/GET `/{repo}/resolve/{rev}/{path}`: serve the file inline with the Hub's metadata headers."""
    caller = ctx.caller(request)
    repo = ctx.repo_for(ns, name, caller)
    sha = ctx.resolve(repo, rev)
    entry = ctx.store.files(repo, sha).get(path)
    if entry is None:
        raise HubHTTPError(404, "Entry not found", "EntryNotFound", {"X-Repo-Commit": sha})
    blob = ctx.blobs.path(entry.sha256)
    if not blob.exists():
        raise HubHTTPError(500, f"Object {entry.sha256} of {path} is missing from the data folder")
    etag = entry.sha256 if entry.lfs else entry.git_oid
    headers = {"X-Repo-Commit": sha, "ETag": f'"{etag}"', "Cache-Control": "private, max-age=0"}
    if entry.lfs:
        headers["X-Linked-Etag"] = f'"{entry.sha256}"'
        headers["X-Linked-Size"] = str(entry.size)
        if ctx.data_plane_port:
            # As huggingface.co does with its CDN: a cross-origin 302 carrying the metadata headers;
            # the client reads them from the redirect and fetches the pre-signed URL without auth.
            headers["Location"] = signed_blob_url(ctx, request.url.hostname or "127.0.0.1", entry.sha256)
            return Response(status_code=302, headers=headers)
    headers["Content-Length"] = str(entry.size)
    return BlobResponse(blob, headers=headers, media_type="application/octet-stream")


@router.route("GET HEAD", "/{ns}/resolve/{rev}/{path}")
def resolve_canonical(ctx: HubContext, request: Request, ns: str, rev: str, path: str) -> Response:
    # Canonical single-segment ids (`/gpt2/resolve/main/config.json`) do not exist here.
    raise repo_not_found(ctx.caller(request))
