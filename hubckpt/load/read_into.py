"""Read safetensors files straight into tensors that already exist (or into fresh memory), never via mmap.

`safetensors.torch.load_file` hands out copy-on-write views of a private memory map: cheap to read,
but training then *writes* into them (weights, optimizer moments) and pays a page fault and a copy
per page, 2–10× slower than reading into fresh memory (see the performance floors). Here every
tensor's bytes are read with `readinto` directly into the destination's memory: into the model's
own parameters on resume, or into new tensors whose pages the read itself touches once.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import CorruptCheckpointError

if TYPE_CHECKING:
    import torch

_CHUNK = 64 << 20


def _dtypes() -> dict[str, torch.dtype]:
    import torch

    from ..formats.safetensors_header import TORCH_DTYPES

    return {name: getattr(torch, attr) for name, attr in TORCH_DTYPES.items() if hasattr(torch, attr)}


@dataclass(frozen=True)
class TensorEntry:
    """Where one tensor's bytes are in a safetensors file."""

    file: Path
    dtype: torch.dtype
    shape: tuple[int, ...]
    start: int  # absolute offset in the file
    nbytes: int


def read_header(path: Path) -> dict[str, TensorEntry]:
    """Every tensor of a safetensors file (name → entry), from its header alone."""
    from ..errors import IntegrityError
    from ..formats.safetensors_header import read_file_header

    dtypes = _dtypes()
    try:
        header, base, _ = read_file_header(path, str(path))
    except (OSError, IntegrityError) as e:  # the one strict parser: no overlap, no gap, spans = dtype x shape
        raise CorruptCheckpointError(f"{path} is not a readable safetensors file: {e}", str(path)) from e
    entries = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        begin, end = info["data_offsets"]
        if info["dtype"] not in dtypes:
            raise CorruptCheckpointError(f"{path}: tensor {name!r} has unsupported dtype {info['dtype']}", str(path))
        entries[name] = TensorEntry(path, dtypes[info["dtype"]], tuple(info["shape"]), base + begin, end - begin)
    return entries


def read_tensor(entry: TensorEntry, dest: torch.Tensor | None = None, *, handle=None) -> torch.Tensor:
    """Read `entry` into `dest` (same shape and dtype; any device) or into a new CPU tensor; return it."""
    import torch

    if dest is None or dest.device.type != "cpu" or not dest.is_contiguous():
        target = torch.empty(entry.shape, dtype=entry.dtype)
    else:
        target = dest
    raw = target.detach().reshape(-1).view(torch.uint8) if target.numel() else None
    expected = target.numel() * target.element_size()
    if expected != entry.nbytes:
        raise CorruptCheckpointError(
            f"{entry.file}: tensor of {entry.nbytes} bytes where {expected} were expected", str(entry.file)
        )
    if raw is not None:
        view = raw.numpy().data.cast("B")  # .data: the array's memoryview (typed as one, unlike memoryview(arr))
        f = handle or open(entry.file, "rb")
        try:
            f.seek(entry.start)
            done = 0
            while done < entry.nbytes:
                n = f.readinto(view[done : done + _CHUNK])
                if not n:
                    raise CorruptCheckpointError(f"{entry.file} is truncated", str(entry.file))
                done += n
        finally:
            if handle is None:
                f.close()
    if dest is not None and target is not dest:
        with torch.no_grad():
            dest.copy_(target)
        return dest
    return target


def reader_into_fresh_memory() -> Callable[[Path], dict]:
    """A `read_tensors` for `training_state.load_state`: every tensor read into new memory (no mmap)."""

    def read(path: Path) -> dict:
        entries = read_header(path)
        with open(path, "rb") as f:
            return {name: read_tensor(entry, handle=f) for name, entry in entries.items()}

    return read
