"""Writing files: preupload, the LFS batch / PUT / verify flow, and NDJSON commits."""

from __future__ import annotations

import base64
import binascii
import json
import time
from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response

from ..errors import HubHTTPError, InvalidNameError
from ..names import normalize_path_in_repo
from .blobs import PipelinedWriter, git_blob_sha1, is_sha256, lfs_pointer
from .context import HubContext, base_url, json_response
from .dataplane import data_plane_base
from .gitattributes import is_ignored, is_lfs
from .http_errors import to_http
from .rate import check_commit
from .routes_discussions import pr_number
from .routing import Router, body_bytes, json_body
from .storage import PR_REF_PREFIX, Operation

router = Router()

UPLOAD_URL_TTL_S = 24 * 3600
UPLOAD_BATCH = 8 * 1024 * 1024  # bytes handed to the writer thread at once


def _path_or_422(path: object) -> str:
    if not isinstance(path, str):
        raise HubHTTPError(400, "Each file needs a string 'path'")
    try:
        return normalize_path_in_repo(path)
    except InvalidNameError as e:
        raise HubHTTPError(422, str(e)) from e


def _branch_head(ctx: HubContext, repo, rev: str) -> str:
    head = ctx.store.ref(repo, "branch", rev)
    if head is None:
        # Commits only go to branches; a tag or a sha is "not a revision you can commit to".
        raise HubHTTPError(404, f"Invalid rev id: {rev}", "RevisionNotFound")
    return head


def _wants_pr(request: Request) -> bool:
    return request.query_params.get("create_pr") in ("1", "true")


def _repo_to_commit(ctx: HubContext, request: Request, caller, ns: str, name: str, rev: str):
    """The repo, if the caller may commit to `rev`: a writer anywhere; anyone who may propose changes
    when opening a pull request (`?create_pr=1`) or pushing to their own open one (`refs/pr/N`)."""
    if _wants_pr(request):
        return ctx.repo_to_propose(ns, name, caller)
    if not rev.startswith(PR_REF_PREFIX):
        return ctx.repo_for(ns, name, caller, write=True)
    repo = ctx.repo_to_propose(ns, name, caller)
    number = pr_number(rev[len(PR_REF_PREFIX) :])
    pr = ctx.store.discussion(repo, number) if number is not None else None
    if pr is None or not pr.is_pr:
        raise HubHTTPError(404, f"Invalid rev id: {rev}", "RevisionNotFound")
    if pr.status not in ("open", "draft"):
        raise HubHTTPError(403, f"Pull request #{pr.num} is {pr.status}: it takes no more commits.")
    if not ctx.can_write(repo, caller) and (caller.name or ctx.local_user).lower() != pr.author.lower():
        raise HubHTTPError(
            403, f"Only the author of pull request #{pr.num} or a writer of {repo.repo_id} can push to it."
        )
    return repo


def _text_at(ctx: HubContext, files: dict, path: str) -> str:
    entry = files.get(path)
    if entry is None or entry.size > 1_000_000:
        return ""
    try:
        return ctx.blobs.path(entry.sha256).read_text("utf-8", errors="replace")
    except OSError:
        return ""


