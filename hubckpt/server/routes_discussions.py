"""Discussions and pull requests of model repos, with the Hub's routes and JSON shapes.

A pull request's head is the branch ref `refs/pr/<num>` (see `storage.py`): commits reach it through
the ordinary commit route (`create_commit(create_pr=True)` opens one, `revision="refs/pr/N"` pushes
to one), and every read API resolves it like any revision. Merging applies the PR's changes since
its base onto the target branch as one commit; a path changed differently on both sides is a
conflict, answered 409 with nothing written, as on the Hub.

Access, as on huggingface.co: whoever can see a repo may open discussions and pull requests on it
and comment, with a write token (read tokens may not); the author or a repo writer may rename,
close and reopen; only the comment's author edits it; only repo writers merge and hide comments.
"""

from __future__ import annotations

import difflib
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from ..errors import HubHTTPError
from .blobs import lfs_pointer
from .context import Caller, HubContext, base_url, json_response
from .routing import Router, json_body
from .storage import Discussion, DiscussionEvent, FileEntry, Repo

router = Router()

MAX_TITLE_CHARS = 500
MAX_TEXT_CHARS = 65536
MAX_DIFF_FILE_BYTES = 1_000_000  # larger regular files are diffed as "Binary files differ"
STATUSES = ("open", "closed", "merged", "draft")


def pr_number(value: str) -> int | None:
    """The positive number written in `value` (at most 9 digits: SQLite's integers are bounded), else None."""
    if not value.isascii() or not value.isdigit() or len(value) > 9 or int(value) <= 0:
        return None
    return int(value)


def _num(value: str) -> int:
    if pr_number(value) is None:
        raise HubHTTPError(400, f"Invalid discussion number {value!r}: expected a positive integer")
    return int(value)


def _discussion(ctx: HubContext, repo: Repo, num: str) -> Discussion:
    found = ctx.store.discussion(repo, _num(num))
    if found is None:
        raise HubHTTPError(404, f"Discussion #{num} not found in {repo.repo_id}")
    return found


def _text(body: object, key: str, *, limit: int = MAX_TEXT_CHARS, required: bool = True) -> str:
    value = body.get(key) if isinstance(body, dict) else None
    if value is None and not required:
        return ""
    if not isinstance(value, str) or (required and not value.strip()):
        raise HubHTTPError(400, f"Expected a JSON body with a non-empty string {key!r}")
    if len(value) > limit:
        raise HubHTTPError(400, f"{key!r} is too long ({len(value)} characters; at most {limit})")
    return value


def _author(ctx: HubContext, name: str) -> dict[str, Any]:
    row = ctx.store.account(name)
    return {
        "name": name,
        "fullname": row["fullname"] if row is not None else name,
        "type": "user",
        "avatarUrl": "",
        "isPro": False,
        "isHf": False,
        "isMod": False,
    }


def _render(raw: str, repo: Repo) -> str:
    from .web.markdown import render_markdown

    return render_markdown(raw, repo_id=repo.repo_id)


def event_json(ctx: HubContext, repo: Repo, event: DiscussionEvent) -> dict[str, Any]:
    out: dict[str, Any] = {
        "id": event.id,
        "type": event.type,
        "createdAt": event.created_at,
        "author": _author(ctx, event.author),
    }
    if event.type == "comment":
        history = event.data["history"]
        latest = history[0]
        out["data"] = {
            "edited": len(history) > 1,
            "hidden": bool(event.data.get("hidden")),
            "numEdits": len(history) - 1,
            "editors": sorted({h["author"] for h in history}),
            "editReactions": [],
            "identifiedLanguage": {"language": "en", "probability": 1.0},
            "latest": {
                "raw": latest["raw"],
                "html": _render(latest["raw"], repo),
                "updatedAt": latest["updatedAt"],
                "author": _author(ctx, latest["author"]),
            },
            "history": [
                {"raw": h["raw"], "updatedAt": h["updatedAt"], "author": _author(ctx, h["author"])} for h in history
            ],
        }
    else:
        out["data"] = dict(event.data)
    return out


