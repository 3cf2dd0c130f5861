"""Mirror a published run from one hub to another: `hubckpt.mirror` / `hubckpt mirror REPO --from A --to B`.

Here in `publishing/` (not a top-level `hubckpt/mirror.py`): mirroring publishes a run's revisions to a
target the way the publisher does (staging branch, one commit per revision, the index and card on `main`,
`publishing/layout.py`), and a module named `hubckpt.mirror` would shadow the public function of that name.

How it works, and why it can be killed and run again:

- Every commit the mirror makes carries the source commit it copies in its description
  (`Mirrored-From: <sha>`). The mapping source commit → target commit is read back from the target's
  branch histories at the start of each run: the hub itself is the journal, nothing is kept locally.
- Each source revision branch's history (oldest first) is replayed: a commit not mapped yet is copied
  as one commit on a staging branch (`writer.staging_branch`) started at its parent's copy, then the
  branch is created at the copy of its head and the staging branch deleted. A kill leaves at most a
  staging branch whose commits are reused by the next run; a commit whose answer was lost is settled by
  re-reading the staging branch, so each revision is committed exactly once.
- Files are compared by the oids of the listings (git blob oid, LFS sha256) before anything moves: a
  file unchanged from the parent commit is inherited, an LFS object the target already holds is
  referenced without its bytes (`uploaded.operation`), only the rest is downloaded from the source
  (verified against its sha256) and uploaded. A run with nothing new reads refs and histories only.
- Cards (`README.md`) keep their metadata (the YAML front matter, byte for byte); their links to the
  source repo point at the target. `revisions.json` on `main` is the source's with each revision's
  `commit` replaced by the target's. `main` gets one commit per run that changes it (its own history on
  the source is the publisher's index updates, which need not be replayed).
- A target branch of the same name that is not a copy of the source's (nor an older point of its
  history) is a conflict: nothing is written, `MirrorConflictError` lists them (`force=True` replaces).
- Transient failures (429 with Retry-After included) are retried by `retries.with_retries`; when they
  outlast it (or `deadline`), `MirrorIncompleteError` says what was mirrored and what not.
"""

from __future__ import annotations

import contextlib
import logging
import shutil
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import (
    DiskFullError,
    HubConfigError,
    HubUnavailableError,
    IntegrityError,
    MirrorConflictError,
    MirrorIncompleteError,
)
from ..faults import fault
from ..formats.index import INDEX_FILE, RevisionIndex
from ..hub.commits import folder_operations, quiet_xet_notice
from ..hub.reader import HubReader
from ..hub.retries import TRANSIENT_STATUS, status_of
from ..hub.select import resolve_hub
from ..hub.uploaded import UploadedFile, operation
from ..hub.writer import MAIN, HubTarget, is_staging_branch, staging_branch
from .layout import CARD_FILE
from .mirror_io import Entry, MirrorIO, copied_from, history

if TYPE_CHECKING:
    from huggingface_hub import CommitOperationAdd, CommitOperationDelete

logger = logging.getLogger(__name__)

RETRYABLE = (HubUnavailableError, IntegrityError, DiskFullError, ConnectionError, TimeoutError)
PREFETCH_COMMITS = 2  # commits whose new files download ahead of the one uploading (bounds the disk used)


@dataclass(frozen=True)
class MirrorProgress:
    """Where a mirror stands, passed to `progress` after each commit (and once at the start)."""

    revisions_done: int
    revisions_total: int
    bytes_done: int
    bytes_total: int
    revision: str | None = None


@dataclass
class MirrorResult:
    """What one `mirror` run did.

    Attributes:
        repo_id / dst_repo_id: the source and target repo.
        copied: revision branches created or brought up to date by this run.
        unchanged: revision branches the target already had (nothing sent).
        commits: commits made on the target (0 when it was up to date).
        bytes_downloaded: bytes read from the source's files (0 when the target had everything).
        tags_moved: tags created or moved on the target.
        main_updated: whether `main` (index, card, final files) got a commit.
    """

    repo_id: str
    dst_repo_id: str
    copied: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)
    commits: int = 0
    bytes_downloaded: int = 0
    tags_moved: list[str] = field(default_factory=list)
    main_updated: bool = False


@dataclass
class _Plan:
    """The commits to copy, in order (parents first), and the branches to set."""

    commits: list[tuple[str, str, str]] = field(default_factory=list)  # (source commit, source parent, branch)
    branches: dict[str, str] = field(default_factory=dict)  # branch → source head, to create or move
    bytes_total: int = 0


