"""One planned step of a mirror: a source commit copied as one commit on the target, sending only what is new.

Files are compared by the oids of the listings before anything moves: a file unchanged from the parent
commit is inherited from the parent's copy, an LFS object the target already holds is referenced without
its bytes (`uploaded.operation`), only the rest is downloaded from the source (verified against its
sha256, `MirrorIO.fetch`) and uploaded through `hub/commits.py`'s `folder_operations` - the path
publishing uses: LFS to a local or self-hosted hub, Xet to huggingface.co (`use_xet`). Cards are
retargeted as they are fetched; `revisions.json` (the index, on `main`) lists the target's commits.

A revision's commit goes on its staging branch (`writer.staging_branch`), started at its parent's copy;
a commit of `main` goes on `main` itself, on top of its head. The files of the next steps download in the
background while one uploads (`prefetch`).
"""

from __future__ import annotations

import contextlib
import logging
import shutil
import tempfile
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING

from ..faults import fault
from ..formats.index import INDEX_FILE, RevisionIndex
from ..hub.commits import folder_operations, quiet_xet_notice
from ..hub.uploaded import UploadedFile, operation
from ..hub.writer import MAIN, staging_branch
from .layout import CARD_FILE
from .mirror_io import Entry, MirrorIO
from .mirror_plan import Step

if TYPE_CHECKING:
    from huggingface_hub import CommitOperationAdd, CommitOperationDelete

logger = logging.getLogger(__name__)

PREFETCH_COMMITS = 2  # commits whose new files download ahead of the one uploading (bounds the disk used)


class Copier:
    """Copies steps in order; `copied` (source → target commits) grows with each."""

    def __init__(self, io: MirrorIO, copied: dict[str, str], staging: dict[str, str], main_head: str) -> None:
        self.io = io
        self.copied = copied
        self.staging = staging  # staging branch → its head on the target, as this run knows it
        self.main_head = main_head  # the target's main, as this run knows it
        self.known: set[str] = set()  # LFS sha256s the target holds
        self.made: set[str] = set()  # source commits copied by this run

    def copy_all(
        self,
        steps: list[Step],
        *,
        starting: Callable[[], None],
        sending: Callable[[], None],
        after: Callable[[Step, str], None],
    ) -> None:
        """Copy `steps` in order: `starting()` each (the deadline), `sending()` just before its commit is sent (the
        wait for the target's budget), `after(step, its copy)`.

        The files of the next PREFETCH_COMMITS steps download in the background while a commit uploads
        (the two directions overlap; at most that many steps' new files are on disk at once).
        """
        wanted = self.prefetch_plan(steps)
        with (
            tempfile.TemporaryDirectory(prefix="hubckpt-mirror-") as work,
            ThreadPoolExecutor(max_workers=PREFETCH_COMMITS, thread_name_prefix="hubckpt-mirror") as pool,
        ):
            futures: dict[int, Future[Path]] = {}
            try:
                for i, step in enumerate(steps):
                    for j in range(i, min(i + PREFETCH_COMMITS, len(steps))):
                        if j not in futures:
                            futures[j] = pool.submit(self.prefetch, steps[j].commit, wanted[j], Path(work) / str(j))
                    starting()
                    after(step, self.copy(step, futures.pop(i).result(), on_send=sending))
            finally:
                for future in futures.values():
                    future.cancel()

    def prefetch_plan(self, steps: list[Step]) -> list[list[Entry]]:
        """Per step, the files it will most likely need from the source (`copy` decides; a file it needs
        and this missed is downloaded then)."""
        known, out = set(self.known), []
        for step in steps:
            now, before = self.io.listing(self.io.src, step.commit), self.io.listing(self.io.src, step.parent)
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

    def copy(self, step: Step, prefetched: Path | None = None, *, on_send: Callable[[], None] = lambda: None) -> str:
        """Copy `step` as one commit on the target; return that commit. `on_send()`: just before it is sent (the
        files, the staging branch and the listings are ready by then: they do not count against a budget)."""
        from huggingface_hub import CommitOperationDelete

        io, src = self.io, self.io.src
        if step.branch == MAIN:
            branch, base = MAIN, self.main_head
        else:
            branch, base = staging_branch(step.branch), self.copied[step.parent]
            head = self.staging.get(branch)
            if head != base:
                if head is not None:
                    io.dst.delete_branch(branch)
                io.dst._create_branch(branch, base)
        now, before = io.listing(src, step.commit), io.listing(src, step.parent)
        # A copy made by this run holds its source's paths and objects (only cards and indexes differ): no listing.
        mine = step.parent in self.made and self.copied[step.parent] == base
        there = before if mine else io.listing(io.dst.reader, base)
        self.known |= {e.sha256 for e in there.values() if e.sha256}
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
                    io.fetch(step.commit, entry, folder, Path(tmp) / "cache")
                if path == INDEX_FILE:
                    self.remap_index(folder / path, step.commit)
            if prefetched is not None:
                shutil.rmtree(prefetched.parent, ignore_errors=True)  # what was fetched and not needed
            deletes = [CommitOperationDelete(p) for p in sorted(there) if p not in now and p != ".gitattributes"]
            with quiet_xet_notice():
                ops: list[CommitOperationAdd | CommitOperationDelete] = []
                # The same path as publishing (LFS, or Xet to huggingface.co); hashes verified on download only.
                verified = {
                    p: (e.sha256, e.size) for p, e in now.items() if e.sha256 and p not in (CARD_FILE, INDEX_FILE)
                }
                ops += folder_operations(folder, stack, use_xet=io.dst.hub.is_huggingface_co, hashes=verified)
                ops += refs
                ops += deletes
                on_send()
                new = io.commit(
                    branch, base, ops, step.title or f"mirror {step.commit[:12]}", step.message, step.commit
                )
        self.copied[step.commit] = new
        self.made.add(step.commit)
        if step.branch == MAIN:
            self.main_head = new
        else:
            self.staging[branch] = new
        self.known |= {e.sha256 for e in now.values() if e.sha256}
        fault("mirror.committed")
        return new

    def remap_index(self, file: Path, commit: str) -> None:
        """The source's index as of `commit`, each revision's `commit` replaced by its copy on the target."""
        index = RevisionIndex.from_json(file.read_bytes(), self.io.src.source(INDEX_FILE, commit))
        for info in index.revisions:
            if info.commit and info.commit in self.copied:
                info.commit = self.copied[info.commit]
            elif info.commit:
                logger.warning(
                    "the index of %s@%s lists %s at %s, which is not mirrored; kept as it is",
                    self.io.src.repo_id,
                    commit[:12],
                    info.name,
                    info.commit[:12],
                )
        file.write_bytes(index.to_json())


__all__ = ["Copier"]
