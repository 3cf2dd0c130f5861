"""Each rank's journal of multi-rank saves: what it wrote for a revision, so a re-run can finish the revision.

`<spool>/rank-0000R-of-0000W/journal.jsonl`, append-only and fsync'd, one record per line::

    {"event": "written", "job": "step-0000004", "repo": "local:/data/hub/me/exp1", "world": 2, "step": 4,
     "layout": "<sha256 of the layout>", "files": [{"path": ..., "sha256": ..., "size": ...}],
     "commit": {...}}          rank 0 only: the revision's small files (listed) and its manifest, frozen
    {"event": "finished", "job": "step-0000004", "repo": ..., "outcome": "published" | "failed" | "dropped",
     "why": "..."}

A rank records `written` only once its files of the revision (and, on rank 0, the small files the commit
needs: config, index, optimizer groups, loop / scheduler state) are on disk, in the job's
folder `<spool>/rank-.../<revision>/`. The small files are fsync'd first; the tensor files are not (on
a 2-core VM fsync of a 130 MiB shard cost ~50 ms of the time until visible): a process kill keeps them
in the page cache, and after a machine crash a torn one is caught when the re-run uploads it, since the
upload hashes every file again and refuses one whose sha256 differs from the record (the job then fails
on every rank and training redoes that step). `finished` comes when the revision is committed (or its save failed,
or a re-run dropped it); the folder goes after it. A `written` job without `finished` is *pending*: the
process died in between. On the re-run the ranks exchange their pending jobs (`RankedCheckpointer`), and a
job every rank holds completely (same repo, world size and layout) is uploaded again (objects the hub
has already are skipped by the LFS batch) and committed by rank 0, unless the hub holds that revision
with the same content already. The journal is never trusted about the hub: what is committed is read
from the hub.

The journal is compacted (rewritten atomically with only the pending jobs) after each job and when a
Checkpointer starts, so it holds little more than the saves in flight. Damage a kill can leave: a torn
last line, skipped on reading and cut off by the next compaction.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .journal import record_time

logger = logging.getLogger(__name__)

JOURNAL_FILE = "journal.jsonl"
COMMIT_FOLDER = "commit"  # rank 0: the revision's small files, in the job's folder


def fsync_files(paths: list[Path]) -> None:
    """Make `paths` (files) and their folders durable: a `written` record never names a file a crash can tear."""
    folders: set[Path] = set()
    for path in paths:
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        folders.add(path.parent)
    for folder in sorted(folders):
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def layout_digest(layout_json: dict[str, Any]) -> str:
    """A layout's identity (every rank computes the same from the same layout)."""
    return hashlib.sha256(json.dumps(layout_json, sort_keys=True).encode()).hexdigest()


@dataclass
class Pending:
    """A job this rank wrote and did not finish: its `written` record."""

    record: dict[str, Any]

    @property
    def job(self) -> str:
        return str(self.record["job"])

    @property
    def step(self) -> int:
        return int(self.record["step"])

    def key(self) -> tuple:
        """What every rank's record of one job must agree on to be finished together."""
        return (self.record.get("repo"), self.record.get("world"), self.step, self.record.get("layout"))

    def complete(self, folder: Path) -> str | None:
        """Why this rank cannot finish the job from `folder` (a file missing or of another size), else None.
        (Contents are hashed again by the upload, which refuses a file whose sha256 differs.)"""
        listed = [(folder, f) for f in self.record.get("files") or []]
        if self.record.get("commit") is not None:  # (rank 0's small files, in the folder it commits)
            listed += [(folder / COMMIT_FOLDER, f) for f in self.record["commit"].get("small") or []]
        for where, f in listed:
            path = where / str(f.get("path"))
            try:
                size = path.stat().st_size
            except OSError:
                return f"{path} is missing"
            if size != f.get("size"):
                return f"{path} holds {size} bytes, not the {f.get('size')} recorded"
        return None


