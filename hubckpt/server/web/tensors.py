"""Tensor tables from safetensors headers, and what changed between two revisions' tensors.

Only the header of a safetensors file is read for the table (8-byte length + JSON, the format's
documented layout); comparing reads tensor bytes, one tensor at a time, straight from the object store.
"""

from __future__ import annotations

import json
import math
import struct
from dataclasses import dataclass
from pathlib import Path

# Comparing loads both tensors; past this many bytes a pair is reported as changed without magnitudes.
MAX_COMPARE_BYTES = 256 * 1024 * 1024


@dataclass(frozen=True)
class TensorInfo:
    name: str
    dtype: str
    shape: tuple[int, ...]
    file: str
    start: int  # absolute byte offsets in the file
    end: int

    @property
    def numel(self) -> int:
        return math.prod(self.shape)

    @property
    def nbytes(self) -> int:
        return self.end - self.start


class HeaderError(ValueError):
    """A .safetensors file whose header cannot be read."""


def read_header(path: Path, file: str) -> tuple[list[TensorInfo], dict]:
    """Tensors (sorted by name) and `__metadata__` of the safetensors file at `path`, read by the one strict
    parser (`formats.safetensors_header`: tensors tile the data area, spans are dtype x shape)."""
    from ...errors import IntegrityError
    from ...formats.safetensors_header import read_file_header

    try:
        header, base, _ = read_file_header(path, file)
    except IntegrityError as e:
        raise HeaderError(str(e)) from e
    metadata = header.pop("__metadata__", None) or {}
    tensors = [
        TensorInfo(
            name,
            spec["dtype"],
            tuple(spec["shape"]),
            file,
            base + spec["data_offsets"][0],
            base + spec["data_offsets"][1],
        )
        for name, spec in header.items()
    ]
    tensors.sort(key=lambda t: t.name)
    return tensors, metadata


@dataclass(frozen=True)
class TensorChange:
    name: str
    status: str  # 'changed' | 'unchanged' | 'added' | 'removed' | 'reshaped'
    a: TensorInfo | None
    b: TensorInfo | None
    rel_change: float | None = None  # ||b - a|| / ||a||
    max_abs: float | None = None  # max |b - a|


def _load(path: Path, info: TensorInfo):
    import torch
    from safetensors.torch import load

    # Rebuild a one-tensor safetensors buffer so safetensors (not us) decodes the dtype.
    with open(path, "rb") as f:
        f.seek(info.start)
        data = f.read(info.nbytes)
    header = json.dumps(
        {"t": {"dtype": info.dtype, "shape": list(info.shape), "data_offsets": [0, len(data)]}}
    ).encode()
    header += b" " * (-len(header) % 8)
    tensor = load(struct.pack("<Q", len(header)) + header + data)["t"]
    return tensor.to(torch.float64)


def _same_bytes(path_a: Path, a: TensorInfo, path_b: Path, b: TensorInfo) -> bool:
    if a.nbytes != b.nbytes:
        return False
    with open(path_a, "rb") as fa, open(path_b, "rb") as fb:
        fa.seek(a.start)
        fb.seek(b.start)
        left = a.nbytes
        while left:
            n = min(left, 8 * 1024 * 1024)
            if fa.read(n) != fb.read(n):
                return False
            left -= n
    return True


def compare(
    tensors_a: dict[str, tuple[TensorInfo, Path]], tensors_b: dict[str, tuple[TensorInfo, Path]]
) -> list[TensorChange]:
    """Per-tensor comparison of two revisions (name → (info, object path)).

    Changed tensors come first, the largest change first.
    """
    out: list[TensorChange] = []
    for name in sorted(set(tensors_a) | set(tensors_b)):
        if name not in tensors_b:
            out.append(TensorChange(name, "removed", tensors_a[name][0], None))
            continue
        if name not in tensors_a:
            out.append(TensorChange(name, "added", None, tensors_b[name][0]))
            continue
        (a, pa), (b, pb) = tensors_a[name], tensors_b[name]
        if a.shape != b.shape or a.dtype != b.dtype:
            out.append(TensorChange(name, "reshaped", a, b))
        elif _same_bytes(pa, a, pb, b):
            out.append(TensorChange(name, "unchanged", a, b, 0.0, 0.0))
        elif a.nbytes > MAX_COMPARE_BYTES:
            out.append(TensorChange(name, "changed", a, b))
        else:
            ta, tb = _load(pa, a), _load(pb, b)
            diff = tb - ta
            norm = float(ta.norm()) if ta.numel() else 0.0
            rel = float(diff.norm()) / norm if norm else (math.inf if float(diff.norm()) else 0.0)
            max_abs = float(diff.abs().max()) if diff.numel() else 0.0
            out.append(TensorChange(name, "changed", a, b, rel, max_abs))
    order = {"changed": 0, "reshaped": 1, "added": 2, "removed": 3, "unchanged": 4}
    out.sort(key=lambda c: (order[c.status], -_sortable(c.rel_change), c.name))
    return out


def _sortable(value: float | None) -> float:
    if value is None or math.isnan(value):
        return 0.0
    return value
