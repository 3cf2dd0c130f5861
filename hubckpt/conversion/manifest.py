"""`checkpoint.json`: what makes a converted checkpoint (and later a Hub revision) self-describing."""

from __future__ import annotations

import json
from importlib import metadata
from typing import Any

from ..checkpoint import MANIFEST_FORMAT_VERSION, Checkpoint
from .weights import WeightsReport, WrittenFile


def _versions() -> dict[str, str]:
    out = {}
    for dist in ("hubckpt", "torch", "safetensors", "transformers", "huggingface_hub"):
        try:
            out[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            continue
    return out


def _finite(value: Any) -> Any:
    """NaN / ±inf as the strings "NaN" / "Infinity" / "-Infinity" (valid JSON; `revisions.decode_number` reads them)."""
    from ..revisions import encode_number

    return encode_number(value)


def build_manifest(ckpt: Checkpoint, weights: WeightsReport, files: list[WrittenFile], dtype: str) -> dict[str, Any]:
    """The manifest dict; files sorted by path, no timestamps or absolute paths (deterministic)."""
    return {
        "format_version": MANIFEST_FORMAT_VERSION,
        "step": ckpt.step,
        "epoch": _finite(ckpt.epoch),
        "tokens": ckpt.tokens,
        "metrics": {k: _finite(v) for k, v in sorted(ckpt.metrics.items())},
        "best": ckpt.best,
        "source": {"format": ckpt.source_format, "name": ckpt.source.name},
        "weights": {"tensors": weights.tensors, "parameters": weights.parameters, "bytes": weights.bytes,
                    "shards": weights.shards, "dtypes": weights.dtypes, "tied": weights.tied,
                    "dtype_conversion": dtype},
        "training_state": sorted(ckpt.training_state),
        "files": [{"path": f.path, "sha256": f.sha256, "size": f.size} for f in sorted(files, key=lambda f: f.path)],
        "skipped": [{"file": name, "reason": reason} for name, reason in sorted(ckpt.skipped)],
        "versions": _versions(),
    }


def dumps(manifest: dict[str, Any]) -> bytes:
    return (json.dumps(manifest, indent=2, sort_keys=True, allow_nan=False) + "\n").encode()