def mirror(
    repo_id: str,
    *,
    src_hub: str | None = None,
    dst_hub: str | None = None,
    dst_repo_id: str | None = None,
    force: bool = False,
    src_token: str | bool | None = None,
    dst_token: str | bool | None = None,
    deadline: float | None = None,
    progress: Callable[[MirrorProgress], None] | None = None,
) -> MirrorResult:
    """Copy a published run to another hub: every revision branch, the tags, the index and `main`.

    Revision branches keep their names, files and history (the same number of commits, chained the same
    way); cards are re-rendered to link to the target; objects the target has are not sent again. Running
    it again copies only what the source gained since (nothing at all when nothing changed), and completes
    a run that was killed midway. A private source repo is created private on the target.

    Args:
        repo_id: the source repo (`namespace/name`).
        src_hub: the hub it is on (`local`, `hf`, a URL; None: the environment's, as everywhere).
        dst_hub: the hub to copy it to.
        dst_repo_id: the target repo's id (default: `repo_id`).
        force: replace target branches that hold other content (refused otherwise).
        src_token / dst_token: tokens for each hub (None: each hub's own default, see `resolve_token`).
        deadline: seconds the whole run may take; past it, `MirrorIncompleteError` (a rerun continues).
        progress: called with a `MirrorProgress` after each commit.

    Returns:
        A `MirrorResult` saying what was copied.

    Raises:
        MirrorConflictError: the target holds other content under the source's branch names (nothing changed).
        MirrorIncompleteError: the target kept failing (e.g. a storm of 429s) or the deadline passed; it
            lists what was mirrored and what was not.
        HubConfigError: source and target are the same repo on the same hub.

    Example:
        >>> hubckpt.mirror("alice/run", src_hub="http://cluster:8900", dst_hub="hf")  # doctest: +SKIP
    """
    dst_repo_id = dst_repo_id or repo_id
    src = HubReader(resolve_hub(src_hub), repo_id, token=src_token)
    dst_resolved = resolve_hub(dst_hub)
    if dst_resolved.endpoint.rstrip("/") == src.hub.endpoint.rstrip("/") and dst_repo_id.lower() == repo_id.lower():
        raise HubConfigError(
            f"mirror: source and target are the same repo ({repo_id} on {src.hub.endpoint}); "
            "pass another --to hub or --to-repo name."
        )
    private = bool(
        getattr(src.retrying(lambda: src.api.repo_info(repo_id), what=f"reading {repo_id}"), "private", False)
    )
    dst = HubTarget(dst_resolved, dst_repo_id, token=dst_token, private=private)
    return _Mirror(src, dst, force=force, deadline=deadline, progress=progress).run()


