"""The publisher's journal: an append-only, fsync'd JSON-lines record of every job's progress.

It lives in the spool (`<spool>/journal.jsonl`) next to the staged files, and is replayed when a
`Publisher` starts (or by `hubckpt resume` / `hubckpt jobs`), so a process killed at any point carries on
where it stopped without publishing a revision twice or losing one. One record per line::

    {"event": "captured", "job": "000000001200-step-0001200", "revision": "step-0001200", "step": 1200,
     "source": "/runs/exp1/checkpoint-1200", "final": false, "metrics": {...}, "time": "...",
     "options": {...}}   how it is published (template, retention, allow_globals...: `PublishOptions.to_record`)
    {"event": "converted", "job": "...", "manifest_sha256": "…"}
    {"event": "committed", "job": "...", "target": "local:/data/hub/me/exp1", "commit": "…"}
    {"event": "indexed", "job": "...", "target": "..."}
    {"event": "published", "job": "...", "target": "..."}   the hub holds the revision, tags and retention done
    {"event": "done", "job": "..."}                          every target of the publisher that ran it has it
    {"event": "failed", "job": "...", "error": "...", "retryable": false}
    {"event": "retry", "job": "..."}  /  {"event": "dropped", "job": "..."}  /  {"event": "final", "job": "..."}
    {"event": "snapshot", "job": "...", "state": {...}}      a compacted job: its whole folded state

Progress is per target (one repo on one hub): a job is finished for a hub only once that hub has it.
A `final` record (a final save of a step captured before) reopens a job that was not final: the
hubs it was published to must mark it final too (`reopen_final`), so it is unfinished until they do.

Damage a killed process can leave: a torn last line (no newline). Replay drops it and truncates the
file back to the last complete record, so the next record is appended on a line of its own instead of
being glued to the torn one (which lost both). Lines glued together by an older writer are split and
the readable record kept; records without a `job` are skipped. `compact()` rewrites the journal with
one `snapshot` line per job (atomically: temp file, fsync, rename), so it does not grow forever.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import signal
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hubckpt import environment

logger = logging.getLogger(__name__)

TORN_FAULT = "journal.append:torn"  # tests: HUBCKPT_FAULT=journal.append:torn:<n> tears the n-th append and dies


@dataclass
class JobRecord:
    """Everything the journal knows about one job, folded from its records."""

    job: str
    captured: dict[str, Any] = field(default_factory=dict)
    manifest_sha256: str | None = None
    committed: dict[str, str] = field(default_factory=dict)  # target key → commit
    indexed: set[str] = field(default_factory=set)  # target keys whose index lists it
    published: set[str] = field(default_factory=set)  # target keys where it is complete (tags, retention)
    failed: str | None = None
    retryable: bool = False  # failed for a reason outside the job (hub unreachable): resumed automatically
    dropped: bool = False

    @property
    def revision(self) -> str:
        return self.captured.get("revision", self.job)

    @property
    def step(self) -> int | None:
        return self.captured.get("step")

    def finished_for(self, targets: list[str]) -> bool:
        return bool(targets) and all(t in self.published for t in targets)

    def to_state(self) -> dict[str, Any]:
        return {
            "captured": self.captured,
            "manifest_sha256": self.manifest_sha256,
            "committed": self.committed,
            "indexed": sorted(self.indexed),
            "published": sorted(self.published),
            "failed": self.failed,
            "retryable": self.retryable,
            "dropped": self.dropped,
        }

    @classmethod
    def from_state(cls, job: str, state: dict[str, Any]) -> JobRecord:
        return cls(
            job,
            captured=dict(state.get("captured") or {}),
            manifest_sha256=state.get("manifest_sha256"),
            committed=dict(state.get("committed") or {}),
            indexed=set(state.get("indexed") or ()),
            published=set(state.get("published") or ()),
            failed=state.get("failed"),
            retryable=bool(state.get("retryable")),
            dropped=bool(state.get("dropped")),
        )


def record_time() -> str:
    """The time a journal record carries (UTC, microseconds): the job journal's and each rank's journal's."""
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _parse(line: bytes) -> dict | None:
    """One record; for two records glued together (a torn line, then a whole one), the whole one."""
    try:
        record = json.loads(line)
        return record if isinstance(record, dict) else None
    except ValueError:
        pass
    start = line.find(b"{", 1)
    while start != -1:
        try:
            record = json.loads(line[start:])
            if isinstance(record, dict):
                return record
        except ValueError:
            pass
        start = line.find(b"{", start + 1)
    return None


