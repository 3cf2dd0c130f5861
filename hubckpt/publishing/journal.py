"""The publisher's journal: an append-only, fsync'd JSON-lines record of every job's progress.

It lives in the spool (`<spool>/journal.jsonl`) next to the staged files, and is replayed when a
`Publisher` starts (or by `hubckpt resume`), so a process killed at any point carries on where it
stopped without publishing a revision twice or losing one. One record per line::

    {"event": "captured", "job": "000000001200-step-0001200", "revision": "step-0001200", "step": 1200,
     "source": "/runs/exp1/checkpoint-1200", "final": false, "metrics": {...}, "time": "..."}
    {"event": "converted", "job": "...", "manifest_sha256": "…"}
    {"event": "committed", "job": "...", "target": "http://127.0.0.1:8900/me/exp1", "commit": "…"}
    {"event": "indexed", "job": "...", "target": "http://127.0.0.1:8900/me/exp1"}
    {"event": "done", "job": "..."}          or   {"event": "failed", "job": "...", "error": "..."}

A torn last line (the process died mid-write) is ignored on replay.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)


@dataclass
class JobRecord:
    """Everything the journal knows about one job, folded from its records."""
    job: str
    captured: dict[str, Any] = field(default_factory=dict)
    manifest_sha256: str | None = None
    committed: dict[str, str] = field(default_factory=dict)  # target → commit
    indexed: set[str] = field(default_factory=set)
    done: bool = False
    failed: str | None = None


class Journal:
    def __init__(self, path: Path) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()

    def append(self, event: str, job: str, **fields: Any) -> None:
        record = {"event": event, "job": job, **fields,
                  "time": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")}
        line = (json.dumps(record, sort_keys=True) + "\n").encode()
        with self._lock:
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
            try:
                os.write(fd, line)
                os.fsync(fd)
            finally:
                os.close(fd)

    def replay(self) -> dict[str, JobRecord]:
        """Every job's folded state, in the order jobs were first captured."""
        jobs: dict[str, JobRecord] = {}
        try:
            lines = self.path.read_bytes().splitlines()
        except FileNotFoundError:
            return jobs
        for number, line in enumerate(lines, start=1):
            try:
                record = json.loads(line)
            except ValueError:
                logger.warning("%s: ignoring unreadable line %d (torn write?)", self.path, number)
                continue
            job = jobs.setdefault(record["job"], JobRecord(record["job"]))
            event = record["event"]
            if event == "captured":
                job.captured = record
                job.done, job.failed = False, None
            elif event == "converted":
                job.manifest_sha256 = record["manifest_sha256"]
            elif event == "committed":
                job.committed[record["target"]] = record["commit"]
            elif event == "indexed":
                job.indexed.add(record["target"])
            elif event == "done":
                job.done = True
            elif event == "failed":
                job.failed = record.get("error")
        return jobs
