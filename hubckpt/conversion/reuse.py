"""Reuse a checkpoint that already is safetensors: validate it in one read, then link it instead of rewriting it.

Every transformers Trainer checkpoint is already `model.safetensors` (or shards + index). Rewriting it
byte for byte costs a read, a write and a verification read of every byte; here each file is read once,
and that one read both hashes it (sha256, for `checkpoint.json` and the upload) and validates its header
with the safetensors rules (reliability reference A4/§2.2): header length within the 100 MB cap and the
file, UTF-8 JSON without duplicate keys, known dtypes, shape × dtype size equal to each tensor's byte
range, ranges tiling the data area from 0 with no gap, overlap or trailing byte, `__metadata__` string to
string. The file is copied in that same read, or (for the publisher's spool) hard-linked. A file that
fails validation is a CorruptCheckpointError, as when reading it.

Not reused (the caller converts instead): dtype casts, `_orig_mod.` prefixes to strip, shards larger than
`max_shard_size`, shard names outside the transformers layout.
"""

from __future__ import annotations

import errno
import hashlib
import json
import math
import os
import queue
import re
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

from ..errors import CorruptCheckpointError, UnsupportedCheckpointError
from ..readers.detect import MAX_SAFETENSORS_HEADER
from .weights import INDEX_FILE, WeightsReport, WrittenFile

DTYPE_BITS = {
    "F64": 64,
    "F32": 32,
    "F16": 16,
    "BF16": 16,
    "I64": 64,
    "I32": 32,
    "I16": 16,
    "I8": 8,
    "U8": 8,
    "BOOL": 8,
    "F8_E4M3": 8,
    "F8_E5M2": 8,
    "F8_E8M0": 8,
    "U16": 16,
    "U32": 32,
    "U64": 64,
    "C64": 64,
    "F8_E4M3FNUZ": 8,
    "F8_E5M2FNUZ": 8,
}
TORCH_DTYPE = {
    "F64": "float64",
    "F32": "float32",
    "F16": "float16",
    "BF16": "bfloat16",
    "I64": "int64",
    "I32": "int32",
    "I16": "int16",
    "I8": "int8",
    "U8": "uint8",
    "BOOL": "bool",
    "F8_E4M3": "float8_e4m3fn",
    "F8_E5M2": "float8_e5m2",
    "F8_E8M0": "float8_e8m0fnu",
    "U16": "uint16",
    "U32": "uint32",
    "U64": "uint64",
    "C64": "complex64",
}
SHARD_NAME = re.compile(r"^model-(\d{5})-of-(\d{5})\.safetensors$")
_CHUNK = 16 << 20


def _no_duplicates(pairs: list[tuple[str, object]]) -> dict:
    keys = [k for k, _ in pairs]
    if len(keys) != len(set(keys)):
        raise ValueError(f"duplicate keys {sorted({k for k in keys if keys.count(k) > 1})[:3]}")
    return dict(pairs)


