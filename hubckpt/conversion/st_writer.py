"""A streaming safetensors writer: tensors go to disk straight from their memory, hashed on the way.

`safetensors.torch.save_file` first copies every tensor into bytes, so writing a shard (or an
optimizer state twice the model's size) costs that much extra memory. This writer produces the
same format — 8-byte little-endian header length, JSON header padded with spaces to 8 bytes, then
the tensors' raw little-endian bytes in the order safetensors itself uses (alignment, then name) —
from zero-copy views, computes the file's sha256 while writing, and fsyncs. Files are written
past the page cache (`direct_io.py`), deterministic for the same tensors and metadata, and checked
by the safetensors parser on read-back (see `weights.py`).
"""

from __future__ import annotations

import errno
import hashlib
import json
from pathlib import Path
from typing import TYPE_CHECKING

from ..direct_io import DirectWriter
from ..errors import DiskFullError, UnsupportedCheckpointError

if TYPE_CHECKING:
    import torch

_SLICE = 64 * 1024 * 1024


def _dtype_names() -> dict:
    import torch

    names = {torch.float64: "F64", torch.float32: "F32", torch.float16: "F16", torch.bfloat16: "BF16",
             torch.int64: "I64", torch.int32: "I32", torch.int16: "I16", torch.int8: "I8", torch.uint8: "U8",
             torch.bool: "BOOL", torch.float8_e4m3fn: "F8_E4M3", torch.float8_e5m2: "F8_E5M2"}
    for attr, name in (("uint16", "U16"), ("uint32", "U32"), ("uint64", "U64"), ("complex64", "C64"),
                       ("float8_e8m0fnu", "F8_E8M0")):
        if hasattr(torch, attr):
            names[getattr(torch, attr)] = name
    return names


def raw_bytes(tensor: "torch.Tensor") -> memoryview:
    """The tensor's bytes without a copy (it must be contiguous)."""
    import torch

    if tensor.numel() == 0:
        return memoryview(b"")
    return memoryview(tensor.reshape(-1).view(torch.uint8).numpy())


def write_safetensors(path: Path, tensors: dict[str, "torch.Tensor"], metadata: dict[str, str] | None = None) -> tuple[str, int]:
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
    hasher = _BackgroundHasher()
    try:
        with DirectWriter(path) as f:  # bypasses the page cache (direct_io.py); fsync'd on close
            for chunk in (len(raw).to_bytes(8, "little"), raw):
                hasher.update(chunk)
                f.write(chunk)
            for _, t in entries:
                data = raw_bytes(t)
                for start in range(0, len(data), _SLICE):
                    piece = data[start:start + _SLICE]
                    hasher.update(piece)  # hashed on another core while this one writes
                    f.write(piece)
        digest = hasher.hexdigest()
    except OSError as e:
        hasher.hexdigest()
        if e.errno in (errno.ENOSPC, errno.EFBIG, errno.EDQUOT):
            raise DiskFullError(e.errno, f"No space left while writing {path.name} ({e.strerror})") from e
        raise
    return digest, 8 + len(raw) + offset


class _BackgroundHasher:
    """sha256 in a worker thread (hashlib releases the GIL), fed the same zero-copy slices we write."""

    def __init__(self) -> None:
        import queue
        import threading

        self._hash = hashlib.sha256()
        self._queue: queue.Queue = queue.Queue(maxsize=4)
        self._thread = threading.Thread(target=self._run, name="hubckpt-sha256", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while (piece := self._queue.get()) is not None:
            self._hash.update(piece)

    def update(self, piece) -> None:
        self._queue.put(piece)

    def hexdigest(self) -> str:
        if self._thread.is_alive():
            self._queue.put(None)
            self._thread.join()
        return self._hash.hexdigest()
