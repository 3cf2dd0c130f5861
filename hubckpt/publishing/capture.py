"""Capturing a checkpoint for a job: its step without reading weights, a snapshot of files, copies of tensors."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any


def peek_step(path: Path) -> tuple[int | None, int | None]:
    """(step, tokens) of a checkpoint without reading its weights: trainer_state.json, else the name."""
    from ..readers.weights_folder import step_from_name

    state = path / "trainer_state.json"
    if state.is_file():
        try:
            data = json.loads(state.read_text())
            tokens = data.get("num_input_tokens_seen") or None
            return data.get("global_step"), tokens
        except (OSError, ValueError):
            pass
    return step_from_name(path.name), None


def snapshot_into(source: Path, dest: Path) -> Path:
    """Hard-link `source` (a file or folder) into `dest`; copy where links are impossible."""
    import errno

    def link(src: str, dst: str) -> None:
        try:
            os.link(src, dst)
        except OSError as e:
            if e.errno not in (errno.EXDEV, errno.EPERM, errno.EMLINK, errno.ENOTSUP):
                raise
            shutil.copy2(src, dst)

    target = dest / source.name
    if target.exists():
        shutil.rmtree(target) if target.is_dir() else target.unlink()
    dest.mkdir(parents=True, exist_ok=True)
    if source.is_dir():
        shutil.copytree(source, target, copy_function=link)
    else:
        link(str(source), str(target))
    return target


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
