"""`Restored`: what a restore put back, the training position to continue from (`restore`, `load/shards.py`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


@dataclass
class Restored:
    """What `restore` loaded: the training position to continue from.

    Attributes:
        repo_id: the repo.
        revision: the revision's name.
        commit: the commit everything was read at.
        step: the step it was published at; continue from `step + 1`.
        epoch: the epoch, if recorded.
        tokens: tokens seen, if recorded.
        metrics: the metrics published with it.
        extra: what `Checkpointer.save(extra=...)` stored (position in the epoch...).
        parts: the training-state parts restored (`optimizer`, `scheduler`, `scaler`, `rng`...).
        mismatches: with `strict=False`, what was left out.
        folder: the downloaded (cached) revision files.
        rng_restored: for a revision published by several ranks: whether each rank's RNG states were
            restored (only when the world size matches the one that saved); None otherwise.
    """

    repo_id: str
    revision: str
    commit: str
    step: int | None
    epoch: float | None = None
    tokens: int | None = None
    metrics: dict[str, float] = field(default_factory=dict)
    extra: Any = None
    parts: list[str] = field(default_factory=list)  # training-state parts restored (optimizer, scheduler, ...)
    mismatches: list[str] = field(default_factory=list)  # with strict=False: what was left out
    folder: Path | None = None  # the downloaded (cached) revision files
    # RNG states restored (None: not a multi-rank revision); across world sizes they are not (load/shards.py)
    rng_restored: bool | None = None