def validate_header(path: Path, raw: bytes, file_size: int) -> dict[str, dict]:
    """The tensor entries of a safetensors header (`raw` = the N header bytes), checked as the reference parser does."""

    def bad(reason: str) -> CorruptCheckpointError:
        return CorruptCheckpointError(f"{path} is not a valid safetensors file: {reason}", str(path))

    try:
        header = json.loads(raw.decode("utf-8"), object_pairs_hook=_no_duplicates)
    except (UnicodeDecodeError, ValueError) as e:
        raise bad(f"header is not valid JSON ({e})") from e
    if not isinstance(header, dict):
        raise bad("header is not a JSON object")
    metadata = header.pop("__metadata__", None)
    if metadata is not None and (
        not isinstance(metadata, dict)
        or not all(isinstance(k, str) and isinstance(v, str) for k, v in metadata.items())
    ):
        raise bad("__metadata__ must map strings to strings")
    ranges = []
    for name, entry in header.items():
        if not isinstance(entry, dict) or set(entry) != {"dtype", "shape", "data_offsets"}:
            raise bad(f"tensor {name!r} has a malformed entry")
        dtype, shape, offsets = entry["dtype"], entry["shape"], entry["data_offsets"]
        if dtype not in DTYPE_BITS:
            raise bad(f"tensor {name!r} has unknown dtype {dtype!r}")
        if not isinstance(shape, list) or not all(
            isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape
        ):
            raise bad(f"tensor {name!r} has an invalid shape")
        if (
            not isinstance(offsets, list)
            or len(offsets) != 2
            or not all(isinstance(o, int) and not isinstance(o, bool) for o in offsets)
            or offsets[1] < offsets[0]
        ):
            raise bad(f"tensor {name!r} has invalid data_offsets")
        bits = math.prod(shape) * DTYPE_BITS[dtype]
        if bits % 8 or bits // 8 != offsets[1] - offsets[0]:
            raise bad(f"tensor {name!r}: shape {shape} × {dtype} does not match its {offsets[1] - offsets[0]} bytes")
        ranges.append((offsets[0], offsets[1], name))
    position = 0
    for begin, end, name in sorted(ranges):
        if begin != position:
            raise bad(f"tensor {name!r} does not start where the previous one ends (gap or overlap)")
        position = end
    if 8 + len(raw) + position != file_size:
        raise bad(f"the tensors cover {position} bytes but the data area has {file_size - 8 - len(raw)}")
    return header


def _read_ahead(f, chunk: int, depth: int = 3) -> Iterator[memoryview]:
    """The rest of `f` in chunks, the next ones read on a helper thread while the caller uses this one.

    Reading (a copy out of the page cache) and hashing both release the GIL: overlapped, a file takes
    the time of the hash alone (~10% less per file here). A buffer is reused once the caller asks for
    the chunk after it. (A memory map would save the copy, but a file truncated meanwhile kills the
    process with SIGBUS.)
    """
    free: queue.Queue = queue.Queue()
    full: queue.Queue = queue.Queue()
    for _ in range(depth):
        free.put(bytearray(chunk))
    stop = threading.Event()

    def read() -> None:
        try:
            while not stop.is_set():
                buffer = free.get()
                got = f.readinto(buffer) if buffer is not None else 0
                full.put((buffer, got))
                if not got:
                    return
        except BaseException as e:  # noqa: BLE001 - re-raised on the caller's thread
            full.put((e, 0))

    reader = threading.Thread(target=read, name="hubckpt-read-ahead", daemon=True)
    reader.start()
    try:
        while True:
            buffer, got = full.get()
            if isinstance(buffer, BaseException):
                raise buffer
            if not got:
                return
            yield memoryview(buffer)[:got]
            free.put(buffer)
    finally:
        stop.set()
        free.put(None)  # wakes a reader waiting for a buffer
        reader.join()


def _hash_and_place(src: Path, dest: Path, link: bool) -> tuple[str, int, dict[str, dict]]:
    """Validate `src`, hash it and put it at `dest` (hard link if `link` and possible, else a copy) in one read.

    Returns (sha256, size, header).
    """
    linked = False
    if link:
        try:
            os.link(src, dest)
            linked = True
        except OSError as e:
            if e.errno not in (errno.EXDEV, errno.EPERM, errno.EMLINK, errno.ENOTSUP, errno.EACCES):
                raise
    out = None if linked else open(dest, "wb")
    try:
        with open(src, "rb", buffering=0) as f:
            size = os.fstat(f.fileno()).st_size
            head = f.read(8)
            if len(head) < 8:
                raise CorruptCheckpointError(f"{src} is too short to be safetensors", str(src))
            n = int.from_bytes(head, "little")
            if not 0 < n <= min(MAX_SAFETENSORS_HEADER, size - 8):
                raise CorruptCheckpointError(
                    f"{src} has a safetensors header length ({n}) larger than the file or "
                    f"the {MAX_SAFETENSORS_HEADER}-byte limit",
                    str(src),
                )
            raw = f.read(n)
            header = validate_header(src, raw, size)
            digest = hashlib.sha256(head)
            digest.update(raw)
            if out is not None:
                out.write(head + raw)
            for view in _read_ahead(f, min(_CHUNK, max(1, size))):
                digest.update(view)  # hashlib releases the GIL on large buffers
                if out is not None:
                    out.write(view)
        if out is not None:
            out.flush()
            os.fsync(out.fileno())
    except BaseException:
        if out is not None:
            out.close()
        dest.unlink(missing_ok=True)
        raise
    finally:
        if out is not None and not out.closed:
            out.close()
    return digest.hexdigest(), size, header


