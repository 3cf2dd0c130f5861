"""`checkpoint.json`: what makes a converted checkpoint (and so a Hub revision) self-describing.

The one place that builds, writes, reads and digests it; the file names a converted folder uses.
"""

from __future__ import annotations

import hashlib
import json
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .numbers import decode_number, encode_number
from .untrusted import (
    Source,
    check_int,
    check_number,
    check_repo_path,
    check_sha256,
    check_str,
    check_type,
    load_json,
    printable,
)

if TYPE_CHECKING:
    from ..checkpoint import Checkpoint

# File names the converter writes, and that the rest of hubckpt relies on.
MANIFEST_FILE = "checkpoint.json"
TRAINING_STATE_DIR = "training_state"
MANIFEST_FORMAT_VERSION = 1


def _versions() -> dict[str, str]:
    out = {}
    for dist in ("hubckpt", "torch", "safetensors", "transformers", "huggingface_hub"):
        try:
            out[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            continue
    return out


def build_manifest(ckpt: Checkpoint, weights: Any, files: list[Any], dtype: str) -> dict[str, Any]:
    """The manifest dict; files sorted by path, no timestamps or absolute paths (deterministic).

    `weights` is the converter's `WeightsReport`, `files` its `WrittenFile`s (path, sha256, size); typed
    loosely so that this format module does not depend on the converter that fills it.
    """
    return {
        "format_version": MANIFEST_FORMAT_VERSION,
        "step": ckpt.step,
        "epoch": encode_number(ckpt.epoch),
        "tokens": ckpt.tokens,
        "metrics": {k: encode_number(v) for k, v in sorted(ckpt.metrics.items())},
        "best": ckpt.best,
        "source": {"format": ckpt.source_format, "name": ckpt.source.name},
        "weights": {
            "tensors": weights.tensors,
            "parameters": weights.parameters,
            "bytes": weights.bytes,
            "shards": weights.shards,
            "dtypes": weights.dtypes,
            "tied": weights.tied,
            "dtype_conversion": dtype,
        },
        "training_state": sorted(ckpt.training_state),
        "files": [{"path": f.path, "sha256": f.sha256, "size": f.size} for f in sorted(files, key=lambda f: f.path)],
        "skipped": [{"file": name, "reason": reason} for name, reason in sorted(ckpt.skipped)],
        "versions": _versions(),
    }


def dumps(manifest: dict[str, Any]) -> bytes:
    """The bytes of checkpoint.json: sorted keys, no NaN (deterministic, valid JSON)."""
    return (json.dumps(manifest, indent=2, sort_keys=True, allow_nan=False) + "\n").encode()


def loads(raw: bytes | str, source: Source | None = None) -> dict[str, Any]:
    """A checkpoint.json's content as a dict: untrusted input, size- and depth-capped, fields type-checked.

    Checked are the fields hubckpt uses: step, epoch, tokens, metrics (numbers), source, training_state,
    weights.tied (a map of tensor names to tensor names), and `files` (each a valid repo path, a sha256 of
    64 hex digits or null, a size >= 0). Unknown fields are kept as they are. Raises `HubContentError`
    naming `source` for anything else.
    """
    src = source or Source(path=MANIFEST_FILE)
    manifest: dict[str, Any] = check_type(load_json(raw, src), dict, src, "content")
    check_int(manifest.get("format_version", 0), src, "format_version")
    check_int(manifest.get("step"), src, "step")
    check_int(manifest.get("tokens"), src, "tokens")
    check_number(manifest.get("epoch"), src, "epoch")
    for key, value in check_type(manifest.get("metrics") or {}, dict, src, "metrics").items():
        if not isinstance(value, (str, bool)):  # strings: NaN / inf, or a note kept by manifest_metrics' filter
            check_number(value, src, f"metric {printable(str(key), 40)}")
    source_doc = check_type(manifest.get("source") or {}, dict, src, "source")
    check_str(source_doc.get("format"), src, "source format", limit=255)
    check_str(source_doc.get("name"), src, "source name")
    for part in check_type(manifest.get("training_state") or [], list, src, "training_state"):
        check_str(part, src, "training state part", optional=False, limit=255)
    weights = check_type(manifest.get("weights") or {}, dict, src, "weights")
    for alias, stored in check_type(weights.get("tied") or {}, dict, src, "weights.tied").items():
        check_str(alias, src, "tied tensor name", optional=False)
        check_str(stored, src, f"tensor {printable(str(alias), 80)} is tied to", optional=False)
    seen = set()
    for entry in check_type(manifest.get("files") or [], list, src, "files"):
        check_type(entry, dict, src, "file entry")
        path = check_repo_path(entry.get("path"), src)
        if path in seen:
            raise src.error(f"it lists {printable(path, 80)!r} twice")
        seen.add(path)
        check_sha256(entry.get("sha256"), src, f"sha256 of {printable(path, 80)}")
        check_int(entry.get("size"), src, f"size of {printable(path, 80)}")
    return manifest


def read_manifest(folder: Path) -> dict[str, Any] | None:
    """The checkpoint.json of a local folder (None if it has none)."""
    path = Path(folder) / MANIFEST_FILE
    return loads(path.read_bytes()) if path.is_file() else None


def manifest_digest(manifest: dict[str, Any]) -> str:
    """Identity of a revision's content: sha256 of its canonical manifest."""
    return hashlib.sha256(json.dumps(manifest, sort_keys=True).encode()).hexdigest()


def manifest_metrics(manifest: dict[str, Any]) -> dict[str, float]:
    """The numeric metrics of a checkpoint.json (NaN / ±inf included, decoded from their string form)."""
    out = {}
    for key, value in (manifest.get("metrics") or {}).items():
        value = decode_number(value)
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            out[key] = value
    return out
