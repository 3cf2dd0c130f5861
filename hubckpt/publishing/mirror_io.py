"""What a mirror reads and writes, one file or commit at a time (`publishing/mirror_plan.py` decides what to copy).

- `history`: a branch's commits, oldest first; `copied_from` reads the `Mirrored-From: <sha>` line a
  mirrored commit carries (the mapping source → target is read back from the target itself).
- `MirrorIO.listing`: a commit's files with their oids (git blob oid, LFS sha256), checked as untrusted
  input; one request per commit and side, cached for the run.
- `MirrorIO.fetch`: one file of the source, verified against the listing's sha256 (small regular files
  read once per run), cards retargeted (`cards.retarget_card`).
- `MirrorIO.commit`: one commit on the target, never twice: a lost answer or a 412 is settled by reading
  the branch's head and its `Mirrored-From` line. What each answer (or 429) says of the target's commit
  budget goes to `MirrorIO.pacer` (`hub/budget.py`), which the run asks before each commit.
"""

from __future__ import annotations

import re
import shutil
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..cards import retarget_card
from ..errors import IntegrityError
from ..formats.untrusted import check_commit, check_repo_path
from ..hub.budget import CommitPacer, commit_answers, watch_commit_answers
from ..hub.reader import HubReader
from ..hub.retries import retry_after, status_of
from ..hub.uploaded import sha256_file
from ..hub.writer import HubTarget
from .layout import CARD_FILE

TRAILER = "Mirrored-From: "
_TRAILER_RE = re.compile(r"^Mirrored-From: ([0-9a-f]{40})$", re.MULTILINE)
SMALL_FILE_BYTES = 1024 * 1024  # regular files up to this size are kept in memory for the run, read once


@dataclass(frozen=True)
class Entry:
    """One file of a listing: enough to tell whether two files are the same without reading them."""

    path: str
    size: int
    oid: str  # git blob oid
    sha256: str | None  # LFS files only

    @property
    def key(self) -> str:
        return self.sha256 or self.oid


def history(side: HubReader, branch: str) -> list[Any]:
    """The commits of `branch`, oldest first (huggingface_hub's `GitCommitInfo`), each id checked to be 40-hex.

    The ids are the mirror's bookkeeping (`Mirrored-From` lines, the revisions steps read and copy): one that
    is not a full commit id (a short one a hub still resolves, say) would never be recognised as copied."""
    commits = side.retrying(
        lambda: side.api.list_repo_commits(side.repo_id, revision=branch),
        what=f"listing commits of {side.repo_id}@{branch}",
    )
    source = side.source("(commit history)", branch)
    for commit in commits:
        check_commit(commit.commit_id, source)
    return list(reversed(commits))


def copied_from(commit: Any) -> str | None:
    """The source commit a mirrored commit copies (its `Mirrored-From` line), None for any other commit."""
    found = _TRAILER_RE.search(f"{commit.title or ''}\n{commit.message or ''}")
    return found[1] if found else None


