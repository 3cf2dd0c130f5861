"""Validation of the names the Hub and git accept: repo ids, branch/tag names, paths in a repo.

Shared by the local hub (which must refuse what huggingface.co refuses) and by the client side
(which should refuse early with a clear message, before any upload).
"""

from __future__ import annotations

import re

from .errors import InvalidNameError

# Same shape as huggingface_hub's REPO_ID_REGEX (utils/_validators.py), applied to each part.
_REPO_PART = re.compile(r"^\b[\w\-.]{1,96}\b$", re.ASCII)
_NAMESPACE_MAX = 96


def validate_repo_part(part: str, kind: str = "repo name") -> str:
    """Validate one part (namespace or name) of a repo id and return it."""
    if not part:
        raise InvalidNameError(kind, part, "it is empty")
    if not _REPO_PART.match(part):
        raise InvalidNameError(
            kind,
            part,
            "use letters, digits, '-', '_' or '.', at most 96 characters, not starting or ending with '-' or '.'",
        )
    if "--" in part or ".." in part:
        raise InvalidNameError(kind, part, "'--' and '..' are forbidden")
    if part.endswith(".git"):
        raise InvalidNameError(kind, part, "it cannot end with '.git'")
    return part


def split_repo_id(repo_id: str) -> tuple[str, str]:
    """Split and validate `namespace/name`; both parts are required."""
    parts = repo_id.split("/")
    if len(parts) != 2:
        raise InvalidNameError("repo id", repo_id, "expected 'namespace/name', e.g. 'alice/my-model'")
    namespace, name = parts
    validate_repo_part(namespace, "namespace")
    validate_repo_part(name, "repo name")
    return namespace, name


def validate_ref_name(name: str, kind: str = "branch name") -> str:
    """Validate a branch or tag name with the rules of `git check-ref-format --branch`.

    That is git's check of `refs/heads/<name>` plus its branch-only rules (no leading '-', not
    `HEAD`). Stricter than git on two points: `@` alone is refused (git reads it as HEAD) and so are
    `refs/...` names, which the Hub reserves (pull requests, conversions).
    """

    def bad(reason: str) -> InvalidNameError:
        return InvalidNameError(kind, name, reason)

    if not name:
        raise bad("it is empty")
    if name == "@":
        raise bad("'@' alone is not a valid ref name")
    if name.startswith("-"):
        raise bad("it cannot start with '-' (git would read it as an option)")
    if name == "HEAD":
        raise bad("'HEAD' is reserved by git")
    if name.startswith("refs/"):
        raise bad("names under 'refs/' are reserved by the Hub")
    if name.startswith("/") or name.endswith("/") or "//" in name:
        raise bad("it cannot start or end with '/' or contain '//'")
    if name.endswith("."):
        raise bad("it cannot end with '.'")
    if ".." in name:
        raise bad("it cannot contain '..'")
    if "@{" in name:
        raise bad("it cannot contain '@{'")
    for ch in name:
        if ord(ch) < 0x20 or ord(ch) == 0x7F:
            raise bad("it cannot contain control characters")
        if ch in " ~^:?*[\\":
            raise bad(f"it cannot contain {ch!r}")
    for component in name.split("/"):
        if component.startswith("."):
            raise bad("no path component may start with '.'")
        if component.endswith(".lock"):
            raise bad("no path component may end with '.lock'")
    if len(name.encode()) > 255:
        raise bad("it is longer than 255 bytes")
    return name


def normalize_path_in_repo(path: str) -> str:
    """Validate a file path inside a repo and return it normalized (no leading '/' or './').

    Refuses what could escape the repo or confuse git: '..' segments (and segments starting with
    '..', which the Hub refuses with 422), absolute paths, NUL and control characters, empty
    segments, and anything under `.git/`.
    """

    def bad(reason: str) -> InvalidNameError:
        return InvalidNameError("path", path, reason)

    if not path or path in (".", "/"):
        raise bad("it is empty")
    if "\x00" in path:
        raise bad("it contains a NUL byte")
    if any(ord(ch) < 0x20 for ch in path):
        raise bad("it contains control characters")
    if path.startswith("/"):
        raise bad("absolute paths are not allowed")
    if path.startswith("./"):
        path = path[2:]
    segments = path.split("/")
    for segment in segments:
        if segment == "":
            raise bad("it contains an empty segment ('//' or a trailing '/')")
        if segment in (".", ".."):
            raise bad("'.' and '..' segments are not allowed (they would escape the repo)")
    # The Hub answers 422 for a path whose first segment merely starts with '..' (e.g. '..\\x'),
    # but accepts 'folder/..\\file': backslashes are not separators.
    if segments[0].startswith(".."):
        raise bad("a path cannot start with '..'")
    if segments[0] == ".git":
        raise bad("files under '.git/' are not allowed")
    if len(path.encode()) > 4096:
        raise bad("it is longer than 4096 bytes")
    return path


# The publisher commits a revision on `hubckpt-staging-<name>` first and then creates `<name>` at that
# commit (hub.writer), so a kill in between leaves a staging branch. It is never a revision: listings,
# the refs fallback and the web pages skip it. (hub.writer defines the same prefix; kept equal by a test.)
STAGING_PREFIX = "hubckpt-staging-"


def is_staging_branch(name: str) -> bool:
    """A branch that is not (yet) a revision: readers skip it."""
    return name.startswith(STAGING_PREFIX)


def page_url(endpoint: str, repo_id: str, revision: str | None = None) -> str:
    """Browser link of a repo (or of one revision's files) on a hub at `endpoint`."""
    from urllib.parse import quote

    base = f"{endpoint.rstrip('/')}/{repo_id}"
    return base if revision is None else f"{base}/tree/{quote(revision, safe='')}"
