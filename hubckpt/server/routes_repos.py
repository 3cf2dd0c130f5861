"""Identity, repo lifecycle, repo info, refs, branches, tags, history and YAML validation routes."""

from __future__ import annotations

import re
from typing import Any

import yaml
from starlette.requests import Request
from starlette.responses import Response

from ..errors import HubHTTPError, InvalidNameError
from ..names import validate_ref_name
from .context import HubContext, base_url, json_response, repo_not_found, split_namespace_name
from .gitattributes import DEFAULT_GITATTRIBUTES
from .routing import Router, body_bytes, json_body, next_link, query_bool
from .storage import PR_REF_PREFIX, Commit, Repo
from .trees import sibling_entries

router = Router()


def _json_body(request: Request) -> dict:
    body = json_body(request)
    if not isinstance(body, dict):
        raise HubHTTPError(400, "Request body must be a JSON object")
    return body


# -- identity -------------------------------------------------------------------------------------


@router.route("GET", "/api/whoami-v2")
def whoami(ctx: HubContext, request: Request) -> Response:
    caller = ctx.caller(request)
    if caller.name is None:
        raise HubHTTPError(401, "Invalid credentials in Authorization header")
    account = ctx.store.account(caller.name)
    orgs = []
    for org in caller.orgs:
        row = ctx.store.account(org)
        orgs.append({"type": "org", "name": org, "fullname": row["fullname"] if row else org})
    token = caller.token
    return json_response(
        {
            "type": "user",
            "name": caller.name,
            "fullname": account["fullname"] if account else caller.name,
            "orgs": orgs,
            "isPro": False,
            "canPay": False,
            "emailVerified": True,
            "auth": {
                "type": "access_token",
                "accessToken": {
                    "displayName": token.display_name if token else "local",
                    "role": token.role if token else "write",
                },
            },
        }
    )


@router.route("GET", "/api/agent-harnesses")
def agent_harnesses(ctx: HubContext, request: Request) -> Response:
    return json_response({"standardEnvVars": [], "harnesses": {}})


# -- repo lifecycle -------------------------------------------------------------------------------


def _namespace_and_name(ctx: HubContext, caller, body: dict) -> tuple[str, str]:
    name = body.get("name")
    if not isinstance(name, str) or not name:
        raise HubHTTPError(400, "Missing repo 'name' in request body")
    namespace = body.get("organization") or caller.name
    if namespace is not None and not isinstance(namespace, str):
        raise HubHTTPError(400, "'organization' must be a string")
    if namespace is None:
        raise HubHTTPError(401, "You must be authenticated (pass a token) to create or delete a repo.")
    repo_type = body.get("type")
    if repo_type not in (None, "model"):
        raise HubHTTPError(400, f"The hubckpt local hub only serves model repos, not {repo_type!r} repos.")
    return split_namespace_name(namespace, name)


@router.route("POST", "/api/repos/create")
def create_repo(ctx: HubContext, request: Request) -> Response:
    caller = ctx.caller(request)
    body = _json_body(request)
    namespace, name = _namespace_and_name(ctx, caller, body)
    visibility = body.get("visibility")
    private = visibility == "private" if visibility is not None else bool(body.get("private", False))
    url = f"{base_url(request)}/{namespace}/{name}"
    # Permission before existence: a 409 to a caller who may not write here would tell them that a
    # (possibly private) repo of that name exists.
    if not ctx.can_write_namespace(namespace, caller):
        if caller.name is None:
            raise HubHTTPError(401, "You must be authenticated (pass a write token) to create a repo.")
        raise HubHTTPError(403, f"You don't have the rights to create a model under the namespace {namespace!r}")
    existing = ctx.store.get_repo(namespace, name)
    if existing is not None:
        raise HubHTTPError(
            409, "You already created this model repo", extra={"url": f"{base_url(request)}/{existing.repo_id}"}
        )
    if ctx.single_user and ctx.store.account(namespace) is None:
        # Single-user hub: any namespace is the local user's own organisation.
        ctx.store.add_member(namespace, ctx.local_user)
    sha = ctx.blobs.put_bytes(DEFAULT_GITATTRIBUTES.encode())
    repo = ctx.store.create_repo(namespace, name, private, caller.name or ctx.local_user, DEFAULT_GITATTRIBUTES, sha)
    if repo is None:  # lost a race with another create
        raise HubHTTPError(409, "You already created this model repo", extra={"url": url})
    return json_response({"url": url, "name": repo.repo_id, "id": repo.repo_id})


