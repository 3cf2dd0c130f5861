"""What every parser of a file read from a hub shares: where it came from, size and depth caps, field checks.

Everything a hub sends is untrusted input (the repo's owner, or the hub itself, chose it): each format's
parser (`index`, `manifest`, `safetensors_header`, the reader's refs and listings) reads it through
`load_json` (size-capped before parsing, depth-capped) and checks every field it uses with the helpers
here, raising `HubContentError` that names the repo, revision and file. Commit ids must be 40-hex and
file names valid repo paths before either reaches a filesystem, a cache key or `revision=`.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from typing import Any, TypeGuard

from ..errors import HubContentError, InvalidNameError

# Largest metadata file (revisions.json, checkpoint.json, training_state/*.json, refs, one listing page)
# read from a hub, in bytes after decompression. An index of 10,000 revisions is about 6 MB; 32 MiB keeps
# the memory that parsing takes well under 1 GB. Larger files are refused before they are parsed.
MAX_JSON_BYTES = 32 * 1024 * 1024
# Deepest nesting accepted in such a file (hubckpt writes at most 5 levels; training state a few more).
MAX_JSON_DEPTH = 64

_COMMIT = re.compile(r"[0-9a-f]{40}")
_SHA256 = re.compile(r"[0-9a-f]{64}")


def is_commit(value: object) -> TypeGuard[str]:
    """Is `value` a full commit id: exactly 40 lowercase hex digits (no trailing newline, never a path)?"""
    return isinstance(value, str) and _COMMIT.fullmatch(value) is not None


def is_sha256(value: object) -> TypeGuard[str]:
    """Is `value` a sha256: exactly 64 lowercase hex digits (safe as a file name in a cache)?"""
    return isinstance(value, str) and _SHA256.fullmatch(value) is not None


@dataclass(frozen=True)
class Source:
    """Where a piece of untrusted input came from, for the error that refuses it."""

    repo_id: str | None = None
    revision: str | None = None
    path: str | None = None

    def __str__(self) -> str:
        where = self.repo_id or "the hub"
        if self.revision:
            where += f"@{printable(self.revision)}"
        if self.path:
            where += f"/{printable(self.path)}"
        return where

    def error(self, why: str) -> HubContentError:
        return HubContentError(
            f"{self} was refused: {why}; nothing from it was used (a file or answer from the hub that "
            "hubckpt did not write, or that was tampered with)",
            repo_id=self.repo_id,
            revision=self.revision,
            path=self.path,
        )


def printable(text: str, limit: int = 200) -> str:
    """`text` with control characters escaped and cut to `limit` characters, for messages."""
    out = "".join(ch if ch.isprintable() else ascii(ch)[1:-1] for ch in text[:limit])
    return out + ("…" if len(text) > limit else "")


def _depth(value: Any) -> int:
    """Nesting depth of a parsed JSON value (iterative: no recursion on hostile input)."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, (dict, list)):
            deepest = max(deepest, depth)
            if depth > MAX_JSON_DEPTH:
                return depth
            children = item.values() if isinstance(item, dict) else item
            stack.extend((child, depth + 1) for child in children if isinstance(child, (dict, list)))
    return deepest


def load_json(raw: bytes | str, source: Source, *, max_bytes: int = MAX_JSON_BYTES) -> Any:
    """Parse a JSON file from a hub: refused when over `max_bytes`, not JSON, or nested deeper than the cap."""
    if len(raw) > max_bytes:
        raise source.error(f"it is larger than {max_bytes} bytes")
    try:
        doc = json.loads(raw)
    except RecursionError:
        raise source.error(f"it is nested deeper than {MAX_JSON_DEPTH} levels") from None
    except ValueError as e:  # JSONDecodeError and UnicodeDecodeError
        raise source.error(f"it is not valid JSON ({printable(str(e), 100)})") from None
    if _depth(doc) > MAX_JSON_DEPTH:
        raise source.error(f"it is nested deeper than {MAX_JSON_DEPTH} levels")
    return doc


# -- fields ---------------------------------------------------------------------------------------------


def check_commit(value: Any, source: Source, what: str = "commit id") -> str:
    """A commit id: exactly 40 lowercase hex digits (never a path, never a ref)."""
    if not is_commit(value):
        shown = printable(value, 60) if isinstance(value, str) else type(value).__name__
        raise source.error(f"its {what} {shown!r} is not a 40-hex commit id")
    return value


def check_sha256(value: Any, source: Source, what: str = "sha256") -> str | None:
    """None or 64 lowercase hex digits (a sha256 names cache entries: never a path)."""
    if value is None:
        return None
    if not is_sha256(value):
        shown = printable(value, 80) if isinstance(value, str) else type(value).__name__
        raise source.error(f"its {what} {shown!r} is not a sha256 (64 hex digits)")
    return value


def check_repo_path(value: Any, source: Source, what: str = "file name") -> str:
    """A file path inside a repo (no '..', no absolute path, no control characters), as `names` defines it."""
    from ..names import normalize_path_in_repo

    if not isinstance(value, str):
        raise source.error(f"a {what} is a {type(value).__name__}, not a string")
    try:
        normalized = normalize_path_in_repo(value)
    except InvalidNameError as e:
        raise source.error(f"its {what} {printable(value, 80)!r} is not a valid repo path ({e.reason})") from None
    if normalized != value:
        raise source.error(f"its {what} {printable(value, 80)!r} is not in normal form")
    return value


def check_int(value: Any, source: Source, what: str, *, optional: bool = True, minimum: int | None = 0) -> int | None:
    """An integer (not a bool, not a float) at least `minimum`, or None when `optional`."""
    if value is None and optional:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise source.error(f"its {what} is {printable(repr(value), 40)}, not an integer")
    if minimum is not None and value < minimum:
        raise source.error(f"its {what} is {value}, below {minimum}")
    return value


def check_number(value: Any, source: Source, what: str) -> float | int | None:
    """A number or None; NaN / ±inf only in their string form ("NaN", "Infinity", "-Infinity")."""
    from .numbers import NON_FINITE

    if value is None:
        return None
    if isinstance(value, str) and value in NON_FINITE:
        return NON_FINITE[value]
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise source.error(f"its {what} is {printable(repr(value), 40)}, not a number")
    if isinstance(value, float) and not math.isfinite(value):
        raise source.error(f"its {what} is out of range ({value})")
    return value


def check_str(value: Any, source: Source, what: str, *, optional: bool = True, limit: int = 4096) -> str | None:
    """A string (or None when `optional`) of at most `limit` characters."""
    if value is None and optional:
        return None
    if not isinstance(value, str):
        raise source.error(f"its {what} is a {type(value).__name__}, not a string")
    if len(value) > limit:
        raise source.error(f"its {what} is longer than {limit} characters")
    return value


def check_type(value: Any, kind: type | tuple[type, ...], source: Source, what: str) -> Any:
    if not isinstance(value, kind):
        names = " or ".join(k.__name__ for k in (kind if isinstance(kind, tuple) else (kind,)))
        raise source.error(f"its {what} is a {type(value).__name__}, not a {names}")
    return value