@router.route("POST", "/api/models/{ns}/{name}/preupload/{rev}")
def preupload(ctx: HubContext, request: Request, ns: str, name: str, rev: str) -> Response:
    caller = ctx.caller(request)
    repo = _repo_to_commit(ctx, request, caller, ns, name, rev)
    body = json_body(request)
    items = body.get("files") if isinstance(body, dict) else None
    if not isinstance(body, dict) or not isinstance(items, list):
        raise HubHTTPError(400, "Expected a JSON body with a 'files' list")
    head = ctx.store.ref(repo, "branch", rev) or ctx.resolve(repo, rev)
    files = ctx.store.files(repo, head)
    gitattributes = _text_at(ctx, files, ".gitattributes")
    gitignore = body.get("gitIgnore")
    if not isinstance(gitignore, str):
        gitignore = _text_at(ctx, files, ".gitignore")
    out = []
    for item in items:
        path = _path_or_422(item.get("path") if isinstance(item, dict) else None)
        try:
            sample = base64.b64decode(item.get("sample") or "")
        except (binascii.Error, ValueError):
            sample = b""
        size = item.get("size") or 0
        if not isinstance(size, int) or size < 0:
            raise HubHTTPError(400, f"Each file needs an integer 'size' >= 0, not {size!r}")
        lfs = is_lfs(path, size, sample, gitattributes)
        existing = files.get(path)
        oid = None
        if existing is not None:
            oid = existing.sha256 if existing.lfs else existing.git_oid
        out.append(
            {
                "path": item["path"],
                "uploadMode": "lfs" if lfs else "regular",
                "shouldIgnore": is_ignored(path, gitignore),
                "oid": oid,
            }
        )
    return json_response({"files": out, "commitOid": head})


# -- LFS ------------------------------------------------------------------------------------------


def _object_known(ctx: HubContext, repo, caller, oid: str, size: int | None) -> bool:
    """True when the hub stores `oid` and the caller may use it: it is in this repo or in one they can read."""
    if not ctx.blobs.has(oid, size):
        return False
    if ctx.store.has_repo_object(repo, oid):
        return True
    return any(ctx.can_read(other, caller) for other in ctx.store.object_repos(oid))


@router.route("POST", "/{ns}/{name}.git/info/lfs/objects/batch")
def lfs_batch(ctx: HubContext, request: Request, ns: str, name: str) -> Response:
    caller = ctx.caller(request)
    # Not only writers: a pull request's LFS files come this way too (the commit route checks the rest).
    repo = ctx.repo_to_propose(ns, name, caller)
    try:
        body = json.loads(body_bytes(request))
    except ValueError as e:
        raise HubHTTPError(400, f"Invalid LFS batch request: {e}") from e
    objects_in = (body.get("objects") or []) if isinstance(body, dict) else None
    if not isinstance(objects_in, list) or not all(isinstance(o, dict) for o in objects_in):
        raise HubHTTPError(400, "Invalid LFS batch request: expected a JSON object with a list of 'objects'")
    if body.get("operation") != "upload":
        raise HubHTTPError(
            400, "The hubckpt local hub only supports the LFS 'upload' operation; download via /resolve/"
        )
    base = base_url(request)
    objects = []
    for obj in objects_in:
        oid, size = obj.get("oid"), obj.get("size")
        if not isinstance(oid, str) or not is_sha256(oid) or not isinstance(size, int) or size < 0:
            objects.append(
                {
                    "oid": str(oid),
                    "size": size if isinstance(size, int) else 0,
                    "error": {"code": 422, "message": "oid must be a sha256 hex string and size an integer >= 0"},
                }
            )
            continue
        if _object_known(ctx, repo, caller, oid, size):
            ctx.store.add_repo_object(repo, oid)
            objects.append({"oid": oid, "size": size})  # no actions: the client skips the upload
            continue
        expires = int(time.time()) + UPLOAD_URL_TTL_S
        sig = ctx.sign(repo.id, oid, size, expires)
        # Bytes go to the data plane when it runs (fast path), else to this ASGI app.
        upload_base = (
            data_plane_base(ctx, request.url.hostname or "127.0.0.1") if ctx.data_plane_port else f"{base}/api/hubckpt"
        )
        objects.append(
            {
                "oid": oid,
                "size": size,
                "authenticated": True,
                "actions": {
                    "upload": {
                        "href": f"{upload_base}/lfs/{repo.id}/{oid}/{size}?expires={expires}&sig={sig}",
                        "expires_in": UPLOAD_URL_TTL_S,
                    },
                    "verify": {"href": f"{base}/api/hubckpt/lfs-verify/{repo.repo_id}"},
                },
            }
        )
    return json_response(
        {"transfer": "basic", "objects": objects, "hash_algo": "sha256"},
        headers={"Content-Type": "application/vnd.git-lfs+json"},
    )