def reusable(files: list[Path], *, dtype: str, max_shard_size: int) -> bool:
    """Can these source files be published as they are (see the module docstring)?"""
    if dtype != "keep" or not files:
        return False
    if len(files) == 1:
        return files[0].stat().st_size <= max_shard_size or max_shard_size <= 0
    names = [m for f in files if (m := SHARD_NAME.match(f.name))]
    return (
        len(names) == len(files)
        and len({m.group(2) for m in names}) == 1
        and int(names[0].group(2)) == len(files)
        and all(f.stat().st_size <= max_shard_size for f in files)
    )


def reuse_weights(
    files: list[Path], out: Path, *, link: bool = False, progress: Callable[[int], object] | None = None
) -> WeightsReport:
    """Place the safetensors `files` into `out` (one read each: validate + sha256 + link or copy) and report them.

    `link=True` hard-links (the publisher's spool: short-lived, and the hub checks every byte against the
    sha256 on upload); the default copies, so a converted folder never shares a file with its source.
    """
    report = WeightsReport(shards=len(files))
    weight_map: dict[str, str] = {}
    total = 0
    from concurrent.futures import ThreadPoolExecutor

    names = {src: "model.safetensors" if len(files) == 1 else src.name for src in sorted(files)}
    # Shards are read and hashed in parallel (file reads and sha256 release the GIL).
    with ThreadPoolExecutor(
        max_workers=max(1, min(len(files), os.cpu_count() or 1, 4)), thread_name_prefix="hubckpt-reuse"
    ) as pool:
        placed = list(pool.map(lambda src: _hash_and_place(src, out / names[src], link), sorted(files)))
    for src, (sha256, size, header) in zip(sorted(files), placed):
        name = names[src]
        report.files.append(WrittenFile(name, sha256, size))
        for tensor, entry in header.items():
            report.tensors += 1
            count = math.prod(entry["shape"])
            nbytes = entry["data_offsets"][1] - entry["data_offsets"][0]
            report.parameters += count
            report.bytes += nbytes
            total += nbytes
            dtype = TORCH_DTYPE.get(entry["dtype"], entry["dtype"].lower())
            report.dtypes[dtype] = report.dtypes.get(dtype, 0) + 1
            if tensor in weight_map:
                raise CorruptCheckpointError(
                    f"tensor {tensor!r} is in two shards ({weight_map[tensor]}, {name})", str(src)
                )
            weight_map[tensor] = name
        if progress is not None:
            progress(size)
    if report.tensors == 0:
        raise UnsupportedCheckpointError("the checkpoint holds no model weights")
    if len(files) > 1:
        index = {"metadata": {"total_size": total}, "weight_map": dict(sorted(weight_map.items()))}
        data = (json.dumps(index, indent=2, sort_keys=True) + "\n").encode()
        (out / INDEX_FILE).write_bytes(data)
        report.files.append(WrittenFile(INDEX_FILE, hashlib.sha256(data).hexdigest(), len(data)))
    report.dtypes = dict(sorted(report.dtypes.items()))
    return report


__all__ = ["reuse_weights", "reusable", "validate_header"]
