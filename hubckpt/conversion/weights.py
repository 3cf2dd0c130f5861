"""Model weights → safetensors in the transformers layout, written deterministically and verified.

- Tensors that are the same view of the same memory (tied weights) are written once, under the name
  that comes first in the state dict (the input embedding before `lm_head`, as `save_pretrained`
  does); the dropped aliases are reported. Partially overlapping views are copied.
- Non-contiguous tensors are made contiguous; zero-size and 0-dim tensors and every dtype
  safetensors knows are kept as they are (optionally casting floating tensors to bf16/fp16).
- Above `max_shard_size`, shards `model-0000i-of-0000n.safetensors` + `model.safetensors.index.json`
  (sorted keys), planned by `huggingface_hub.split_torch_state_dict_into_shards`.
- Each shard is streamed to disk from the tensors' own memory (`st_writer.py`: no shard-sized copy),
  hashed on the way (sha256 for the manifest), fsync'd, then read back from the disk itself (not the
  page cache) through the safetensors parser and compared bit for bit with the input.
"""

from __future__ import annotations

import errno
import hashlib
import json
import logging
import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from ..defaults import MAX_SHARD_SIZE
from ..direct_io import DirectReader
from ..errors import DiskFullError, UnsupportedCheckpointError, VerificationError
from .st_writer import write_safetensors

if TYPE_CHECKING:
    import torch

logger = logging.getLogger(__name__)

INDEX_FILE = "model.safetensors.index.json"


@dataclass
class WrittenFile:
    path: str  # relative to the output folder
    sha256: str
    size: int


@dataclass
class WeightsReport:
    files: list[WrittenFile] = field(default_factory=list)
    tensors: int = 0
    parameters: int = 0
    bytes: int = 0
    shards: int = 0
    tied: dict[str, str] = field(default_factory=dict)  # dropped alias → kept name
    dtypes: dict[str, int] = field(default_factory=dict)  # dtype → tensor count


def _view_key(t: torch.Tensor) -> tuple:
    return (t.untyped_storage().data_ptr(), t.storage_offset(), tuple(t.shape), tuple(t.stride()), t.dtype)


def prepare(weights: dict[str, torch.Tensor], dtype: str = "keep") -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """A new dict ready for safetensors (the caller's dict and tensors are not modified)."""
    import torch

    casts = {"keep": None, "bf16": torch.bfloat16, "fp16": torch.float16}
    if dtype not in casts:
        raise UnsupportedCheckpointError(f"Unknown dtype {dtype!r}: use keep, bf16 or fp16")
    target = casts[dtype]
    out: dict[str, torch.Tensor] = {}
    tied: dict[str, str] = {}
    first_by_view: dict[tuple, str] = {}
    storages: dict[int, list[str]] = {}
    for name, tensor in weights.items():
        if not isinstance(tensor, torch.Tensor):
            raise UnsupportedCheckpointError(f"weight {name!r} is a {type(tensor).__name__}, not a tensor")
        if tensor.is_sparse or tensor.layout != torch.strided:
            raise UnsupportedCheckpointError(f"weight {name!r} is sparse; convert it with .to_dense() first")
        tensor = tensor.detach()
        if tensor.device.type != "cpu":
            tensor = tensor.cpu()
        if tensor.numel():
            key = _view_key(tensor)
            if key in first_by_view:
                tied[name] = first_by_view[key]
                continue
            first_by_view[key] = name
            storages.setdefault(key[0], []).append(name)
        if (
            target is not None
            and tensor.is_floating_point()
            and tensor.dtype in (torch.float32, torch.float64, torch.float16, torch.bfloat16)
        ):
            tensor = tensor.to(target)
        out[name] = tensor
    # Distinct views of one storage (e.g. slices of a fused qkv): safetensors needs separate memory.
    for names in storages.values():
        if len(names) > 1:
            for name in names[1:]:
                out[name] = out[name].clone()
    for name, tensor in out.items():
        if not tensor.is_contiguous():
            out[name] = tensor.contiguous()
    return out, tied


