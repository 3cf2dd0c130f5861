"""What a reader hands to the converter: one training checkpoint, format-independent."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch


@dataclass
class Checkpoint:
    """A checkpoint as read from disk (or from live objects).

    Attributes:
        source: the file or folder it was read from.
        source_format: "trainer", "safetensors", "torch", "nanogpt", "lightning" or "dcp".
        weights: model tensors by name (may share storage; the converter handles it); a mapping, which
            readers may fill on first use (`readers.tensors.LazyWeights`).
        training_state: optimizer / scheduler / scaler / rng / loop state, any nesting of dicts, lists,
            tensors, numpy arrays and JSON scalars.
        step, epoch, tokens: training position, when known.
        metrics: latest logged metrics (name → float).
        best: {"metric", "value", "checkpoint"} when the source records a best model.
        companions: safe files to copy next to the weights (config, tokenizer, generation config...).
        skipped: (file, reason) for every file not carried over.
        weight_files: safetensors files that hold exactly `weights`, unchanged (names included), which the
            converter may validate and reuse instead of rewriting; empty when the weights need rewriting.
    """

    source: Path
    source_format: str
    weights: Mapping[str, torch.Tensor]
    training_state: dict[str, Any] = field(default_factory=dict)
    step: int | None = None
    epoch: float | None = None
    tokens: int | None = None
    metrics: dict[str, float] = field(default_factory=dict)
    best: dict[str, Any] | None = None
    companions: list[Path] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)
    weight_files: list[Path] = field(default_factory=list)