class _Mirror:
    def __init__(
        self,
        src: HubReader,
        dst: HubTarget,
        *,
        force: bool,
        deadline: float | None,
        progress: Callable[[MirrorProgress], None] | None,
    ) -> None:
        self.src, self.dst, self.force = src, dst, force
        self.ends_at = None if deadline is None else time.monotonic() + deadline
        self.progress = progress
        self.result = MirrorResult(src.repo_id, dst.repo_id)
        self.io = MirrorIO(src, dst, ends_at=self.ends_at)
        self.copied: dict[str, str] = {}  # source commit → target commit
        self.src_history: dict[str, list[Any]] = {}  # branch → commits, oldest first
        self.known: set[str] = set()  # LFS sha256s the target holds
        self.done_revisions: list[str] = []
        self.plan_bytes = 0
        self.staging: dict[str, str] = {}  # staging branch → its head on the target, as this run knows it
        self.made: set[str] = set()  # source commits copied by this run

    def read_map(self, branches: list[str]) -> None:
        """Source commit → target commit, from the `Mirrored-From` lines of the target's histories."""
        for branch in branches:
            for commit in history(self.dst.reader, branch):
                found = copied_from(commit)
                if found:
                    self.copied.setdefault(found, commit.commit_id)

    # -- the run -------------------------------------------------------------------------------------

    def run(self) -> MirrorResult:
        src_branches, src_tags = self.src.refs()
        revisions = sorted(b for b in src_branches if b != MAIN and not is_staging_branch(b))
        self.dst.ensure_repo()
        dst_branches, dst_tags = self.dst.refs()
        self.staging = {b: c for b, c in dst_branches.items() if is_staging_branch(b)}
        ours = [b for b in dst_branches if b in src_branches or b in {staging_branch(r) for r in revisions}]
        self.read_map(sorted(ours))
        dst_main = history(self.dst.reader, MAIN)
        plan, conflicts = self.plan(revisions, src_branches, dst_branches, dst_main)
        if conflicts and not self.force:
            raise MirrorConflictError(
                f"{self.dst.describe()} already holds other content under {len(conflicts)} of the source's branch "
                f"names: {'; '.join(conflicts)}. Nothing was changed. Mirror to another repo (--to-repo / "
                "dst_repo_id=), delete those branches on the target, or pass --force (force=True) to overwrite them.",
                conflicts=conflicts,
            )
        self.keep_private()
        self.report(None, len(plan.branches))
        try:
            self.copy(plan, dst_branches)
            self.update_main(src_branches[MAIN], dst_main)
            self.move_tags(src_tags, dst_tags)
            self.report(None, len(plan.branches))
        except Exception as e:
            # What a rerun can get past (a hub that kept refusing or failing, a bad download, the deadline)
            # says what is done and what is left; anything else (a read token, a bug) is raised as it is.
            if isinstance(e, RETRYABLE) or status_of(e) in TRANSIENT_STATUS:
                raise self.incomplete(plan, e) from e
            raise
        self.result.bytes_downloaded = self.io.bytes_done
        for staging in sorted(self.staging):  # left by a killed run, for a branch that it had finished
            if staging in {staging_branch(r) for r in revisions}:
                self.dst.delete_branch(staging)
        return self.result

    def keep_private(self) -> None:
        """A target that existed public is made private when the source is (after the conflict check)."""
        if not self.dst.private:
            return
        info = self.dst._retrying(lambda: self.dst.api.repo_info(self.dst.repo_id), what="reading the target")
        if not getattr(info, "private", False):
            logger.warning("%s was public; making it private as the source is", self.dst.describe())
            self.dst._retrying(
                lambda: self.dst.api.update_repo_settings(self.dst.repo_id, private=True),
                what=f"making {self.dst.repo_id} private",
            )

    def incomplete(self, plan: _Plan, error: BaseException) -> MirrorIncompleteError:
        pending = [b for b in plan.branches if b not in self.done_revisions]
        done = self.done_revisions + self.result.unchanged
        return MirrorIncompleteError(
            f"mirroring {self.src.describe()} to {self.dst.describe()} stopped: {error}. Mirrored: "
            f"{', '.join(sorted(done)) or 'nothing'}; not mirrored: {', '.join(pending) or 'main and tags'}. "
            "Run the same mirror again when the target accepts commits: it continues where this one stopped.",
            mirrored=sorted(done),
            pending=pending,
        )

    def plan(
        self, revisions: list[str], src_branches: dict[str, str], dst_branches: dict[str, str], dst_main: list[Any]
    ) -> tuple[_Plan, list[str]]:
        """What to copy, and which target branches are in the way (named with why)."""
        plan, conflicts = _Plan(), []
        if dst_main:  # the roots of both histories (create_repo's commits) correspond
            self.copied.setdefault(history(self.src, MAIN)[0].commit_id, dst_main[0].commit_id)
        for name in revisions:
            head = src_branches[name]
            chain = history(self.src, name)
            self.src_history[name] = chain
            ids = [c.commit_id for c in chain]
            there = dst_branches.get(name)
            if there is not None and self.copied.get(head) == there:
                self.result.unchanged.append(name)
                continue
            if there is not None and there not in {self.copied.get(c) for c in ids}:
                conflicts.append(f"{name} (target at {there[:12]}, not a copy of the source's {head[:12]})")
            if chain:
                self.copied.setdefault(ids[0], dst_main[0].commit_id if dst_main else ids[0])
            for parent, commit in zip(ids, ids[1:]):
                if commit not in self.copied and commit not in {c for c, _, _ in plan.commits}:
                    plan.commits.append((commit, parent, name))
            plan.branches[name] = head
        if dst_main and len(dst_main) > 1 and not copied_from(dst_main[-1]):
            conflicts.append(f"main (target at {dst_main[-1].commit_id[:12]} has commits not copied from the source)")
        # What will be downloaded: LFS objects new to the target and every changed regular file.
        seen: set[str] = set()
        for commit, parent, _ in plan.commits:
            now, before = self.io.listing(self.src, commit), self.io.listing(self.src, parent)
            for path, entry in now.items():
                if before.get(path) != entry and entry.key not in seen:
                    seen.add(entry.key)
                    plan.bytes_total += entry.size
        main_head = src_branches[MAIN]
        if dst_main and copied_from(dst_main[-1]) != main_head and self.copied.get(main_head) != dst_main[-1].commit_id:
            for entry in self.io.listing(self.src, main_head).values():  # main's own files: the index, card, chart
                if entry.key not in seen and entry.path != ".gitattributes":
                    seen.add(entry.key)
                    plan.bytes_total += entry.size
        return plan, conflicts

    def report(self, revision: str | None, total: int) -> None:
        if self.progress is not None:
            done = len(self.done_revisions)
            self.progress(MirrorProgress(done, total, self.io.bytes_done, self.plan_bytes, revision))

    def check_deadline(self) -> None:
        if self.ends_at is not None and time.monotonic() > self.ends_at:
            raise HubUnavailableError("the mirror's deadline passed")

    # -- writing the target ------------------------------------------------------------------------------

    def copy(self, plan: _Plan, dst_branches: dict[str, str]) -> None:
        """Copy the planned commits in order, each branch set once its head is copied.

        The files of the next PREFETCH_COMMITS commits download in the background while a commit uploads
        (the two directions overlap; at most that many commits' new files are on disk at once).
        """
        self.plan_bytes = plan.bytes_total
        order = [c for name in plan.branches for c in plan.commits if c[2] == name]
        wanted = self.prefetch_plan(order)
        with (
            tempfile.TemporaryDirectory(prefix="hubckpt-mirror-") as work,
            ThreadPoolExecutor(max_workers=PREFETCH_COMMITS, thread_name_prefix="hubckpt-mirror") as pool,
        ):
            futures: dict[int, Future[Path]] = {}
            try:
                for name, head in plan.branches.items():
                    for i in [i for i, c in enumerate(order) if c[2] == name]:
                        for j in range(i, min(i + PREFETCH_COMMITS, len(order))):
                            if j not in futures:
                                folder = Path(work) / str(j)
                                futures[j] = pool.submit(self.prefetch, order[j][0], wanted[j], folder)
                        self.check_deadline()
                        commit, parent, _ = order[i]
                        self.copy_commit(commit, parent, staging_branch(name), futures.pop(i).result())
                        self.report(name, len(plan.branches))
                    self.set_branch(name, self.copied[head], dst_branches.get(name))
                    self.report(name, len(plan.branches))
            finally:
                for future in futures.values():
                    future.cancel()

    def set_branch(self, name: str, target: str, there: str | None) -> None:
        if there != target:
            if there is not None:
                self.dst.delete_branch(name)  # a fast-forward, or --force over other content
            self.dst._create_branch(name, target)
        if self.staging.pop(staging_branch(name), None) is not None:
            self.dst.delete_branch(staging_branch(name))
        self.done_revisions.append(name)
        self.result.copied.append(name)

    def prefetch_plan(self, order: list[tuple[str, str, str]]) -> list[list[Entry]]:
        """Per commit, the files it will most likely need from the source (`copy_commit` decides; a file
        it needs and this missed is downloaded then)."""
        known, out = set(self.known), []
        for commit, parent, _ in order:
            now, before = self.io.listing(self.src, commit), self.io.listing(self.src, parent)
            out.append(
                [
                    e
                    for p, e in sorted(now.items())
                    if p != ".gitattributes" and before.get(p) != e and not (e.sha256 and e.sha256 in known)
                ]
            )
            known |= {e.sha256 for e in now.values() if e.sha256}
        return out

    def prefetch(self, commit: str, entries: list[Entry], folder: Path) -> Path:
        folder.mkdir(parents=True)
        for entry in entries:
            self.io.fetch(commit, entry, folder / "files", folder / "cache")
        return folder / "files"

    def copy_commit(self, commit: str, parent: str, staging: str, prefetched: Path | None = None) -> None:
        """Copy source `commit` as one commit on `staging`, on top of the copy of `parent`."""
        from huggingface_hub import CommitOperationDelete

        base = self.copied[parent]
        head = self.staging.get(staging)
        if head != base:
            if head is not None:
                self.dst.delete_branch(staging)
            self.dst._create_branch(staging, base)
        now, before = self.io.listing(self.src, commit), self.io.listing(self.src, parent)
        # A copy made by this run holds its source's paths and objects (only the card's bytes differ): no listing.
        there = before if parent in self.made else self.io.listing(self.dst.reader, base)
        self.known |= {e.sha256 for e in there.values() if e.sha256}
        info = next(c for chain in self.src_history.values() for c in chain if c.commit_id == commit)
        with tempfile.TemporaryDirectory(prefix="hubckpt-mirror-") as tmp, contextlib.ExitStack() as stack:
            folder = Path(tmp) / "files"
            folder.mkdir()
            refs: list[CommitOperationAdd] = []
            for path, entry in sorted(now.items()):
                if path == ".gitattributes" and path in there:
                    continue
                if before.get(path) == entry and path in there:
                    continue  # inherited from the parent's copy
                if entry.sha256 and entry.sha256 in self.known:
                    refs.append(operation(UploadedFile(path, entry.sha256, entry.size)))
                    continue
                ready = prefetched / path if prefetched is not None else None
                if ready is not None and ready.is_file():
                    (folder / path).parent.mkdir(parents=True, exist_ok=True)
                    shutil.move(str(ready), folder / path)
                else:
                    self.io.fetch(commit, entry, folder, Path(tmp) / "cache")
            if prefetched is not None:
                shutil.rmtree(prefetched.parent, ignore_errors=True)  # what was fetched and not needed
            deletes = [CommitOperationDelete(p) for p in sorted(there) if p not in now and p != ".gitattributes"]
            with quiet_xet_notice():
                ops: list[CommitOperationAdd | CommitOperationDelete] = []
                ops += folder_operations(folder, stack, use_xet=self.dst.hub.is_huggingface_co)
                ops += refs
                ops += deletes
                new = self.io.commit(staging, base, ops, info.title or f"mirror {commit[:12]}", info.message, commit)
        self.copied[commit] = new
        self.made.add(commit)
        self.staging[staging] = new
        self.known |= {e.sha256 for e in now.values() if e.sha256}
        self.result.commits += 1
        fault("mirror.committed")

    def update_main(self, src_head: str, dst_main: list[Any]) -> None:
        """One commit making the target's `main` hold the source's (index commits remapped, card rewritten)."""
        from huggingface_hub import CommitOperationDelete

        current = history(self.dst.reader, MAIN)
        if current and (copied_from(current[-1]) == src_head or self.copied.get(src_head) == current[-1].commit_id):
            return
        base = current[-1].commit_id
        now, there = self.io.listing(self.src, src_head), self.io.listing(self.dst.reader, base)
        with tempfile.TemporaryDirectory(prefix="hubckpt-mirror-") as tmp, contextlib.ExitStack() as stack:
            folder = Path(tmp) / "files"
            folder.mkdir()
            refs: list[CommitOperationAdd] = []
            for path, entry in sorted(now.items()):
                if path == ".gitattributes" and path in there:
                    continue
                if path not in (CARD_FILE, INDEX_FILE) and there.get(path) is not None and there[path].key == entry.key:
                    continue
                if entry.sha256 and entry.sha256 in self.known | {e.sha256 for e in there.values() if e.sha256}:
                    refs.append(operation(UploadedFile(path, entry.sha256, entry.size)))
                    continue
                self.io.fetch(src_head, entry, folder, Path(tmp) / "cache")
            index_file = folder / INDEX_FILE
            if index_file.exists():
                index = RevisionIndex.from_json(index_file.read_bytes(), self.src.source(INDEX_FILE, MAIN))
                branches = self.dst.branches()
                for info in index.revisions:
                    info.commit = branches.get(info.name) or self.copied.get(info.commit or "") or info.commit
                index_file.write_bytes(index.to_json())
            for path in (CARD_FILE, INDEX_FILE):  # unchanged after the rewrite: not committed again
                local = folder / path
                if local.exists() and path in there and _git_oid(local.read_bytes()) == there[path].oid:
                    local.unlink()
            deletes = [CommitOperationDelete(p) for p in sorted(there) if p not in now and p != ".gitattributes"]
            with quiet_xet_notice():
                ops: list[CommitOperationAdd | CommitOperationDelete] = []
                ops += folder_operations(folder, stack, use_xet=self.dst.hub.is_huggingface_co)
                ops += refs
                ops += deletes
                info = history(self.src, MAIN)[-1]
                self.io.commit(MAIN, base, ops, info.title or "mirror main", info.message, src_head)
        self.result.commits += 1
        self.result.main_updated = True

    def move_tags(self, src_tags: dict[str, str], dst_tags: dict[str, str]) -> None:
        branches = self.dst.branches()
        for tag, commit in sorted(src_tags.items()):
            target = self.copied.get(commit)
            if target is None:
                main_history = history(self.dst.reader, MAIN)
                if copied_from(main_history[-1]) == commit:
                    target = branches[MAIN]
            if target is None:
                logger.warning("tag %s of %s is at %s, which was not mirrored; skipped", tag, self.src.repo_id, commit)
                continue
            if dst_tags.get(tag) != target:
                self.dst.move_tag(tag, target)
                self.result.tags_moved.append(tag)


def _git_oid(data: bytes) -> str:
    import hashlib

    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


__all__ = ["MirrorProgress", "MirrorResult", "mirror"]