class RankJournal:
    """One rank's journal (module docstring)."""

    def __init__(self, spool: Path) -> None:
        self.spool = spool
        self.path = spool / JOURNAL_FILE
        self._lock = threading.Lock()

    def _append(self, record: dict[str, Any]) -> None:
        line = (json.dumps({**record, "time": record_time()}, sort_keys=True) + "\n").encode()
        with self._lock:
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
            try:
                os.write(fd, line)
                os.fsync(fd)
            finally:
                os.close(fd)

    def written(self, job: str, **fields: Any) -> None:
        self._append({"event": "written", "job": job, **fields})

    def finished(self, job: str, repo: str, outcome: str, why: str = "") -> None:
        self._append({"event": "finished", "job": job, "repo": repo, "outcome": outcome, "why": why})

    def _records(self) -> list[dict[str, Any]]:
        try:
            data = self.path.read_bytes()
        except FileNotFoundError:
            return []
        records = []
        for number, line in enumerate(data.split(b"\n"), start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except ValueError:
                logger.warning("%s: skipping unreadable line %d (a write torn by a kill)", self.path, number)
                continue
            if isinstance(record, dict) and isinstance(record.get("job"), str):
                records.append(record)
        return records

    def pending(self, repo: str) -> list[Pending]:
        """This repo's jobs written and not finished, in step order."""
        open_: dict[str, dict[str, Any]] = {}
        for record in self._records():
            if record.get("repo") != repo:
                continue
            if record.get("event") == "written":
                open_[record["job"]] = record
            elif record.get("event") == "finished":
                open_.pop(record["job"], None)
        return sorted((Pending(r) for r in open_.values()), key=lambda p: (p.step, p.job))

    def compact(self) -> None:
        """Keep only pending jobs (of any repo); remove the folders of the jobs that are finished."""
        records = self._records()
        open_: dict[tuple[str, str], dict[str, Any]] = {}
        finished: set[str] = set()
        for record in records:
            key = (str(record.get("repo")), record["job"])
            if record.get("event") == "written":
                open_[key] = record
                finished.discard(record["job"])
            elif record.get("event") == "finished":
                open_.pop(key, None)
                finished.add(record["job"])
        kept = {job for _, job in open_}
        for job in finished - kept:
            folder = self.spool / job
            if folder.is_dir() and folder.resolve().parent == self.spool.resolve():
                shutil.rmtree(folder, ignore_errors=True)
        if not records and not self.path.exists():
            return
        tmp = self.path.with_name(self.path.name + ".compact")
        body = b"".join((json.dumps(r, sort_keys=True) + "\n").encode() for r in open_.values())
        with self._lock:
            with open(tmp, "wb") as f:
                f.write(body)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, self.path)
            fd = os.open(self.spool, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)


def decide(everyone: list[dict[str, list]]) -> tuple[list[str], dict[str, str]]:
    """From every rank's pending jobs (job → key), the jobs to finish (in step order) and, for the others,
    why they are dropped. The same on every rank (a function of the exchanged data only)."""
    world = len(everyone)
    steps = {job: min(m[job][2] for m in everyone if job in m) for mine in everyone for job in mine}
    jobs = sorted(steps, key=lambda j: (steps[j], j))
    finish: list[str] = []
    dropped: dict[str, str] = {}
    for job in jobs:
        lacking = [r for r in range(world) if job not in everyone[r]]
        if lacking:
            dropped[job] = (
                f"rank(s) {', '.join(map(str, lacking))} did not write their files of it (killed before); "
                "training redoes that step"
            )
            continue
        keys = {tuple(everyone[r][job][:4]) for r in range(world)}
        if len(keys) > 1:
            dropped[job] = "the ranks recorded it with other repos, world sizes, steps or layouts"
            continue
        why = next((everyone[r][job][4] for r in range(world) if everyone[r][job][4]), None)
        if why:
            dropped[job] = f"a rank cannot finish it: {why}"
            continue
        if not everyone[0][job][5]:
            dropped[job] = "rank 0 did not record the parts it commits"
            continue
        finish.append(job)
    return finish, dropped


__all__ = ["RankJournal", "Pending", "decide", "fsync_files", "layout_digest", "JOURNAL_FILE", "COMMIT_FOLDER"]
