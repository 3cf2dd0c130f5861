"""Commit a local folder to a hub branch as exactly one commit, over the protocol the hub speaks.

`upload_folder` may split large uploads into several commits and, with hf_xet installed, uses the
Xet protocol, which the local hub (and other LFS-only hubs) cannot speak. huggingface_hub picks the
protocol per `create_commit` call: Xet unless one of the files it uploads through LFS is an open
binary stream. So for LFS-only hubs (when hf_xet is installed and enabled) the smallest binary file (NUL bytes
in its first 512 bytes: the Hub and the local hub store such files with LFS whatever `.gitattributes` says;
every safetensors file qualifies) goes as an open stream, which puts the commit on the LFS path without
touching the process-wide `HF_HUB_DISABLE_XET` switch (uploads to huggingface.co in the same process keep Xet).
The other files go by path, which huggingface_hub uploads faster than streams (measured: 1.3–1.5 s
vs 2.1–3.1 s per GiB here). With no binary file at all, every file goes as a stream. Where the
sha256 of a file is already known (from `checkpoint.json`), its upload info is filled in directly,
so the client does not read the file once more just to hash it.
"""

from __future__ import annotations

import contextlib
import io
import logging
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO, cast

from .. import environment
from ..direct_io import DirectReader, direct_io_enabled
from ..formats.manifest import read_manifest
from .patches import EMPTY_COMMIT_WARNING, XET_FALLBACK_NOTICE, dropped_log_messages
from .select import is_huggingface_co

if TYPE_CHECKING:
    from huggingface_hub import CommitInfo, CommitOperationAdd, HfApi

logger = logging.getLogger(__name__)

DIRECT_READ_MIN_BYTES = 16 * 1024 * 1024  # smaller files are cheap either way, and likely cached


_quiet = {"depth": 0, "disabled_by_us": False}
_quiet_lock = threading.Lock()


@contextlib.contextmanager
def quiet_xet_notice() -> Iterator[None]:
    """Around our commits: no Xet-fallback notice, no empty-commit warning, no huggingface_hub upload progress bars.

    The bars would land in the Trainer's logs and in piped CLI output (publishing runs in the background;
    the CLI reports per revision). `HUBCKPT_DISABLE_PROGRESS_BARS=0` keeps them.
    """
    from huggingface_hub.utils import are_progress_bars_disabled, disable_progress_bars, enable_progress_bars

    silence = environment.progress_bars() is not True
    if silence:
        with _quiet_lock:
            if _quiet["depth"] == 0:
                _quiet["disabled_by_us"] = not are_progress_bars_disabled()
                if _quiet["disabled_by_us"]:
                    disable_progress_bars()
            _quiet["depth"] += 1
    try:
        with dropped_log_messages(XET_FALLBACK_NOTICE, EMPTY_COMMIT_WARNING):
            yield
    finally:
        if silence:
            with _quiet_lock:
                _quiet["depth"] -= 1
                if _quiet["depth"] == 0 and _quiet["disabled_by_us"]:
                    enable_progress_bars()
                    _quiet["disabled_by_us"] = False


def known_hashes(folder: Path) -> dict[str, tuple[str, int]]:
    """path → (sha256, size) from the folder's checkpoint.json (`read_manifest`), written when the files were.

    A folder without one, or with one that does not parse, gives {}: every file is hashed by the client.
    """
    try:
        manifest = read_manifest(folder) or {}
    except (OSError, ValueError):  # HubContentError is a ValueError
        return {}
    return {
        f["path"]: (f["sha256"], f["size"])
        for f in manifest.get("files") or []
        if isinstance(f.get("sha256"), str) and isinstance(f.get("size"), int)
    }


def _xet_would_be_used() -> bool:
    """huggingface_hub picks Xet only when hf_xet is installed and not disabled (HF_HUB_DISABLE_XET); otherwise
    every file can go by path (no stream needed to stay on LFS)."""
    from huggingface_hub import constants
    from huggingface_hub.utils import is_package_available

    return not constants.HF_HUB_DISABLE_XET and is_package_available("hf_xet")


def _is_binary(path: Path) -> bool:
    with open(path, "rb") as f:
        return b"\x00" in f.read(512)


