"""A training run's output folder: many checkpoints, each recognised with its step."""

from __future__ import annotations

import re
from pathlib import Path

# checkpoint-1200/, step-1200/, step_1200/, global_step1200/, epoch=3-step=1200.ckpt, ckpt_1200.pt, iter-1200.bin ...
_NAMED_STEP = re.compile(r"^(?:.*?[-_=]|global_step|step|iter)(\d+)(?:\.(?:pt|pth|bin|ckpt|safetensors))?$")


def discover(run_dir: Path) -> list[tuple[int, Path]]:
    """(step, path) of every checkpoint in `run_dir`, sorted by step; names without a step are ignored."""
    from .detect import WEIGHT_FILES

    found: list[tuple[int, Path]] = []
    for entry in sorted(run_dir.iterdir()):
        m = _NAMED_STEP.match(entry.name)
        if m is None or entry.name.startswith("."):
            continue
        if entry.is_dir():
            holds_weights = (entry / ".metadata").is_file() or any((entry / n).is_file() for n in WEIGHT_FILES) \
                or any(entry.glob("*.safetensors"))
            if not holds_weights:
                continue
        elif not entry.is_file():
            continue
        found.append((int(m.group(1)), entry))
    found.sort(key=lambda item: (item[0], item[1].name))
    return found
