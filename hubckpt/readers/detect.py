"""Recognise what a path holds by its content (magic bytes and structure), never by its extension."""

from __future__ import annotations

import json
import struct
import tarfile
import zipfile
from pathlib import Path

from ..errors import CorruptCheckpointError, UnsupportedCheckpointError
from .run import WEIGHT_FILES, discover

# safetensors caps the JSON header at 100 MB (reliability reference A4).
MAX_SAFETENSORS_HEADER = 100_000_000


def sniff_file(path: Path) -> str:
    """'safetensors', 'torch-zip', 'torch-legacy' (a bare pickle stream) or 'legacy-tar'. Raises otherwise."""
    try:
        with open(path, "rb") as f:
            head = f.read(16)
            size = f.seek(0, 2)
    except OSError as e:
        raise UnsupportedCheckpointError(f"Cannot read {path}: {e.strerror or e}", str(path)) from e
    if head.startswith(b"PK\x03\x04"):
        return "torch-zip"
    if len(head) >= 9:
        (header_len,) = struct.unpack("<Q", head[:8])
        if head[8:9] == b"{" and 0 < header_len <= min(MAX_SAFETENSORS_HEADER, size - 8):
            return "safetensors"
        if head[8:9] == b"{":
            raise CorruptCheckpointError(
                f"{path} looks like safetensors but its header length ({header_len} bytes) is larger than the file "
                f"or than the {MAX_SAFETENSORS_HEADER}-byte limit",
                str(path),
            )
    if head[:1] == b"\x80" and head[1:2] in (b"\x02", b"\x03", b"\x04", b"\x05"):
        return "torch-legacy"
    try:
        if tarfile.is_tarfile(path):
            return "legacy-tar"
    except OSError:
        pass
    if zipfile.is_zipfile(path):
        return "torch-zip"
    raise UnsupportedCheckpointError(
        f"{path} is not a checkpoint hubckpt recognises (not safetensors, not a torch.save file)", str(path)
    )


# What torch.distributed.checkpoint's HuggingFaceStorageWriter(save_distributed=True) records in each
# rank's safetensors file: {fqn: {"saved_offsets": [...]}}, where the rank's slice sits in the full tensor.
DCP_SHARDING_KEY = "DCP_SHARDING_INFO"


def safetensors_header(path: Path) -> dict:
    """The JSON header of a safetensors file (tensor entries and `__metadata__`), without reading tensor data."""
    sniff_file(path)  # the header length is checked against the file and the 100 MB limit first
    with open(path, "rb") as f:
        n = int.from_bytes(f.read(8), "little")
        try:
            header = json.loads(f.read(n))
        except ValueError as e:
            raise CorruptCheckpointError(f"{path} is not a valid safetensors file: {e}", str(path)) from e
    if not isinstance(header, dict):
        raise CorruptCheckpointError(f"{path} is not a valid safetensors file: header is not an object", str(path))
    return header


def dcp_sharded_files(path: Path) -> list[Path]:
    """The safetensors files of `path` written per rank by DCP's HuggingFaceStorageWriter (else [])."""
    if any((path / name).is_file() for name in WEIGHT_FILES):
        return []  # a consolidated (or plain) Hugging Face folder
    files = sorted(path.glob("*.safetensors"))
    for file in files:
        try:
            meta = safetensors_header(file).get("__metadata__")
        except (UnsupportedCheckpointError, CorruptCheckpointError):
            continue  # the reader reports it
        if isinstance(meta, dict) and DCP_SHARDING_KEY in meta:
            return files
    return []


def sniff_folder(path: Path) -> str:
    """'dcp', 'weights-folder' (Trainer checkpoint or safetensors/bin folder) or 'run' (many checkpoints).

    'dcp' is a torch.distributed.checkpoint folder: the default layout (`.metadata` + `*.distcp`) or the
    per-rank safetensors files of `HuggingFaceStorageWriter(save_distributed=True)` without consolidation.
    """
    if (path / ".metadata").is_file() or dcp_sharded_files(path):
        return "dcp"
    if any((path / name).is_file() for name in WEIGHT_FILES) or any(path.glob("*.safetensors")):
        return "weights-folder"
    if discover(path):
        return "run"
    raise UnsupportedCheckpointError(
        f"{path} holds no checkpoint hubckpt recognises: no model weights (model.safetensors, pytorch_model.bin, "
        "shards + index), no torch.distributed.checkpoint '.metadata', and no checkpoint-N / step-N entries",
        str(path),
    )


def read_json(path: Path, max_bytes: int = 50_000_000) -> dict:
    """A JSON object from a companion file, with a clear error when it is not one."""
    try:
        if path.stat().st_size > max_bytes:
            raise CorruptCheckpointError(f"{path} is larger than {max_bytes} bytes; refusing to parse it", str(path))
        data = json.loads(path.read_text("utf-8"))
    except (OSError, ValueError) as e:
        raise CorruptCheckpointError(f"{path} is not valid JSON: {e}", str(path)) from e
    if not isinstance(data, dict):
        raise CorruptCheckpointError(f"{path} must hold a JSON object", str(path))
    return data