class MirrorIO:
    """Reads of both hubs and writes of the target for one mirror run (thread-safe where prefetching needs it)."""

    def __init__(self, src: HubReader, dst: HubTarget, *, ends_at: float | None = None) -> None:
        self.src, self.dst = src, dst
        self.ends_at = ends_at  # time.monotonic() of the run's deadline: a 429 asking to wait past it ends the run
        self.listings: dict[tuple[str, str], dict[str, Entry]] = {}  # (side, commit) → files
        self.small: dict[str, bytes] = {}  # git oid → bytes of small regular files read this run
        self.lock = threading.Lock()
        self.bytes_done = 0  # bytes read from the source
        self.pacer = CommitPacer()  # the target's commit budget, as its answers tell it
        # Told the seconds a refused commit (429) will now wait, as the target asks (`mirror_progress.Pace`).
        self.on_refused: Callable[[float], None] = lambda wait_s: None
        watch_commit_answers()  # now, before prefetching threads use the shared client

    def listing(self, side: HubReader, commit: str) -> dict[str, Entry]:
        key = (side.hub.endpoint + side.repo_id, commit)
        if key not in self.listings:
            entries = side.retrying(
                lambda: list(side.api.list_repo_tree(side.repo_id, revision=commit, recursive=True)),
                what=f"listing files of {side.repo_id}@{commit[:12]}",
            )
            source = side.source("(file listing)", commit)
            files: dict[str, Entry] = {}
            for e in entries:
                if not hasattr(e, "blob_id"):  # a folder
                    continue
                path = check_repo_path(e.path, source)
                lfs = getattr(e, "lfs", None)
                sha = getattr(lfs, "sha256", None) if lfs is not None else None
                if sha is not None and not re.fullmatch(r"[0-9a-f]{64}", str(sha)):
                    raise source.error(f"the LFS oid of {path} is not a sha256")
                files[path] = Entry(path, int(e.size or 0), str(e.blob_id), sha)
            self.listings[key] = files
        return self.listings[key]

    def fetch(self, commit: str, entry: Entry, folder: Path, cache: Path) -> None:
        """Download one file of the source at `commit` into `folder` (cards rewritten), verified by sha256.

        Small regular files (a final revision's checkpoint.json on `main`...) are read once per run."""
        dest = folder / entry.path
        dest.parent.mkdir(parents=True, exist_ok=True)
        if entry.sha256 is None and entry.oid in self.small:
            dest.write_bytes(self.small[entry.oid])
        else:
            self.download(commit, entry, dest, cache)
        if entry.path == CARD_FILE:
            dest.write_text(self.rewrite_card(dest.read_text(encoding="utf-8")), encoding="utf-8")

    def download(self, commit: str, entry: Entry, dest: Path, cache: Path) -> None:
        from huggingface_hub.utils.sha import git_hash

        from ..hub.guard import guarded

        what = f"downloading {entry.path}@{commit[:12]} of {self.src.repo_id}"

        def fetch() -> str:
            # Held to hubckpt's rules for the source hub (its token to its own origin only, a stall bounded):
            # the source is another hub, as untrusted as any (hub/guard.py).
            with guarded(self.src.endpoint, what):
                return self.src.api.hf_hub_download(self.src.repo_id, entry.path, revision=commit, cache_dir=str(cache))

        got = Path(self.src.retrying(fetch, what=what)).resolve()
        # Checked against the source's listing: an LFS file by its sha256, a regular one (a card, the index,
        # checkpoint.json: small) by its git blob id, so the target's copy is the file the listing names.
        if (sha256_file(got) != entry.sha256) if entry.sha256 else (git_hash(got.read_bytes()) != entry.oid):
            raise IntegrityError(
                f"{self.src.repo_id}@{commit[:12]}/{entry.path}: the bytes received do not match the "
                f"{'sha256' if entry.sha256 else 'git blob id'} of the source's listing; nothing was committed. "
                "Run the mirror again.",
                path=entry.path,
            )
        shutil.move(str(got), dest)
        with self.lock:  # prefetching threads add up here too
            self.bytes_done += entry.size
        if entry.sha256 is None and entry.size <= SMALL_FILE_BYTES:
            self.small[entry.oid] = dest.read_bytes()

    def commit(self, branch: str, base: str, ops: list[Any], title: str, message: str | None, source: str) -> str:
        """One commit on `branch` at `base`, never twice: a lost answer is settled by reading the branch."""
        from huggingface_hub.errors import HfHubHTTPError

        description = f"{(message or '').strip()}\n\n{TRAILER}{source}".strip()

        def landed() -> str | None:
            commits = history(self.dst.reader, branch)
            return commits[-1].commit_id if commits and copied_from(commits[-1]) == source else None

        def send() -> str:
            for op in ops:
                stream = getattr(op, "path_or_fileobj", None)
                if stream is not None and hasattr(stream, "seek"):
                    stream.seek(0)
            try:
                return self.dst.api.create_commit(
                    self.dst.repo_id,
                    ops,
                    commit_message=title,
                    commit_description=description,
                    revision=branch,
                    parent_commit=base,
                ).oid
            except HfHubHTTPError as e:
                if status_of(e) == 412 and (done := landed()):
                    return done
                raise

        with commit_answers() as readings:
            new = self.dst.reader.retrying(
                send,
                what=f"committing to {branch} of {self.dst.repo_id}",
                settle=lambda e: landed(),
                give_up=self.refused,
            )
        self.pacer.accepted_commit(readings)
        return new

    def refused(self, error: BaseException) -> bool:
        """For a 429: learn the budget from it; would waiting as the target asks pass the run's deadline?
        (No deadline: wait, and the pacer spaces the next commits under the budget.)"""
        self.pacer.refused(error)
        wait = retry_after(error) or 0.0
        if self.ends_at is not None and time.monotonic() + wait > self.ends_at:
            return True
        self.on_refused(wait)
        return False

    def rewrite_card(self, text: str) -> str:
        return retarget_card(
            text,
            src_url=f"{self.src.hub.endpoint.rstrip('/')}/{self.src.repo_id}",
            dst_url=self.dst.repo_url,
            src_repo_id=self.src.repo_id,
            dst_repo_id=self.dst.repo_id,
        )


__all__ = ["TRAILER", "Entry", "MirrorIO", "copied_from", "history"]