def discussion_json(ctx: HubContext, request: Request, repo: Repo, d: Discussion) -> dict[str, Any]:
    events = ctx.store.discussion_events(repo, d.num)
    return {
        "num": d.num,
        "title": d.title,
        "status": d.status,
        "createdAt": d.created_at,
        "author": _author(ctx, d.author),
        "repo": {"name": repo.repo_id, "type": "model"},
        "isPullRequest": d.is_pr,
        "numComments": sum(1 for e in events if e.type == "comment"),
        "pinned": False,
        "topReactions": [],
        "url": f"{base_url(request)}/{repo.repo_id}/discussions/{d.num}",
    }


# -- diff -----------------------------------------------------------------------------------------


def _content(ctx: HubContext, entry: FileEntry | None) -> bytes | None:
    """What git diffs for a file: the LFS pointer for LFS files, the bytes otherwise (None: too large)."""
    if entry is None:
        return b""
    if entry.lfs:
        return lfs_pointer(entry.sha256, entry.size)
    if entry.size > MAX_DIFF_FILE_BYTES:
        return None
    try:
        return ctx.blobs.path(entry.sha256).read_bytes()
    except OSError:
        return None


def pr_diff(ctx: HubContext, repo: Repo, pr: Discussion) -> str:
    """The PR's changes since its base, as `git diff` writes them (LFS files as their pointers)."""
    if pr.base_commit is None:
        return ""
    changes, _ = ctx.store.pr_changes(repo, pr)
    base_files = ctx.store.files(repo, pr.base_commit)
    parts: list[str] = []
    for path, new in changes.items():
        old = base_files.get(path)
        lines = [f"diff --git a/{path} b/{path}"]
        if old is None:
            lines.append("new file mode 100644")
        elif new is None:
            lines.append("deleted file mode 100644")
        lines.append(f"index {(old.git_oid if old else '0' * 40)[:7]}..{(new.git_oid if new else '0' * 40)[:7]}")
        a, b = _content(ctx, old), _content(ctx, new)
        try:
            a_text = a.decode("utf-8") if a is not None else None
            b_text = b.decode("utf-8") if b is not None else None
        except UnicodeDecodeError:
            a_text = b_text = None
        if a_text is None or b_text is None:
            lines.append(
                f"Binary files {'a/' + path if old else '/dev/null'} and {'b/' + path if new else '/dev/null'} differ"
            )
            parts.append("\n".join(lines) + "\n")
            continue
        body = difflib.unified_diff(
            a_text.splitlines(keepends=True),
            b_text.splitlines(keepends=True),
            fromfile=f"a/{path}" if old else "/dev/null",
            tofile=f"b/{path}" if new else "/dev/null",
        )
        text = "".join(line if line.endswith("\n") else line + "\n\\ No newline at end of file\n" for line in body)
        parts.append("\n".join(lines) + "\n" + text)
    return "".join(parts)


def details_json(ctx: HubContext, request: Request, repo: Repo, d: Discussion, diff: bool) -> dict[str, Any]:
    out = discussion_json(ctx, request, repo, d)
    out["events"] = [event_json(ctx, repo, e) for e in ctx.store.discussion_events(repo, d.num)]
    out["locked"] = False
    if d.is_pr:
        changes: dict[str, Any] = {"base": f"refs/heads/{d.target_branch or 'main'}"}
        if d.merge_commit:
            changes["mergeCommitId"] = d.merge_commit
        out["changes"] = changes
        out["filesWithConflicts"] = ctx.store.pr_changes(repo, d)[1] if d.status in ("open", "draft") else []
        if diff:
            out["diff"] = pr_diff(ctx, repo, d)
    return out


# -- routes ---------------------------------------------------------------------------------------