@router.route("DELETE", "/api/repos/delete")
def delete_repo(ctx: HubContext, request: Request) -> Response:
    caller = ctx.caller(request)
    body = _json_body(request)
    namespace, name = _namespace_and_name(ctx, caller, body)
    repo = ctx.repo_for(namespace, name, caller, write=True)
    ctx.store.delete_repo(repo)
    return json_response({})


@router.route("POST", "/api/repos/move")
def move_repo(ctx: HubContext, request: Request) -> Response:
    caller = ctx.caller(request)
    body = _json_body(request)
    try:
        src_ns, src_name = str(body["fromRepo"]).split("/")
        dst_ns, dst_name = str(body["toRepo"]).split("/")
    except (KeyError, ValueError) as e:
        raise HubHTTPError(400, "Expected 'fromRepo' and 'toRepo' as 'namespace/name'") from e
    split_namespace_name(dst_ns, dst_name)
    repo = ctx.repo_for(src_ns, src_name, caller, write=True)
    if not ctx.can_write_namespace(dst_ns, caller):
        raise HubHTTPError(403, f"You don't have the rights to create a model under the namespace {dst_ns!r}")
    ctx.store.move_repo(repo, dst_ns, dst_name)
    return json_response({})


@router.route("PUT", "/api/models/{ns}/{name}/settings")
def repo_settings(ctx: HubContext, request: Request, ns: str, name: str) -> Response:
    caller = ctx.caller(request)
    repo = ctx.repo_for(ns, name, caller, write=True)
    body = _json_body(request)
    if "gated" in body:
        gated = body["gated"]
        if gated not in ("manual", "auto", False):
            raise HubHTTPError(400, f"Invalid gated status {gated!r}: use 'manual', 'auto' or false")
        ctx.store.set_gated(repo, gated or "")
    if "visibility" in body:
        if body["visibility"] not in ("private", "public"):
            raise HubHTTPError(400, f"Unsupported visibility {body['visibility']!r}: use 'private' or 'public'")
        ctx.store.set_private(repo, body["visibility"] == "private")
    elif "private" in body:
        ctx.store.set_private(repo, bool(body["private"]))
    return json_response({})


# -- repo info ------------------------------------------------------------------------------------

_YAML_BLOCK = re.compile(r"^(\s*---[\r\n]+)([\S\s]*?)([\r\n]+---(\r\n|\n|$))")


def card_data(ctx: HubContext, repo: Repo, files: dict) -> dict | None:
    entry = files.get("README.md")
    if entry is None or entry.size > 1_000_000:
        return None
    try:
        text = ctx.blobs.path(entry.sha256).read_text("utf-8")
        match = _YAML_BLOCK.match(text)
        data = yaml.safe_load(match.group(2)) if match else None
    except (OSError, UnicodeDecodeError, yaml.YAMLError):
        return None
    return data if isinstance(data, dict) else None


def _model_info(ctx: HubContext, request: Request, repo: Repo, sha: str) -> Response:
    files = ctx.store.files(repo, sha)
    commit = ctx.store.commit(repo, sha)
    card = card_data(ctx, repo, files)
    blobs = query_bool(request, "blobs")
    info = {
        "_id": f"{repo.id:024x}",
        "id": repo.repo_id,
        "modelId": repo.repo_id,
        "author": repo.namespace,
        "sha": sha,
        "lastModified": commit.date if commit else repo.last_modified,
        "createdAt": repo.created_at,
        "private": repo.private,
        "gated": repo.gated or False,
        "disabled": False,
        "downloads": 0,
        "likes": 0,
        "tags": list(card.get("tags") or []) if card else [],
        "library_name": card.get("library_name") if card else None,
        "pipeline_tag": card.get("pipeline_tag") if card else None,
        "siblings": sibling_entries(files.values(), with_blobs=blobs),
    }
    if card is not None:
        info["cardData"] = card
    return json_response(info)


