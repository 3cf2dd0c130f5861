"""A streaming safetensors writer: tensors go to disk straight from their memory, hashed on the way.

`safetensors.torch.save_file` first copies every tensor into bytes, so writing a shard (or an
optimizer state twice the model's size) costs that much extra memory. This writer produces the
same format — 8-byte little-endian header length, JSON header padded with spaces to 8 bytes, then
the tensors' raw little-endian bytes in the order safetensors itself uses (alignment, then name) —
from zero-copy views, computes the file's sha256 while writing (from the write buffer, while it is
still in cache), and fsyncs. Files are written past the page cache (`direct_io.py`), deterministic
for the same tensors and metadata, and checked by the safetensors parser on read-back (see
`weights.py`).
"""

from __future__ import annotations

import errno
import json
from pathlib import Path
from typing import TYPE_CHECKING

from ..direct_io import DirectWriter
from ..errors import DiskFullError, UnsupportedCheckpointError

if TYPE_CHECKING:
    import torch


def _dtype_names() -> dict:
    import torch

    names = {
        torch.float64: "F64",
        torch.float32: "F32",
        torch.float16: "F16",
        torch.bfloat16: "BF16",
        torch.int64: "I64",
        torch.int32: "I32",
        torch.int16: "I16",
        torch.int8: "I8",
        torch.uint8: "U8",
        torch.bool: "BOOL",
        torch.float8_e4m3fn: "F8_E4M3",
        torch.float8_e5m2: "F8_E5M2",
    }
    for attr, name in (
        ("uint16", "U16"),
        ("uint32", "U32"),
        ("uint64", "U64"),
        ("complex64", "C64"),
        ("float8_e8m0fnu", "F8_E8M0"),
    ):
        if hasattr(torch, attr):
            names[getattr(torch, attr)] = name
    return names


def raw_bytes(tensor: torch.Tensor) -> memoryview:
    """The tensor's bytes without a copy (it must be contiguous)."""
    import torch

    if tensor.numel() == 0:
        return memoryview(b"")
    return tensor.reshape(-1).view(torch.uint8).numpy().data


def write_safetensors(
    path: Path, tensors: dict[str, torch.Tensor], metadata: dict[str, str] | None = None
) -> tuple[str, int]:
    """Write `tensors` (contiguous, CPU, not sharing memory) to `path`; return (sha256, size)."""
    names = _dtype_names()
    entries = []
    for name, t in tensors.items():
        if t.dtype not in names:
            raise UnsupportedCheckpointError(f"tensor {name!r} has dtype {t.dtype}, which safetensors cannot store")
        if not t.is_contiguous():
            raise UnsupportedCheckpointError(f"tensor {name!r} is not contiguous")
        entries.append((name, t))
    # safetensors' own order: larger alignment first, then by name.
    entries.sort(key=lambda item: (-item[1].element_size(), item[0]))
    header: dict = {}
    if metadata:
        header["__metadata__"] = dict(sorted(metadata.items()))
    offset = 0
    for name, t in entries:
        nbytes = t.numel() * t.element_size()
        header[name] = {"dtype": names[t.dtype], "shape": list(t.shape), "data_offsets": [offset, offset + nbytes]}
        offset += nbytes
    raw = json.dumps(header, separators=(",", ":")).encode()
    raw += b" " * (-len(raw) % 8)
    try:
        # Past the page cache (direct_io.py), hashed piece by piece from the write buffer while it is in
        # cache, fsync'd on close.
        with DirectWriter(path, sha256=True) as f:
            f.write(len(raw).to_bytes(8, "little"))
            f.write(raw)
            for _, t in entries:
                f.write(raw_bytes(t))
        digest = f.hexdigest()
    except OSError as e:
        if e.errno in (errno.ENOSPC, errno.EFBIG, errno.EDQUOT):
            raise DiskFullError(e.errno, f"No space left while writing {path.name} ({e.strerror})") from e
        raise
    return digest, 8 + len(raw) + offset
