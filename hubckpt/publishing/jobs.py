"""The job store: one spool folder owned by one process — its journal, its staged files, per-hub job state.

    <spool>/journal.jsonl         every job's progress (see `journal`)
    <spool>/jobs/<job>/revision/  the converted revision, until every target has it
    <spool>/jobs/<job>/source/    a snapshot of the checkpoint (`snapshot=True`), same lifetime
    <spool>/spool.lock, owner.json   the lock held by the one process using this spool, and who it is

Two processes working on one spool would process the same jobs and delete each other's folders, so
opening a store takes an exclusive lock (`filelock`, released when the process ends however it ends);
a second process gets `SpoolBusyError` naming the owner's pid. All access to the job records goes
through the store's lock, so the worker thread and `publish()` never see a dict half-changed.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import socket
import threading
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hubckpt import environment

from ..errors import SpoolBusyError
from ..hub.local import served_root
from ..hub.writer import HubTarget
from .journal import JobRecord, Journal, reopen_final

if TYPE_CHECKING:
    from filelock import BaseFileLock

logger = logging.getLogger(__name__)

LOCK_FILE = "spool.lock"
OWNER_FILE = "owner.json"
COMPACT_MIN_LINES = 200  # below this the journal is left as it is


def default_spool(repo_id: str) -> Path:
    """`HUBCKPT_SPOOL/<ns>--<name>`, else `~/.cache/hubckpt/spool/<ns>--<name>`."""
    return environment.spool() / repo_id.replace("/", "--")


def target_key(target: HubTarget) -> str:
    """Identity of a target in the journal: a local hub by its data folder (its port can change), else its URL."""
    hub = target.hub
    root = hub.root if hub.kind == "local" else (None if hub.is_huggingface_co else served_root(hub.endpoint))
    if root:
        return f"local:{Path(root).resolve()}/{target.repo_id}"
    return f"{hub.endpoint.rstrip('/')}/{target.repo_id}"


def read_owner(spool: Path) -> dict[str, Any]:
    try:
        return json.loads((spool / OWNER_FILE).read_text())
    except (OSError, ValueError):
        return {}


def lock_spool(spool: Path, hint: str | None = None) -> BaseFileLock:
    """Hold `spool` for this process (a file lock the OS drops when the process dies), or `SpoolBusyError`
    naming the process that holds it: one publisher per spool (a Publisher's, or one rank's of a job)."""
    from filelock import FileLock, Timeout

    lock = FileLock(str(spool / LOCK_FILE), timeout=0)
    try:
        lock.acquire()
    except Timeout:
        owner = read_owner(spool)
        who = f"pid {owner.get('pid', '?')} on {owner.get('host', '?')}" if owner else "another process"
        if hint is None and owner.get("pid") == os.getpid() and owner.get("host") == socket.gethostname():
            hint = "another Publisher of this process holds it: close() that one first"
        elif hint is None:
            hint = (
                "a running publisher, `hubckpt watch` or `resume`: wait for it to finish or stop it; two "
                "processes on one spool would publish the same jobs"
            )
        raise SpoolBusyError(f"The spool {spool} is in use by {who} ({hint}).", pid=owner.get("pid")) from None
    (spool / OWNER_FILE).write_text(json.dumps({"pid": os.getpid(), "host": socket.gethostname()}))
    return lock


def release_spool(spool: Path, lock: BaseFileLock) -> None:
    """Give up what `lock_spool` took."""
    (spool / OWNER_FILE).unlink(missing_ok=True)
    lock.release()


class JobStore:
    """Journal + spool folders + the spool lock + every job's per-target state."""

    def __init__(self, spool: Path, *, lock: bool = True) -> None:
        self.spool = spool
        (spool / "jobs").mkdir(parents=True, exist_ok=True)
        self._file_lock: BaseFileLock | None = None
        if lock:
            self._acquire()
        self.journal = Journal(spool / "journal.jsonl")
        self._lock = threading.RLock()
        self._jobs: dict[str, JobRecord] = self.journal.replay(repair=lock)
        if lock and self.journal.lines >= COMPACT_MIN_LINES and self.journal.lines > 2 * len(self._jobs):
            self.journal.compact(self._jobs)

    # -- the lock -----------------------------------------------------------------------------------

    def _acquire(self) -> None:
        self._file_lock = lock_spool(self.spool)

    def release(self) -> None:
        """Give the spool up (idempotent)."""
        if self._file_lock is not None:
            release_spool(self.spool, self._file_lock)
            self._file_lock = None

    # -- records ------------------------------------------------------------------------------------

    def get(self, job_id: str) -> JobRecord | None:
        with self._lock:
            return self._jobs.get(job_id)

    def records(self) -> list[JobRecord]:
        """Every job, in job-id (step) order."""
        with self._lock:
            return [self._jobs[k] for k in sorted(self._jobs)]

    def update(self, job_id: str, change: Callable[[JobRecord], None], event: str, **fields: Any) -> JobRecord:
        """Record `event` in the journal (durable first), then apply `change` to the job in memory."""
        self.journal.append(event, job_id, **fields)
        with self._lock:
            record = self._jobs.setdefault(job_id, JobRecord(job_id))
            change(record)
            return record

    def capture(self, job_id: str, captured: dict[str, Any]) -> JobRecord:
        """A new job (or a finished/failed one opened again): previous progress is forgotten.

        Files an earlier capture of the job left staged go first, so what is staged is always this capture's.
        """
        shutil.rmtree(self.revision_folder(job_id), ignore_errors=True)
        self.journal.append("captured", job_id, **captured)
        with self._lock:
            record = JobRecord(job_id, captured=dict(captured))
            self._jobs[job_id] = record
            return record

    def converted(self, job_id: str, digest: str) -> None:
        self.update(job_id, lambda r: setattr(r, "manifest_sha256", digest), "converted", manifest_sha256=digest)

    def unstaged(self, job_id: str) -> None:
        self.update(job_id, lambda r: setattr(r, "manifest_sha256", None), "unstaged")

    def committed(self, job_id: str, target: str, commit: str) -> None:
        self.update(
            job_id, lambda r: r.committed.__setitem__(target, commit), "committed", target=target, commit=commit
        )

    def indexed(self, job_id: str, target: str) -> None:
        self.update(job_id, lambda r: r.indexed.add(target), "indexed", target=target)

    def published(self, job_id: str, target: str) -> None:
        self.update(job_id, lambda r: r.published.add(target), "published", target=target)

    def done(self, job_id: str) -> None:
        """Every target of this publisher has the job (a marker for readers of the journal; state is per target)."""
        self.journal.append("done", job_id)

    def mark_final(self, job_id: str) -> None:
        """The job is to be the final revision: its hubs are to mark it so (it is not finished until they do)."""
        self.update(job_id, reopen_final, "final")

    def failed(self, job_id: str, error: str, *, retryable: bool) -> None:
        def change(r: JobRecord) -> None:
            r.failed, r.retryable = error, retryable

        self.update(job_id, change, "failed", error=error, retryable=retryable)

    def retry(self, job_id: str) -> None:
        def change(r: JobRecord) -> None:
            r.failed, r.retryable, r.dropped = None, False, False

        self.update(job_id, change, "retry")

    def drop(self, job_id: str) -> None:
        self.update(job_id, lambda r: setattr(r, "dropped", True), "dropped")
        self.remove_files(job_id)

    # -- what is left to do --------------------------------------------------------------------------

    def unfinished(self, targets: Iterable[str]) -> list[JobRecord]:
        """Jobs to resume for these targets: not finished everywhere, not dropped, not failed for good."""
        keys = list(targets)
        return [
            r
            for r in self.records()
            if r.captured and not r.dropped and not r.finished_for(keys) and (r.failed is None or r.retryable)
        ]

    def failures(self) -> list[JobRecord]:
        """Jobs that failed for a reason of their own; they wait for `hubckpt jobs --retry/--drop`."""
        return [r for r in self.records() if r.failed is not None and not r.retryable and not r.dropped]

    # -- spool folders ------------------------------------------------------------------------------

    def folder(self, job_id: str) -> Path:
        return self.spool / "jobs" / job_id

    def revision_folder(self, job_id: str) -> Path:
        return self.folder(job_id) / "revision"

    def remove_files(self, job_id: str) -> None:
        shutil.rmtree(self.folder(job_id), ignore_errors=True)


__all__ = ["JobStore", "default_spool", "lock_spool", "release_spool", "target_key", "read_owner"]