@router.route("GET", "/api/models/{ns}/{name}")
def model_info(ctx: HubContext, request: Request, ns: str, name: str) -> Response:
    caller = ctx.caller(request)
    repo = ctx.repo_for(ns, name, caller)
    return _model_info(ctx, request, repo, ctx.resolve(repo, "main"))


@router.route("GET", "/api/models/{ns}/{name}/revision/{rev}")
def model_info_revision(ctx: HubContext, request: Request, ns: str, name: str, rev: str) -> Response:
    caller = ctx.caller(request)
    repo = ctx.repo_for(ns, name, caller)
    return _model_info(ctx, request, repo, ctx.resolve(repo, rev))


# -- refs -----------------------------------------------------------------------------------------


@router.route("GET", "/api/models/{ns}/{name}/refs")
def list_refs(ctx: HubContext, request: Request, ns: str, name: str) -> Response:
    caller = ctx.caller(request)
    repo = ctx.repo_for(ns, name, caller)
    out: dict[str, list] = {"branches": [], "tags": [], "converts": [], "pullRequests": []}
    for row in ctx.store.refs(repo):
        if row["kind"] == "branch" and row["name"].startswith(PR_REF_PREFIX):
            # A pull request's head: listed as {"name": "refs/pr/1", "ref": "refs/pr/1"}, as on the Hub.
            out["pullRequests"].append({"name": row["name"], "ref": row["name"], "targetCommit": row["target"]})
            continue
        prefix = "refs/heads/" if row["kind"] == "branch" else "refs/tags/"
        key = "branches" if row["kind"] == "branch" else "tags"
        out[key].append({"name": row["name"], "ref": prefix + row["name"], "targetCommit": row["target"]})
    if not query_bool(request, "include_prs"):
        del out["pullRequests"]
    else:
        out["pullRequests"].sort(key=lambda item: int(item["name"][len(PR_REF_PREFIX) :]))
    return json_response(out)


def _commit_json(commit: Commit, formatted: bool) -> dict[str, Any]:
    data: dict[str, Any] = {
        "id": commit.sha,
        "title": commit.title,
        "message": commit.message,
        "date": commit.date,
        "authors": [{"user": commit.author}],
    }
    if formatted:
        from html import escape

        data["formatted"] = {"title": escape(commit.title), "message": escape(commit.message)}
    return data


@router.route("GET", "/api/models/{ns}/{name}/commits/{rev}")
def list_commits(ctx: HubContext, request: Request, ns: str, name: str, rev: str) -> Response:
    caller = ctx.caller(request)
    repo = ctx.repo_for(ns, name, caller)
    head = ctx.resolve(repo, rev)
    history = ctx.store.history(repo, head)
    try:
        page = max(0, int(request.query_params.get("p", "0")))
    except ValueError as e:
        raise HubHTTPError(400, "Query parameter 'p' must be an integer") from e
    size = ctx.commits_page_size
    formatted = "formatted" in request.query_params.getlist("expand[]")
    chunk = history[page * size : (page + 1) * size]
    headers = {}
    if (page + 1) * size < len(history):
        headers["Link"] = next_link(request, "p", page + 1)
    headers["X-Total-Count"] = str(len(history))
    return json_response([_commit_json(c, formatted) for c in chunk], headers=headers)


@router.route("POST", "/api/models/{ns}/{name}/branch/{rev}")
def create_branch(ctx: HubContext, request: Request, ns: str, name: str, rev: str) -> Response:
    caller = ctx.caller(request)
    repo = ctx.repo_for(ns, name, caller, write=True)
    body = _json_body(request) if body_bytes(request) else {}
    starting_point = body.get("startingPoint")
    try:
        validate_ref_name(rev, "branch name")
    except InvalidNameError as e:
        raise HubHTTPError(400, str(e)) from e
    target = ctx.resolve(repo, starting_point) if starting_point else ctx.resolve(repo, "main")
    if not ctx.store.create_ref(repo, "branch", rev, target):
        raise HubHTTPError(409, f"Reference refs/heads/{rev} already exists")
    return json_response({})


