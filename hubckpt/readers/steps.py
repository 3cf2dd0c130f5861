"""The one parser of training steps in checkpoint names (folders and files), used everywhere.

`checkpoint-1200`, `step-1200`, `step_1200`, `step1200`, `global_step1200`, `global_step=1200`,
`iter-1200.bin`, `ckpt_1200.pt`, `epoch=3-step=1200.ckpt`, `1200` → 1200. The number must end the
name (before a checkpoint file extension) and follow a separator (`-`, `_`, `=`) or one of the words
`global_step`, `step`, `iter`, or be the whole name.
"""

from __future__ import annotations

import re

CHECKPOINT_EXTENSIONS = ("pt", "pth", "bin", "ckpt", "safetensors")
NAMED_STEP = re.compile(
    r"^(?:.*?[-_=]|global_step|step|iter)?(\d+)(?:\.(?:" + "|".join(CHECKPOINT_EXTENSIONS) + r"))?$"
)


def step_from_name(name: str) -> int | None:
    """The training step a checkpoint's file or folder name carries, or None."""
    m = NAMED_STEP.match(name)
    return int(m.group(1)) if m else None
