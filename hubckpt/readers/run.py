"""A training run's output folder: many checkpoints, each recognised with its step."""

from __future__ import annotations

from pathlib import Path

from .steps import step_from_name

# The files that make a folder a checkpoint of weights (Trainer / transformers layout).
WEIGHT_FILES = (
    "model.safetensors",
    "model.safetensors.index.json",
    "pytorch_model.bin",
    "pytorch_model.bin.index.json",
)


def discover(run_dir: Path) -> list[tuple[int, Path]]:
    """(step, path) of every checkpoint in `run_dir`, sorted by step; names without a step are ignored.

    A folder counts when it holds weights (Trainer `checkpoint-N/`, safetensors, DCP); a file when its
    name carries a step.

    Args:
        run_dir: the run folder.

    Returns:
        (step, path) pairs in step order.

    Raises:
        FileNotFoundError: `run_dir` does not exist.
    """
    found: list[tuple[int, Path]] = []
    for entry in sorted(run_dir.iterdir()):
        step = step_from_name(entry.name)
        if step is None or entry.name.startswith("."):
            continue
        if entry.is_dir():
            holds_weights = (
                (entry / ".metadata").is_file()
                or any((entry / n).is_file() for n in WEIGHT_FILES)
                or any(entry.glob("*.safetensors"))
            )
            if not holds_weights:
                continue
        elif not entry.is_file():
            continue
        found.append((step, entry))
    found.sort(key=lambda item: (item[0], item[1].name))
    return found
