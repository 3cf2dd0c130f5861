"""Commit a local folder to a hub branch as exactly one commit.

`upload_folder` may split large uploads into several commits and, with hf_xet installed, uses the
Xet protocol, which the local hub (and other LFS-only hubs) cannot speak. `create_commit` with
operations opened as binary file objects always takes the LFS path, per call, without touching
the process-wide `HF_HUB_DISABLE_XET` switch, so uploads to huggingface.co in the same process
keep Xet.
"""

from __future__ import annotations

import contextlib
import logging
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from huggingface_hub import CommitInfo, HfApi

logger = logging.getLogger(__name__)


class _DropXetFallbackNotice(logging.Filter):
    """Passing file objects to pick LFS is deliberate here; the client's notice about it is noise."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "not supported by Xet Storage" not in record.getMessage()


def _files_under(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file() and ".git" not in p.relative_to(folder).parts)


def commit_folder(api: "HfApi", repo_id: str, folder: str | Path, *, revision: str = "main",
                  commit_message: str, parent_commit: str | None = None, use_xet: bool | None = None) -> "CommitInfo":
    """Upload every file of `folder` to `revision` in one commit.

    Args:
        use_xet: None = Xet only for huggingface.co endpoints; False forces the LFS protocol.
    """
    from huggingface_hub import CommitOperationAdd

    folder = Path(folder)
    if use_xet is None:
        use_xet = api.endpoint.rstrip("/") in ("https://huggingface.co", "https://hf.co")
    files = _files_under(folder)
    with contextlib.ExitStack() as stack:
        commit_logger = logging.getLogger("huggingface_hub._commit_api")
        notice_filter = _DropXetFallbackNotice()
        commit_logger.addFilter(notice_filter)
        stack.callback(commit_logger.removeFilter, notice_filter)
        operations = []
        for path in files:
            rel = path.relative_to(folder).as_posix()
            # An open binary file object makes huggingface_hub pick LFS for this commit (see module doc).
            source = str(path) if use_xet else stack.enter_context(open(path, "rb"))
            operations.append(CommitOperationAdd(path_in_repo=rel, path_or_fileobj=source))
        info = api.create_commit(repo_id, operations, commit_message=commit_message, revision=revision,
                                 parent_commit=parent_commit)
    logger.info("committed %d files to %s@%s: %s", len(files), repo_id, revision, info.oid)
    return info