def verify_file(path: Path, expected: dict[str, torch.Tensor]) -> None:
    """Re-read `path` from disk and compare it bit for bit with `expected`.

    The safetensors parser validates the header (names, dtypes, shapes, offsets); the bytes are then
    read back in large chunks into one reused buffer and compared with the tensors' own memory.
    """
    import numpy
    import torch
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(path, framework="pt") as f:
            if sorted(f.keys()) != sorted(expected):
                raise VerificationError(f"{path.name} does not hold the tensors it was written with", str(path))
            for name in expected:
                if list(f.get_slice(name).get_shape()) != list(expected[name].shape):
                    raise VerificationError(f"{path.name}: tensor {name!r} has the wrong shape on disk", str(path))
    except SafetensorError as e:
        raise VerificationError(f"{path.name} does not parse back as safetensors: {e}", str(path)) from e
    # Read from the disk itself where the filesystem allows (past the page cache, direct_io.py), sequentially:
    # cheaper than faulting in a memory map page by page.
    with DirectReader(path) as fh:
        header_len = int.from_bytes(fh.read(8), "little")
        header = json.loads(fh.read(header_len))
        base = 8 + header_len
        for name in sorted(expected, key=lambda n: header[n]["data_offsets"][0]):
            tensor = expected[name]
            begin, end = header[name]["data_offsets"]
            if tensor.numel() == 0:
                continue
            source = tensor.reshape(-1).view(torch.uint8).numpy()
            fh.seek(base + begin)
            offset = 0
            while offset < end - begin:
                disk = fh.readview(end - begin - offset)
                # numpy, not torch.equal: that one allocates a fresh result per call and costs 4x the time here.
                if not len(disk) or not numpy.array_equal(
                    numpy.frombuffer(disk, dtype=numpy.uint8), source[offset : offset + len(disk)]
                ):
                    raise VerificationError(f"{path.name}: tensor {name!r} does not read back bit-identical", str(path))
                offset += len(disk)


def _write_durable(path: Path, data: bytes) -> None:
    try:
        with open(path, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
    except OSError as e:
        if e.errno in (errno.ENOSPC, errno.EFBIG, errno.EDQUOT):
            raise DiskFullError(e.errno, f"No space left while writing {path.name} ({e.strerror})") from e
        raise


def write_weights(
    weights: dict[str, torch.Tensor],
    out: Path,
    *,
    max_shard_size: int | str = MAX_SHARD_SIZE,
    dtype: str = "keep",
    metadata: dict[str, str] | None = None,
    progress: Callable[[int], object] | None = None,
) -> WeightsReport:
    """Write `weights` into folder `out` (which must exist) and verify them; see the module docstring."""
    from huggingface_hub import split_torch_state_dict_into_shards

    prepared, tied = prepare(weights, dtype)
    if not prepared:
        raise UnsupportedCheckpointError("the checkpoint holds no model weights")
    plan = split_torch_state_dict_into_shards(
        prepared, filename_pattern="model{suffix}.safetensors", max_shard_size=max_shard_size
    )
    report = WeightsReport(tied=dict(sorted(tied.items())), shards=len(plan.filename_to_tensors))
    file_metadata = {"format": "pt", **(metadata or {})}
    # Verification of shard k runs in a worker thread while shard k+1 is written (both mostly release the GIL).
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="hubckpt-verify") as verifier:
        pending = []
        for filename in sorted(plan.filename_to_tensors):
            names = sorted(plan.filename_to_tensors[filename])
            shard = {n: prepared[n] for n in names}
            path = out / filename
            sha256, size = write_safetensors(path, shard, file_metadata)
            report.files.append(WrittenFile(filename, sha256, size))
            pending.append(verifier.submit(verify_file, path, shard))
            for t in shard.values():
                report.tensors += 1
                report.parameters += t.numel()
                report.bytes += t.numel() * t.element_size()
                name = str(t.dtype).removeprefix("torch.")
                report.dtypes[name] = report.dtypes.get(name, 0) + 1
            if progress is not None:
                progress(sum(t.numel() * t.element_size() for t in shard.values()))
        for future in pending:
            future.result()  # re-raises a VerificationError
    if plan.is_sharded:
        index = {"metadata": {**plan.metadata, **(metadata or {})}, "weight_map": plan.tensor_to_filename}
        data = (json.dumps(index, indent=2, sort_keys=True) + "\n").encode()
        _write_durable(out / INDEX_FILE, data)
        report.files.append(WrittenFile(INDEX_FILE, hashlib.sha256(data).hexdigest(), len(data)))
    report.dtypes = dict(sorted(report.dtypes.items()))
    return report
