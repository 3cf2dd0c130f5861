"""One commit from files that several processes uploaded: the only place that touches huggingface_hub's
private fields of `CommitOperationAdd`.

Multi-rank publishing (`publishing/ranks.py`) has each rank upload its own files as LFS objects
(`preupload_lfs_files`) and one rank commit the whole revision. huggingface_hub's public API assumes
that the committer holds every file's bytes: `CommitOperationAdd` hashes its content when built, and
`create_commit` uploads whatever is not marked uploaded. The Hub itself only needs, in the commit, each
LFS file's path, sha256 and size, and the object uploaded to that repo before (`reference/hub-api.md`).
So the committing rank builds, for a file another rank uploaded, an operation carrying that rank's
`UploadInfo` and marked as uploaded in LFS mode (`_upload_mode`, `_is_uploaded`, `_should_ignore`:
private fields, checked by `check_private_fields` and by tests/test_multirank_commit.py, which fails
when huggingface_hub changes them).

A file the hub wants as a regular (non-LFS) file cannot be referenced that way: its bytes travel to the
committing rank instead (`UploadedFile.content`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import PublishError
from .commits import _xet_would_be_used, quiet_xet_notice

if TYPE_CHECKING:
    from huggingface_hub import CommitOperationAdd

    from .writer import HubTarget

logger = logging.getLogger(__name__)

PRIVATE_FIELDS = ("_upload_mode", "_is_uploaded", "_should_ignore", "_remote_oid")
REGULAR_MAX_BYTES = 1024 * 1024  # a "regular" file's bytes are sent to the committing rank up to this size


@dataclass(frozen=True)
class UploadedFile:
    """A file one rank put on the hub (or, for a regular file, carries): enough for another rank to commit it."""

    path: str  # path in the repo
    sha256: str
    size: int
    content: bytes | None = None  # the bytes of a file the hub stores as a regular file (not LFS)

    def to_json(self) -> dict[str, Any]:
        return {"path": self.path, "sha256": self.sha256, "size": self.size}


def check_private_fields() -> None:
    """Raise `PublishError` if huggingface_hub's `CommitOperationAdd` no longer has the fields relied on here."""
    from huggingface_hub import CommitOperationAdd

    names = {f.name for f in dataclasses.fields(CommitOperationAdd)}
    missing = [n for n in PRIVATE_FIELDS if n not in names]
    if missing:
        raise PublishError(
            "This huggingface_hub version changed CommitOperationAdd (missing "
            f"{', '.join(missing)}); multi-rank publishing cannot commit other ranks' uploads with it. "
            "Install the huggingface_hub version hubckpt declares."
        )


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(8 * 1024 * 1024), b""):
            h.update(chunk)
    return h.hexdigest()


def upload_files(
    target: HubTarget,
    files: dict[str, Path],
    *,
    revision: str = "main",
    hashes: dict[str, tuple[str, int]] | None = None,
) -> list[UploadedFile]:
    """Upload `files` (path in repo → local file) to `target`'s repo as LFS objects; nothing is committed.

    Over the protocol the hub speaks (LFS for the local hub, Xet for huggingface.co; see `commits.py`).
    `hashes` (path in repo → (sha256, size)), when the caller hashed the files as it wrote them: not read
    twice. Objects the hub has already are not sent again (the LFS batch says so)."""
    from huggingface_hub import CommitOperationAdd
    from huggingface_hub.lfs import UploadInfo

    check_private_fields()
    use_xet = target.hub.is_huggingface_co
    out: list[UploadedFile] = []
    with contextlib.ExitStack() as stack, quiet_xet_notice():
        ops: list[CommitOperationAdd] = []
        for rel, path in sorted(files.items()):
            sha, size = (hashes or {}).get(rel) or (sha256_file(path), path.stat().st_size)
            with open(path, "rb") as head:
                sample = head.read(512)
            if not use_xet and _xet_would_be_used():  # an open stream keeps the upload on LFS (commits.py)
                op = CommitOperationAdd(path_in_repo=rel, path_or_fileobj=b"")
                op.path_or_fileobj = stack.enter_context(open(path, "rb"))
            else:
                op = CommitOperationAdd(path_in_repo=rel, path_or_fileobj=b"")
                op.path_or_fileobj = str(path)
            op.upload_info = UploadInfo(size=size, sample=sample, sha256=bytes.fromhex(sha))
            ops.append(op)
        target._retrying(
            lambda: target.api.preupload_lfs_files(target.repo_id, ops, revision=revision),
            what=f"uploading {', '.join(sorted(files))}",
        )
        for op in ops:
            rel = op.path_in_repo
            if op._upload_mode == "lfs" and op._is_uploaded:
                out.append(UploadedFile(rel, op.upload_info.sha256.hex(), op.upload_info.size))
            elif op.upload_info.size <= REGULAR_MAX_BYTES:
                out.append(UploadedFile(rel, op.upload_info.sha256.hex(), op.upload_info.size, files[rel].read_bytes()))
            else:
                raise PublishError(
                    f"{target.repo_id}: the hub wants {rel} ({op.upload_info.size} bytes) as a regular file, not "
                    "LFS; multi-rank publishing needs *.safetensors stored with LFS (check the repo's .gitattributes)."
                )
    return out


def operation(uploaded: UploadedFile) -> CommitOperationAdd:
    """A commit operation for a file uploaded by another process (or carried as bytes)."""
    from huggingface_hub import CommitOperationAdd
    from huggingface_hub.lfs import UploadInfo

    if uploaded.content is not None:
        return CommitOperationAdd(path_in_repo=uploaded.path, path_or_fileobj=uploaded.content)
    check_private_fields()
    op = CommitOperationAdd(path_in_repo=uploaded.path, path_or_fileobj=b"")
    op.upload_info = UploadInfo(size=uploaded.size, sample=b"", sha256=bytes.fromhex(uploaded.sha256))
    op._upload_mode = "lfs"
    op._is_uploaded = True
    op._should_ignore = False
    return op


__all__ = ["UploadedFile", "check_private_fields", "operation", "upload_files", "sha256_file"]