@router.route("PUT", "/api/hubckpt/lfs/{ns}/{name}/{path}")
async def lfs_upload(ctx: HubContext, request: Request, ns: str, name: str, path: str) -> Response:
    # Routed as /lfs/<repo db id>/<oid>/<size>; the URL signature is the authorization.
    # A coroutine (not a threaded handler): it streams the body; blocking calls are offloaded.
    try:
        repo_id, oid, size = int(ns), name, int(path)
        expires = int(request.query_params.get("expires", "0"))
    except ValueError as e:
        raise HubHTTPError(400, "Malformed upload URL") from e
    ctx.check_signature(request.query_params.get("sig", ""), expires, repo_id, oid, size)
    pipeline = PipelinedWriter(ctx.blobs.new_writer(expected_sha256=oid, expected_size=size))
    buffer = bytearray()
    try:
        async for chunk in request.stream():
            buffer += chunk
            if len(buffer) >= UPLOAD_BATCH:
                data = bytes(buffer)
                buffer.clear()
                if not pipeline.put(data, block=False):
                    await run_in_threadpool(pipeline.put, data)
        if buffer:
            await run_in_threadpool(pipeline.put, bytes(buffer))
    except BaseException:
        await run_in_threadpool(pipeline.abort)
        raise
    await run_in_threadpool(pipeline.finish)
    ctx.stats["lfs_bytes_received"] += size
    await run_in_threadpool(ctx.store.add_repo_object_by_id, repo_id, oid)
    return Response(status_code=200)


@router.route("POST", "/api/hubckpt/lfs-verify/{ns}/{name}")
def lfs_verify(ctx: HubContext, request: Request, ns: str, name: str) -> Response:
    # The client sends its token here; without write access to the repo the answer would tell
    # anyone whether a private repo holds a given (oid, size).
    repo = ctx.repo_to_propose(ns, name, ctx.caller(request))
    body = json_body(request)
    if not isinstance(body, dict):
        raise HubHTTPError(400, "Expected a JSON object {oid, size}")
    oid, size = body.get("oid"), body.get("size")
    if not isinstance(oid, str) or not ctx.blobs.has(oid, size) or not ctx.store.has_repo_object(repo, oid):
        raise HubHTTPError(404, f"Object {oid} was not uploaded (or its size differs)")
    return json_response({})


# -- commit ---------------------------------------------------------------------------------------


