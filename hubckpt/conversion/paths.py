"""Nothing from the user's machine is published: absolute paths in checkpoint metadata become names.

Trainer state records `best_model_checkpoint` as a path (often absolute, e.g.
`/home/alice/runs/exp1/checkpoint-400`); framework configs carry `out_dir`, data paths and the like.
Every string that is an absolute path (POSIX, Windows drive or UNC, or `~`-relative) is replaced by its
path relative to the run folder holding the checkpoint when it lies inside it (`checkpoint-400`), else
by its last component. Relative paths are left alone: they already say nothing about the machine.
"""

from __future__ import annotations

import re
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import Any

_WINDOWS_ABSOLUTE = re.compile(r"^(?:[A-Za-z]:[\\/]|\\\\)")


def is_absolute_path(text: str) -> bool:
    return text.startswith(("/", "~")) or bool(_WINDOWS_ABSOLUTE.match(text))


def relative_name(text: str, run_dir: Path | None) -> str:
    """`text` (an absolute path) as a name relative to `run_dir`, or its last component."""
    if run_dir is not None and text.startswith("/"):
        try:
            return PurePosixPath(text).relative_to(run_dir.resolve()).as_posix() or "."
        except ValueError:
            pass
    path = PureWindowsPath(text) if _WINDOWS_ABSOLUTE.match(text) else PurePosixPath(text)
    return path.name or "."


def scrub_paths(value: Any, run_dir: Path | None) -> Any:
    """A copy of a metadata tree without absolute paths.

    Dicts, lists, tuples and scalars are copied; other leaves are kept as they are.
    """
    if isinstance(value, str):
        return relative_name(value, run_dir) if is_absolute_path(value) else value
    if isinstance(value, dict):
        return {k: scrub_paths(v, run_dir) for k, v in value.items()}
    if isinstance(value, list):
        return [scrub_paths(v, run_dir) for v in value]
    if isinstance(value, tuple):
        return tuple(scrub_paths(v, run_dir) for v in value)
    return value
