"""Model weights → safetensors in the transformers layout, written deterministically and verified.

- Tensors that are the same view of the same memory (tied weights) are written once, under the name
  that comes first in the state dict (the input embedding before `lm_head`, as `save_pretrained`
  does); the dropped aliases are reported. Partially overlapping views are copied.
- Non-contiguous tensors are made contiguous; zero-size and 0-dim tensors and every dtype
  safetensors knows are kept as they are (optionally casting floating tensors to bf16/fp16).
- Above `max_shard_size`, shards `model-0000i-of-0000n.safetensors` + `model.safetensors.index.json`
  (sorted keys), planned by `huggingface_hub.split_torch_state_dict_into_shards`.
- Each shard is serialized in memory, hashed (sha256 for the manifest), written and fsync'd, then
  read back from disk and compared bit for bit with the input.
"""

from __future__ import annotations

import errno
import hashlib
import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Callable

from ..errors import DiskFullError, UnsupportedCheckpointError, VerificationError

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


def _view_key(t: "torch.Tensor") -> tuple:
    return (t.untyped_storage().data_ptr(), t.storage_offset(), tuple(t.shape), tuple(t.stride()), t.dtype)


def prepare(weights: dict[str, "torch.Tensor"], dtype: str = "keep") -> tuple[dict[str, "torch.Tensor"], dict[str, str]]:
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
        if target is not None and tensor.is_floating_point() and tensor.dtype in (torch.float32, torch.float64,
                                                                                  torch.float16, torch.bfloat16):
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


def _bitwise_equal(a: "torch.Tensor", b: "torch.Tensor") -> bool:
    import torch

    if a.dtype != b.dtype or a.shape != b.shape:
        return False
    if a.numel() == 0:
        return True
    return torch.equal(a.contiguous().reshape(-1).view(torch.uint8), b.contiguous().reshape(-1).view(torch.uint8))


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


def write_weights(weights: dict[str, "torch.Tensor"], out: Path, *, max_shard_size: int | str = "5GB",
                  dtype: str = "keep", metadata: dict[str, str] | None = None,
                  progress: Callable[[int], None] | None = None) -> WeightsReport:
    """Write `weights` into folder `out` (which must exist) and verify them; see the module docstring."""
    from huggingface_hub import split_torch_state_dict_into_shards
    from safetensors import safe_open
    from safetensors.torch import save

    prepared, tied = prepare(weights, dtype)
    if not prepared:
        raise UnsupportedCheckpointError("the checkpoint holds no model weights")
    plan = split_torch_state_dict_into_shards(prepared, filename_pattern="model{suffix}.safetensors",
                                              max_shard_size=max_shard_size)
    report = WeightsReport(tied=dict(sorted(tied.items())), shards=len(plan.filename_to_tensors))
    file_metadata = {"format": "pt", **(metadata or {})}
    for filename in sorted(plan.filename_to_tensors):
        names = sorted(plan.filename_to_tensors[filename])
        shard = {n: prepared[n] for n in names}
        data = save(shard, metadata=file_metadata)
        path = out / filename
        _write_durable(path, data)
        report.files.append(WrittenFile(filename, hashlib.sha256(data).hexdigest(), len(data)))
        del data
        # Read back from disk and compare bit for bit with what we were given.
        with safe_open(path, framework="pt") as f:
            if sorted(f.keys()) != names:
                raise VerificationError(f"{filename} does not hold the tensors it was written with", str(path))
            for n in names:
                if not _bitwise_equal(f.get_tensor(n), shard[n]):
                    raise VerificationError(f"{filename}: tensor {n!r} does not read back bit-identical", str(path))
        for n in names:
            t = shard[n]
            report.tensors += 1
            report.parameters += t.numel()
            report.bytes += t.numel() * t.element_size()
            report.dtypes[str(t.dtype).removeprefix("torch.")] = report.dtypes.get(str(t.dtype).removeprefix("torch."), 0) + 1
        if progress is not None:
            progress(sum(t.numel() * t.element_size() for t in shard.values()))
    if plan.is_sharded:
        index = {"metadata": {**plan.metadata, **(metadata or {})}, "weight_map": plan.tensor_to_filename}
        data = (json.dumps(index, indent=2, sort_keys=True) + "\n").encode()
        _write_durable(out / INDEX_FILE, data)
        report.files.append(WrittenFile(INDEX_FILE, hashlib.sha256(data).hexdigest(), len(data)))
    report.dtypes = dict(sorted(report.dtypes.items()))
    return report