@router.route("GET", "/api/models/{ns}/{name}/discussions")
def list_discussions(ctx: HubContext, request: Request, ns: str, name: str) -> Response:
    repo = ctx.repo_for(ns, name, ctx.caller(request))
    kind = request.query_params.get("type", "all")
    status = request.query_params.get("status", "all")
    author = request.query_params.get("author")
    if kind not in ("all", "discussion", "pull_request"):
        raise HubHTTPError(400, f"Invalid type {kind!r}: use 'all', 'discussion' or 'pull_request'")
    if status not in ("all", *STATUSES):
        raise HubHTTPError(400, f"Invalid status {status!r}: use 'all' or one of {', '.join(STATUSES)}")
    try:
        page = max(0, int(request.query_params.get("p", "0")))
    except ValueError as e:
        raise HubHTTPError(400, "Query parameter 'p' must be an integer") from e
    everything = ctx.store.discussions(repo)
    selected = [
        d
        for d in everything
        if (kind == "all" or d.is_pr == (kind == "pull_request"))
        and (status == "all" or d.status == status)
        and (author is None or d.author.lower() == author.lower())
    ]
    size = ctx.discussions_page_size
    start = page * size
    return json_response(
        {
            "discussions": [discussion_json(ctx, request, repo, d) for d in selected[start : start + size]],
            "count": len(selected),
            "start": start,
            "numClosedDiscussions": sum(1 for d in everything if d.status == "closed"),
        }
    )


@router.route("POST", "/api/models/{ns}/{name}/discussions")
def create_discussion(ctx: HubContext, request: Request, ns: str, name: str) -> Response:
    caller = ctx.caller(request)
    repo = ctx.repo_to_propose(ns, name, caller)
    body = json_body(request)
    title = _text(body, "title", limit=MAX_TITLE_CHARS).strip()
    description = _text(body, "description", required=False)
    pull_request = isinstance(body, dict) and body.get("pullRequest") is True
    num = ctx.store.create_discussion(
        repo, title=title, author=_name(ctx, caller), description=description, pull_request=pull_request
    )
    return json_response({"num": num, "url": f"{base_url(request)}/{repo.repo_id}/discussions/{num}"})


@router.route("GET", "/api/models/{ns}/{name}/discussions/{rev}")
def discussion_details(ctx: HubContext, request: Request, ns: str, name: str, rev: str) -> Response:
    repo = ctx.repo_for(ns, name, ctx.caller(request))
    d = _discussion(ctx, repo, rev)
    diff = request.query_params.get("diff") in ("1", "true")
    return json_response(details_json(ctx, request, repo, d, diff))


def _name(ctx: HubContext, caller: Caller) -> str:
    return caller.name or ctx.local_user


def _check_author_or_writer(ctx: HubContext, repo: Repo, caller: Caller, d: Discussion, what: str) -> None:
    if _name(ctx, caller).lower() != d.author.lower() and not ctx.can_write(repo, caller):
        raise HubHTTPError(403, f"Only the author of #{d.num} or a writer of {repo.repo_id} can {what} it.")


@router.route("POST", "/api/models/{ns}/{name}/discussions/{rev}/comment")
def comment(ctx: HubContext, request: Request, ns: str, name: str, rev: str) -> Response:
    caller = ctx.caller(request)
    repo = ctx.repo_to_propose(ns, name, caller)
    d = _discussion(ctx, repo, rev)
    text = _text(json_body(request), "comment")
    event = ctx.store.comment_discussion(repo, d.num, _name(ctx, caller), text)
    return json_response({"newMessage": event_json(ctx, repo, event)})


@router.route("POST", "/api/models/{ns}/{name}/discussions/{rev}/comment/{path}/edit")
def edit_comment(ctx: HubContext, request: Request, ns: str, name: str, rev: str, path: str) -> Response:
    caller = ctx.caller(request)
    repo = ctx.repo_to_propose(ns, name, caller)
    d = _discussion(ctx, repo, rev)
    content = _text(json_body(request), "content")
    events = {e.id: e for e in ctx.store.discussion_events(repo, d.num) if e.type == "comment"}
    original = events.get(path.lower())
    if original is None:
        raise HubHTTPError(404, f"Comment {path} not found in discussion #{d.num}")
    if original.author.lower() != _name(ctx, caller).lower():
        raise HubHTTPError(403, "Only the author of a comment can edit it.")
    event = ctx.store.edit_comment(repo, d.num, original.id, _name(ctx, caller), content)
    assert event is not None
    return json_response({"updatedComment": event_json(ctx, repo, event)})