def apply(jobs: dict[str, JobRecord], record: dict) -> None:
    """Fold one record into `jobs`."""
    job_id = record.get("job")
    if not isinstance(job_id, str):
        return
    event = record.get("event")
    if event == "snapshot":
        jobs[job_id] = JobRecord.from_state(job_id, record.get("state") or {})
        return
    job = jobs.setdefault(job_id, JobRecord(job_id))
    if event == "captured":
        captured = {k: v for k, v in record.items() if k not in ("event", "job", "time")}
        jobs[job_id] = JobRecord(job_id, captured=captured)
    elif event == "converted":
        job.manifest_sha256 = record.get("manifest_sha256")
    elif event == "committed":
        job.committed[record["target"]] = record["commit"]
    elif event == "indexed":
        job.indexed.add(record["target"])
    elif event == "published":
        job.published.add(record["target"])
    elif event == "failed":
        job.failed, job.retryable = record.get("error") or "failed", bool(record.get("retryable"))
    elif event == "retry":
        job.failed, job.retryable = None, False
    elif event == "dropped":
        job.dropped = True
    elif event == "final":
        reopen_final(job)
    elif event == "unstaged":  # the spool lost the converted files: convert again from the source
        job.manifest_sha256 = None


def reopen_final(job: JobRecord) -> None:
    """A `final` mark: the job's hubs must (again) run its index stage, which makes it the final revision.

    What was published stays indexed (`hubckpt jobs` still shows it on the hub); the job is unfinished
    until every hub has marked it final."""
    if job.captured.get("final"):
        return
    job.captured["final"] = True
    job.indexed |= job.published
    job.published.clear()


# What a finished job still needs: its name and step (listings, cards' "previous" link), whether its files
# changed since (signature, source), the targets it went to and its content digest.
_FINISHED_KEEPS = ("revision", "step", "source", "signature", "targets", "final")


def _compacted(record: JobRecord) -> dict[str, Any]:
    state = record.to_state()
    targets = record.captured.get("targets") or []
    if record.failed is None and targets and record.finished_for(targets):
        state["captured"] = {k: record.captured[k] for k in _FINISHED_KEEPS if k in record.captured}
        state["committed"], state["indexed"] = {}, []
        for key in ("failed", "retryable", "dropped"):
            state.pop(key)
    return state


class Journal:
    """Append-only, fsync'd records; `replay()` folds them into one `JobRecord` per job."""

    def __init__(self, path: Path) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._appends = 0
        self.lines = 0  # records in the file, as of the last replay plus appends since

    def append(self, event: str, job: str, **fields: Any) -> None:
        record = {"event": event, "job": job, **fields, "time": record_time()}
        line = (json.dumps(record, sort_keys=True) + "\n").encode()
        with self._lock:
            self._appends += 1
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
            try:
                if environment.fault() == f"{TORN_FAULT}:{self._appends}":
                    os.write(fd, line[: len(line) // 2])  # a write torn by a kill
                    os.fsync(fd)
                    os.kill(os.getpid(), signal.SIGKILL)
                os.write(fd, line)
                os.fsync(fd)
            finally:
                os.close(fd)
            self.lines += 1

    def replay(self, *, repair: bool = True) -> dict[str, JobRecord]:
        """Every job's folded state, in the order jobs were first recorded.

        With `repair` (only for the spool's owner: a reader must not cut a line being written), a torn last
        line is cut off the file.
        """
        jobs: dict[str, JobRecord] = {}
        try:
            data = self.path.read_bytes()
        except FileNotFoundError:
            self.lines = 0
            return jobs
        if data and not data.endswith(b"\n"):
            cut = data.rfind(b"\n") + 1
            if repair:
                logger.warning(
                    "%s: dropping a torn last record (%d bytes) left by a killed process", self.path, len(data) - cut
                )
                with self._lock, open(self.path, "r+b") as f:
                    f.truncate(cut)
                    f.flush()
                    os.fsync(f.fileno())
            data = data[:cut]
        lines = [line for line in data.splitlines() if line.strip()]
        try:  # one parse for the whole file: the common case, and several times faster than line by line
            records = json.loads(b"[" + b",".join(lines) + b"]")
        except ValueError:
            records = None
        if records is None or not all(isinstance(r, dict) and isinstance(r.get("job"), str) for r in records):
            records = []
            for number, line in enumerate(lines, start=1):
                record = _parse(line)
                if record is None or not isinstance(record.get("job"), str):
                    logger.warning("%s: skipping unreadable line %d", self.path, number)
                    continue
                records.append(record)
        for record in records:
            apply(jobs, record)
        self.lines = len(lines)
        return jobs

    def compact(self, jobs: dict[str, JobRecord]) -> None:
        """Rewrite the journal as one snapshot line per job (atomic: a reader sees the old or the new file)."""
        tmp = self.path.with_name(self.path.name + ".compact")
        body = b"".join(
            (
                json.dumps({"event": "snapshot", "job": job_id, "state": _compacted(record)}, sort_keys=True) + "\n"
            ).encode()
            for job_id, record in jobs.items()
        )
        with self._lock:
            with open(tmp, "wb") as f:
                f.write(body)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, self.path)
            dir_fd = os.open(self.path.parent, os.O_RDONLY)
            try:
                os.fsync(dir_fd)
            finally:
                os.close(dir_fd)
            self.lines = len(jobs)
