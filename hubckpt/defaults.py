"""Defaults used across the package, defined once (light: the CLI reads them to build its options).

Keep the documented defaults (README, `hubckpt publish --help`) in step with these.
"""

from __future__ import annotations

REVISION_TEMPLATE = "step-{step:07d}"
"""Branch name of a revision: zero-padded, so lexical order is step order (`step-0001200`)."""

MAX_SHARD_SIZE = "5GB"
"""Above this, weights are written as shards plus `model.safetensors.index.json` (as transformers does)."""

__all__ = ["REVISION_TEMPLATE", "MAX_SHARD_SIZE"]