def folder_operations(
    folder: Path,
    stack: contextlib.ExitStack,
    *,
    use_xet: bool,
    skip: Callable[[str], bool] = lambda p: False,
    rename: Callable[[str], str] = lambda p: p,
    hashes: dict[str, tuple[str, int]] | None = None,
) -> list[CommitOperationAdd]:
    """One add operation per file of `folder` (see the module docstring); `stack` closes the streams.

    `hashes`: path → (sha256, size) the caller has verified, in place of the folder's checkpoint.json (a
    mirror's folder holds another hub's checkpoint.json: untrusted, so never taken for the bytes' hash).
    """
    from huggingface_hub import CommitOperationAdd
    from huggingface_hub.lfs import UploadInfo

    known = known_hashes(folder) if hashes is None else hashes
    files = [
        (p, p.relative_to(folder).as_posix())
        for p in sorted(folder.rglob("*"))
        if p.is_file() and ".git" not in p.relative_to(folder).parts
    ]
    files = [(p, rel) for p, rel in files if not skip(rel)]
    streams: set[str] = set()
    if not use_xet and _xet_would_be_used():
        binary = [(p.stat().st_size, rel) for p, rel in files if _is_binary(p)]
        streams = {min(binary)[1]} if binary else {rel for _, rel in files}
    ops = []
    for path, rel in files:
        sha, size = known.get(rel, (None, None))
        if size != path.stat().st_size:
            sha = None
        # On the LFS path, a large file whose hash is known is read past the page cache (direct_io.py): the
        # spool wrote it that way, and reading it through the cache would cost a fresh page per 4 KiB.
        direct = sha is not None and size is not None and not use_xet and size >= DIRECT_READ_MIN_BYTES
        direct = direct and direct_io_enabled()
        if rel not in streams and not direct:
            op = CommitOperationAdd(path_in_repo=rename(rel), path_or_fileobj=str(path))
            if sha:
                op.upload_info.sha256 = bytes.fromhex(sha)  # public setter: skips a full read to hash
        elif sha and size is not None:
            # Built around an empty stream so the constructor hashes nothing; then pointed at the real file
            # with the upload info recorded when the file was written.
            with open(path, "rb") as head:
                sample = head.read(512)
            # DirectReader is a binary file object (BufferedIOBase); huggingface_hub types the field as BinaryIO.
            stream = cast(BinaryIO, stack.enter_context(DirectReader(path) if direct else open(path, "rb")))
            op = CommitOperationAdd(path_in_repo=rename(rel), path_or_fileobj=io.BytesIO(b""))
            op.path_or_fileobj = stream
            op.upload_info = UploadInfo(size=size, sample=sample, sha256=bytes.fromhex(sha))
        else:
            op = CommitOperationAdd(path_in_repo=rename(rel), path_or_fileobj=stack.enter_context(open(path, "rb")))
        ops.append(op)
    return ops


def commit_folder(
    api: HfApi,
    repo_id: str,
    folder: str | Path,
    *,
    revision: str = "main",
    commit_message: str,
    parent_commit: str | None = None,
    use_xet: bool | None = None,
) -> CommitInfo:
    """Upload every file of `folder` to `revision` in one commit.

    Args:
        api: the `HfApi` of the target hub (see `hub_api`).
        repo_id: the repo to commit to (it must exist).
        folder: the local folder; every file in it is uploaded, under the same relative path.
        revision: the branch to commit to.
        commit_message: the commit's message.
        parent_commit: the commit the branch must be at (compare-and-swap); None commits on whatever is there.
        use_xet: None = Xet only for huggingface.co endpoints; False forces the LFS protocol.

    Returns:
        huggingface_hub's `CommitInfo` of the new commit (`.oid` is its id).

    Raises:
        huggingface_hub.errors.HfHubHTTPError: the hub refused the commit (a 412 when `parent_commit` is
            no longer the branch head).
    """
    folder = Path(folder)
    if use_xet is None:
        use_xet = is_huggingface_co(api.endpoint)
    with contextlib.ExitStack() as stack, quiet_xet_notice():
        operations = folder_operations(folder, stack, use_xet=use_xet)
        info = api.create_commit(
            repo_id, operations, commit_message=commit_message, revision=revision, parent_commit=parent_commit
        )
    logger.info("committed %d files to %s@%s: %s", len(operations), repo_id, revision, info.oid)
    return info
