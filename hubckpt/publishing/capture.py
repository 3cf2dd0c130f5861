"""Capturing a checkpoint on disk for a job: its step without reading weights, a snapshot of its files.

(Live tensors are captured into staging buffers: `staging`.)
"""

from __future__ import annotations

from pathlib import Path


def peek_step(path: Path) -> tuple[int | None, int | None]:
    """(step, tokens) of a checkpoint without reading its weights (see `readers.peek_step`)."""
    from ..readers import peek_step as peek

    return peek(path)


def snapshot_into(source: Path, dest: Path) -> Path:
    """Snapshot `source` into `dest`: hard links where the bytes cannot change under us, copies where a
    framework rewrites the file in place (see `hubckpt.snapshots`)."""
    from ..snapshots import take_snapshot

    return take_snapshot(source, dest)


__all__ = ["peek_step", "snapshot_into"]
