"""The safetensors header, as read from a hub or a downloaded file: the one parser, strict.

A header is untrusted input: it decides which bytes become which tensor. It is accepted only when every
entry has a known dtype, a shape of non-negative integers and `[start, end)` offsets whose span is
exactly dtype × shape, and the entries, sorted by offset, tile the data area: no gap, no overlap (two
tensors sharing bytes would alias each other), ending at the data area's end when the file size is known.
This is what the safetensors library itself requires of a file it opens.
"""

from __future__ import annotations

import json
import os
import struct
from typing import Any

from ..errors import IntegrityError
from .untrusted import MAX_JSON_DEPTH, printable

MAX_HEADER_BYTES = 100 * 1024 * 1024  # the safetensors library's own limit

# bits per element of each safetensors dtype
DTYPE_BITS = {
    "BOOL": 8,
    "U8": 8,
    "I8": 8,
    "F8_E4M3": 8,
    "F8_E5M2": 8,
    "F8_E8M0": 8,
    "I16": 16,
    "U16": 16,
    "F16": 16,
    "BF16": 16,
    "I32": 32,
    "U32": 32,
    "F32": 32,
    "I64": 64,
    "U64": 64,
    "F64": 64,
    "C64": 64,
    "F4": 4,
    "F6_E2M3": 6,
    "F6_E3M2": 6,
}

# the torch dtype (an attribute of `torch`) of each safetensors dtype torch can hold: the one table
TORCH_DTYPES = {
    "BOOL": "bool",
    "U8": "uint8",
    "I8": "int8",
    "I16": "int16",
    "U16": "uint16",
    "I32": "int32",
    "U32": "uint32",
    "I64": "int64",
    "U64": "uint64",
    "F16": "float16",
    "BF16": "bfloat16",
    "F32": "float32",
    "F64": "float64",
    "F8_E4M3": "float8_e4m3fn",
    "F8_E5M2": "float8_e5m2",
    "C64": "complex64",
}


def invalid(where: str, why: str) -> IntegrityError:
    return IntegrityError(f"{where} is not a valid safetensors file: {why}", path=where)


def header_length(prefix: bytes, where: str) -> int:
    """The 8-byte little-endian header length at the start of a safetensors file."""
    if len(prefix) < 8:
        raise invalid(where, f"only {len(prefix)} bytes")
    length: int = struct.unpack("<Q", prefix[:8])[0]
    if length < 2 or length > MAX_HEADER_BYTES:
        raise invalid(where, f"header length {length}")
    return length


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def parse_header(raw: bytes, where: str, *, data_size: int | None = None) -> dict[str, Any]:
    """Tensor name → {"dtype", "shape", "data_offsets"} (plus "__metadata__"), validated against the file.

    Raises `IntegrityError` naming `where` for a header that does not parse or that describes bytes the
    file does not have, overlapping or non-contiguous tensors, negative dimensions or a byte span that
    is not dtype × shape: an error rather than a silently wrong tensor.
    """
    try:
        header = json.loads(raw)
    except RecursionError:
        raise invalid(where, f"header nested deeper than {MAX_JSON_DEPTH} levels") from None
    except ValueError as e:
        raise invalid(where, f"header is not JSON ({e})") from None
    if not isinstance(header, dict):
        raise invalid(where, "header is not a JSON object")
    header = dict[str, Any](header)
    spans = []
    for name, entry in header.items():
        shown = printable(name, 80)
        if name == "__metadata__":
            if not isinstance(entry, dict) or not all(isinstance(v, str) for v in entry.values()):
                raise invalid(where, "__metadata__ is not a map of strings")
            continue
        if not isinstance(entry, dict):
            raise invalid(where, f"entry {shown!r} is malformed")
        offsets, shape, dtype = entry.get("data_offsets"), entry.get("shape"), entry.get("dtype")
        if (
            not isinstance(offsets, list)
            or len(offsets) != 2
            or not all(_is_int(o) for o in offsets)
            or not isinstance(shape, list)
            or not all(_is_int(d) for d in shape)
            or not isinstance(dtype, str)
        ):
            raise invalid(where, f"entry {shown!r} is malformed")
        if any(d < 0 for d in shape):
            raise invalid(where, f"tensor {shown!r} has a negative dimension in shape {shape}")
        bits = DTYPE_BITS.get(dtype)
        if bits is None:
            raise invalid(where, f"tensor {shown!r} has unknown dtype {printable(dtype, 20)!r}")
        start, end = offsets
        count = 1
        for dim in shape:
            count *= dim
        if not 0 <= start <= end or (end - start) * 8 != count * bits:
            raise invalid(where, f"tensor {shown!r} has offsets {start}-{end} for shape {shape} {dtype}")
        if data_size is not None and end > data_size:
            raise invalid(where, f"tensor {shown!r} ends at {end}, past the file's {data_size} data bytes")
        spans.append((start, end, shown))
    spans.sort()
    reached = 0
    for start, end, shown in spans:
        if start != reached:
            why = "overlaps the tensor before it" if start < reached else f"leaves a gap at bytes {reached}-{start}"
            raise invalid(where, f"tensor {shown!r} (offsets {start}-{end}) {why}: tensors must tile the data area")
        reached = end
    if data_size is not None and reached != data_size:
        raise invalid(where, f"its tensors cover {reached} of the file's {data_size} data bytes")
    return header


def read_file_header(path: str | os.PathLike[str], where: str) -> tuple[dict[str, Any], int, bytes]:
    """(parsed header, offset where the data starts, raw header bytes) of a local safetensors file.

    The one reader of local files' headers (loaders, lazy reads, the web pages), as strict as
    `parse_header` against the file's real size. Raises `IntegrityError` naming `where`; `OSError` as is.
    """
    size = os.stat(path).st_size
    with open(path, "rb") as f:
        length = header_length(f.read(8), where)
        raw = f.read(length)
    if len(raw) != length:
        raise invalid(where, f"its header says {length} bytes but the file has {size}")
    return parse_header(raw, where, data_size=size - 8 - length), 8 + length, raw