def _parse_commit(ctx: HubContext, repo, caller, raw: bytes) -> tuple[dict, list[Operation]]:
    """Parse and stage the NDJSON commit payload: regular contents are stored, LFS objects checked."""
    header: dict | None = None
    operations: list[Operation] = []
    for number, line in enumerate(raw.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            item = json.loads(line)
            key, value = item["key"], item["value"]
        except (ValueError, KeyError, TypeError) as e:
            raise HubHTTPError(400, f"Bad request for commit endpoint: line {number} is not a commit operation") from e
        if not isinstance(value, dict):
            raise HubHTTPError(400, f"Bad request for commit endpoint: line {number} has no JSON object 'value'")
        if key == "header":
            header = value
        elif key == "file":
            path = _path_or_422(value.get("path"))
            if value.get("encoding", "base64") != "base64":
                raise HubHTTPError(400, f"Bad request for commit endpoint: unsupported encoding for {path}")
            try:
                content = base64.b64decode(value.get("content") or "", validate=True)
            except (binascii.Error, ValueError) as e:
                raise HubHTTPError(400, f"Bad request for commit endpoint: invalid base64 for {path}") from e
            sha256 = ctx.blobs.put_bytes(content)
            ctx.stats["regular_bytes_received"] = ctx.stats.get("regular_bytes_received", 0) + len(content)
            operations.append(Operation("add", path, sha256, len(content), False, git_blob_sha1(content)))
        elif key == "lfsFile":
            path = _path_or_422(value.get("path"))
            oid = value.get("oid")
            size = value.get("size")
            if not isinstance(oid, str) or not is_sha256(oid):
                raise HubHTTPError(400, f"Bad request for commit endpoint: invalid LFS oid for {path}")
            if not _object_known(ctx, repo, caller, oid, size):
                raise HubHTTPError(
                    422,
                    f"LFS object {oid} for {path} was never uploaded (or its size differs); "
                    "upload it through the LFS batch API first",
                )
            size = ctx.blobs.path(oid).stat().st_size
            operations.append(Operation("add", path, oid, size, True, git_blob_sha1(lfs_pointer(oid, size))))
        elif key in ("deletedFile", "deletedFolder"):
            path = _path_or_422(str(value.get("path", "")).rstrip("/"))
            operations.append(Operation("delete_file" if key == "deletedFile" else "delete_folder", path))
        else:
            raise HubHTTPError(400, f"Bad request for commit endpoint: unknown operation {key!r}")
    if header is None:
        raise HubHTTPError(400, "Bad request for commit endpoint: missing header line")
    return header, operations


@router.route("POST", "/api/models/{ns}/{name}/commit/{rev}")
def commit(ctx: HubContext, request: Request, ns: str, name: str, rev: str) -> Response:
    caller = ctx.caller(request)
    repo = _repo_to_commit(ctx, request, caller, ns, name, rev)
    # 429 past the repo's commit budget; otherwise the RateLimit headers every answer carries (rate.py).
    limits = check_commit(ctx.commit_budget, repo)
    try:
        response = _commit(ctx, request, caller, repo, rev)
    except Exception as e:
        error = to_http(e)
        if error is None or not limits or (error.status == 500 and error is not e):
            raise  # a bug or a storage failure stays the app's opaque 500
        error.headers.update(limits)
        if error is e:
            raise
        raise error from e
    response.headers.update(limits)
    return response


def _commit(ctx: HubContext, request: Request, caller, repo, rev: str) -> Response:
    create_pr = _wants_pr(request)
    if create_pr and rev.startswith(PR_REF_PREFIX):
        raise HubHTTPError(400, f"Cannot open a pull request against {rev}: pass a branch, or push to {rev} directly")
    _branch_head(ctx, repo, rev)
    raw = body_bytes(request)
    header, operations = _parse_commit(ctx, repo, caller, raw)
    parent = header.get("parentCommit")
    if parent is not None and (not isinstance(parent, str) or not 5 <= len(parent) <= 40):
        raise HubHTTPError(400, "Bad request for commit endpoint: parentCommit must be 5 to 40 hex characters")
    for op in operations:
        if op.kind == "add":
            ctx.store.add_repo_object(repo, op.sha256)
    details: dict[str, Any] = {
        "title": str(header.get("summary") or "Upload files"),
        "message": str(header.get("description") or ""),
        "author": caller.name or ctx.local_user,
        "parent_commit": parent,
        "fault_hook": ctx.fault,
    }
    pr_url = None
    if create_pr:
        # One transaction opens the PR (from parentCommit, else the branch head) and commits onto refs/pr/N.
        num, sha = ctx.store.open_pull_request_with_commit(repo, rev, operations, **details)
        pr_url = f"{base_url(request)}/{repo.repo_id}/discussions/{num}"
    else:
        sha = ctx.store.create_commit(repo, rev, operations, **details)
    ctx.fault("commit.after_ref_update")  # crash tests: the commit landed, the client never hears of it
    return json_response(
        {
            "success": True,
            "commitOid": sha,
            "commitUrl": f"{base_url(request)}/{repo.repo_id}/commit/{sha}",
            "pullRequestUrl": pr_url,
            "hookOutput": "",
        }
    )
