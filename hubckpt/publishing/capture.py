"""Capturing a checkpoint for a job: its step without reading weights, a snapshot of files, copies of tensors."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def peek_step(path: Path) -> tuple[int | None, int | None]:
    """(step, tokens) of a checkpoint without reading its weights (see `readers.peek_step`)."""
    from ..readers import peek_step as peek

    return peek(path)


def snapshot_into(source: Path, dest: Path) -> Path:
    """Snapshot `source` into `dest`: hard links where the bytes cannot change under us, copies where a
    framework rewrites the file in place (see `hubckpt.snapshots`)."""
    from ..snapshots import take_snapshot

    return take_snapshot(source, dest)


def clone_tree(value: Any) -> Any:
    """A deep copy of a training-state tree with every tensor cloned (the live ones keep changing)."""
    import torch

    if isinstance(value, torch.Tensor):
        return value.detach().clone()
    if isinstance(value, dict):
        return {k: clone_tree(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(clone_tree(v) for v in value)
    return value


__all__ = ["peek_step", "snapshot_into", "clone_tree"]