@router.route("DELETE", "/api/models/{ns}/{name}/branch/{rev}")
def delete_branch(ctx: HubContext, request: Request, ns: str, name: str, rev: str) -> Response:
    caller = ctx.caller(request)
    repo = ctx.repo_for(ns, name, caller, write=True)
    if rev == "main":
        raise HubHTTPError(403, "Cannot delete refs/heads/main: it is the default branch")
    if rev.startswith(PR_REF_PREFIX):
        raise HubHTTPError(403, f"Cannot delete {rev}: it is a pull request (close it instead)")
    if not ctx.store.delete_ref(repo, "branch", rev):
        raise HubHTTPError(404, f"Invalid rev id: {rev}", "RevisionNotFound")
    return json_response({})


@router.route("POST", "/api/models/{ns}/{name}/tag/{rev}")
def create_tag(ctx: HubContext, request: Request, ns: str, name: str, rev: str) -> Response:
    caller = ctx.caller(request)
    repo = ctx.repo_for(ns, name, caller, write=True)
    body = _json_body(request)
    target = ctx.resolve(repo, rev)  # the Hub checks the revision before the tag name
    tag = body.get("tag")
    if not isinstance(tag, str):
        raise HubHTTPError(400, "Missing 'tag' in request body")
    try:
        validate_ref_name(tag, "tag name")
    except InvalidNameError as e:
        raise HubHTTPError(400, str(e)) from e
    if not ctx.store.create_ref(repo, "tag", tag, target):
        raise HubHTTPError(409, f"Tag {tag} already exists")
    return json_response({})


@router.route("DELETE", "/api/models/{ns}/{name}/tag/{rev}")
def delete_tag(ctx: HubContext, request: Request, ns: str, name: str, rev: str) -> Response:
    caller = ctx.caller(request)
    repo = ctx.repo_for(ns, name, caller, write=True)
    if not ctx.store.delete_ref(repo, "tag", rev):
        raise HubHTTPError(404, f"Invalid rev id: {rev}", "RevisionNotFound")
    return json_response({})


@router.route("POST", "/api/models/{ns}/{name}/super-squash/{rev}")
def super_squash(ctx: HubContext, request: Request, ns: str, name: str, rev: str) -> Response:
    caller = ctx.caller(request)
    repo = ctx.repo_for(ns, name, caller, write=True)
    body = _json_body(request) if body_bytes(request) else {}
    if ctx.store.ref(repo, "branch", rev) is None or rev.startswith(PR_REF_PREFIX):
        if ctx.store.resolve(repo, rev) is None:
            raise HubHTTPError(404, f"Invalid rev id: {rev}", "RevisionNotFound")
        raise HubHTTPError(400, f"{rev} is not a branch: only branches can be squashed")
    message = body.get("message") or f"Super-squash branch '{rev}' using huggingface_hub"
    sha = ctx.store.squash(repo, rev, message, caller.name or ctx.local_user)
    return json_response({"commitId": sha})


# -- model card metadata --------------------------------------------------------------------------


@router.route("POST", "/api/validate-yaml")
def validate_yaml(ctx: HubContext, request: Request) -> Response:
    try:
        body = json_body(request)
        content = body.get("content", "") if isinstance(body, dict) else ""
    except ValueError:
        return json_response({"errors": [{"message": "Request body is not valid JSON"}]}, 400)
    match = _YAML_BLOCK.match(content or "")
    if match is None:
        return json_response({"warnings": [{"message": "Empty or missing yaml metadata in repo card"}], "errors": []})
    try:
        data = yaml.safe_load(match.group(2))
    except yaml.YAMLError as e:
        return json_response({"errors": [{"message": f"Invalid YAML in README.md metadata: {e}"}]}, 400)
    errors = []
    if data is not None and not isinstance(data, dict):
        errors.append({"message": "README.md metadata must be a YAML mapping"})
    elif isinstance(data, dict) and "model-index" in data and not isinstance(data["model-index"], list):
        errors.append({"message": '"model-index" must be an array'})
    if errors:
        return json_response({"errors": errors}, 400)
    return json_response({"warnings": [], "errors": []})


# -- repos of other types -------------------------------------------------------------------------


@router.route("GET HEAD POST PUT DELETE", "/api/datasets/{any}")
@router.route("GET HEAD POST PUT DELETE", "/api/spaces/{any}")
def other_repo_types(ctx: HubContext, request: Request, any: str) -> Response:
    raise repo_not_found(ctx.caller(request))