@router.route("POST", "/api/models/{ns}/{name}/discussions/{rev}/comment/{path}/hide")
def hide_comment(ctx: HubContext, request: Request, ns: str, name: str, rev: str, path: str) -> Response:
    caller = ctx.caller(request)
    repo = ctx.repo_for(ns, name, caller, write=True)
    d = _discussion(ctx, repo, rev)
    event = ctx.store.hide_comment(repo, d.num, path.lower())
    if event is None:
        raise HubHTTPError(404, f"Comment {path} not found in discussion #{d.num}")
    return json_response({"updatedComment": event_json(ctx, repo, event)})


@router.route("POST", "/api/models/{ns}/{name}/discussions/{rev}/title")
def rename(ctx: HubContext, request: Request, ns: str, name: str, rev: str) -> Response:
    caller = ctx.caller(request)
    repo = ctx.repo_to_propose(ns, name, caller)
    d = _discussion(ctx, repo, rev)
    _check_author_or_writer(ctx, repo, caller, d, "rename")
    title = _text(json_body(request), "title", limit=MAX_TITLE_CHARS).strip()
    event = ctx.store.rename_discussion(repo, d.num, _name(ctx, caller), title)
    return json_response({"newTitle": event_json(ctx, repo, event)})


@router.route("POST", "/api/models/{ns}/{name}/discussions/{rev}/status")
def change_status(ctx: HubContext, request: Request, ns: str, name: str, rev: str) -> Response:
    caller = ctx.caller(request)
    repo = ctx.repo_to_propose(ns, name, caller)
    d = _discussion(ctx, repo, rev)
    _check_author_or_writer(ctx, repo, caller, d, "close or reopen")
    body = json_body(request)
    status = body.get("status") if isinstance(body, dict) else None
    if status not in ("open", "closed"):
        raise HubHTTPError(400, f"Invalid status {status!r}: use 'open' or 'closed'")
    if d.status == "merged":
        raise HubHTTPError(400, f"Pull request #{d.num} is merged; its status can no longer change.")
    text = _text(body, "comment", required=False).strip() or None
    event = ctx.store.set_discussion_status(repo, d.num, _name(ctx, caller), status, text)
    return json_response({"newStatus": event_json(ctx, repo, event)})


@router.route("POST", "/api/models/{ns}/{name}/discussions/{rev}/merge")
def merge(ctx: HubContext, request: Request, ns: str, name: str, rev: str) -> Response:
    caller = ctx.caller(request)
    repo = ctx.repo_for(ns, name, caller, write=True)
    d = _discussion(ctx, repo, rev)
    if not d.is_pr:
        raise HubHTTPError(400, f"#{d.num} is a discussion, not a pull request: there is nothing to merge.")
    if d.status not in ("open", "draft"):
        raise HubHTTPError(400, f"Pull request #{d.num} is {d.status}; only open pull requests can be merged.")
    text = _text(json_body(request), "comment", required=False).strip() or None
    if not ctx.store.pr_changes(repo, d)[0]:
        raise HubHTTPError(400, f"Pull request #{d.num} changes nothing: commit to {d.ref} first.")
    outcome = ctx.store.merge_pull_request(repo, d.num, _name(ctx, caller), text)
    if outcome.commit is None:
        raise HubHTTPError(
            409,
            f"Merge conflict: {', '.join(outcome.conflicts)} changed on {d.target_branch or 'main'} since the pull "
            "request was opened. Update the pull request (commit to its refs/pr branch) and merge again.",
            extra={"filesWithConflicts": outcome.conflicts},
        )
    return json_response({"mergeCommitId": outcome.commit})
