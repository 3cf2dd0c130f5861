"""Which part of each tensor a rank holds: a DTensor's placements as a box of global indices; DDP's module.

Shared by multi-rank publishing (`publishing/ranks.py`: what each rank sends to the rank that writes a tensor)
and multi-rank restore (`load/shards.py`: which bytes each rank reads), so both see one layout.

A **box** is, for each dim of the full tensor, the runs `(start, stop)` of global indices a rank holds, in the
order its local tensor holds them; the local tensor is their product. `Shard(d)` gives one run on dim d (uneven
shards included: torch's `torch.chunk` sizes, the last chunks shorter or empty); `_StridedShard` (FSDP2 over a
tensor-parallel mesh) may give several; `Replicate` none (the whole dim). `None` stands for the whole tensor
(a plain tensor, or a DTensor replicated on every mesh dim). The placements are applied left to right over
the mesh dims, as torch does (`torch.distributed.tensor._utils.compute_local_shape_and_global_offset`, which
gives the first offset of each dim only); the box is checked against the local tensor's shape. `Partial`
placements (a pending reduction) and a non-default `shard_order` are refused with `HubConfigError`.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

from .errors import HubConfigError

if TYPE_CHECKING:
    import torch

Run = tuple[int, int]
Box = tuple[tuple[Run, ...], ...]


def unwrap(model: torch.nn.Module) -> torch.nn.Module:
    """The module whose state dict names the parameters (DDP's `module`; FSDP2 and tensor parallel keep them)."""
    from torch.nn.parallel import DistributedDataParallel

    return model.module if isinstance(model, DistributedDataParallel) else model


def _chunk(size: int, n: int, i: int) -> Run:
    """Chunk i of n of `size` positions, as `torch.chunk` (and DTensor's `Shard`) cut them."""
    each = -(-size // n)
    return min(each * i, size), min(each * (i + 1), size)


def _take(runs: tuple[Run, ...], positions: list[Run]) -> tuple[Run, ...]:
    """The global runs at local `positions` (runs of positions into the sequence `runs` spells), merged."""
    out: list[list[int]] = []
    for lo, hi in positions:
        at = 0
        for start, stop in runs:
            n = stop - start
            a, b = max(lo, at), min(hi, at + n)
            if a < b:
                g0, g1 = start + a - at, start + b - at
                if out and out[-1][1] == g0:
                    out[-1][1] = g1
                else:
                    out.append([g0, g1])
            at += n
    return tuple((a, b) for a, b in out)


def box_of(shape: tuple[int, ...], mesh_shape: tuple[int, ...], coordinate: list[int] | None, placements: Any) -> Box:
    """The box a rank at `coordinate` of a mesh of `mesh_shape` holds of a tensor of `shape` with `placements`
    (module docstring); plain values so that it can be checked without a process group. A rank outside the
    mesh (`coordinate` None) holds nothing: an empty run list on dim 0."""
    from torch.distributed.tensor import Replicate, Shard
    from torch.distributed.tensor.placement_types import _StridedShard

    dims: list[tuple[Run, ...]] = [((0, n),) for n in shape]
    if coordinate is None:
        return ((), *dims[1:]) if dims else ()
    for mesh_dim, p in enumerate(placements):
        n, i = mesh_shape[mesh_dim], coordinate[mesh_dim]
        if isinstance(p, _StridedShard):  # (not a Shard subclass in torch 2.13; checked first all the same)
            d, size = p.dim, sum(b - a for a, b in dims[p.dim])
            split = int(p.split_factor)
            positions = []
            for j in range(split):  # cut in `split` pieces, each in n; chunk i of every piece, in piece order
                p0, p1 = _chunk(size, split, j)
                a, b = _chunk(p1 - p0, n, i)
                if a < b:
                    positions.append((p0 + a, p0 + b))
            dims[d] = _take(dims[d], positions)
        elif isinstance(p, Shard):
            d = p.dim
            a, b = _chunk(sum(b - a for a, b in dims[d]), n, i)
            dims[d] = _take(dims[d], [(a, b)] if a < b else [])
        elif not isinstance(p, Replicate):
            raise HubConfigError(
                f"placement {type(p).__name__} ({p}) is not supported: hubckpt publishes and restores DTensors "
                "sharded (Shard, _StridedShard) or replicated on each mesh dim, not a pending reduction. What to "
                "do: redistribute a Partial tensor (`.redistribute(placements=[Replicate()])`) before saving."
            )
    return tuple(dims)


def box_shape(box: Box) -> tuple[int, ...]:
    """The local tensor's shape of a box."""
    return tuple(sum(b - a for a, b in runs) for runs in box)


def box_numel(box: Box) -> int:
    return math.prod(box_shape(box))


def row_range(box: Box | None, shape: tuple[int, ...]) -> Run | None:
    """(first, stop) row when the box is whole rows of a row-major tensor, one run on dim 0 (FSDP2's dim-0
    shards): then it is one contiguous range of the tensor's bytes. None otherwise (or for `box` None)."""
    if box is None or not box or len(box[0]) != 1:
        return None
    if any(runs != ((0, n),) for runs, n in zip(box[1:], shape[1:])):
        return None
    return box[0][0]


_BOXES: dict[tuple, tuple[Any, Box | None]] = {}  # (id(mesh), placements, shape) → (mesh, its box here)


def local_part(value: torch.Tensor, name: str) -> tuple[torch.Tensor, Box | None]:
    """(this rank's part of `value`, detached; which part of the full tensor that is: None for all of it). Any
    DTensor placement on any mesh; `Partial` is refused with `HubConfigError`. The one helper of publishing (what
    a rank sends) and restore (what a rank reads, and copies into)."""
    from torch.distributed.tensor import DTensor

    if not isinstance(value, DTensor):
        return value.detach(), None
    # Its `_local_tensor` where it has one (what `to_local()` returns, read without `to_local()`'s autograd
    # function: ~8 µs a tensor, 2.5 ms a save for a 300-tensor state).
    local = getattr(value, "_local_tensor", None)
    if local is None:  # pragma: no cover - a torch whose DTensor keeps it elsewhere
        local = value.to_local()
    return local.detach(), dtensor_box(value, name)


def dtensor_box(value: Any, name: str) -> Box | None:
    """This rank's box of the DTensor `value` (None: it holds the whole tensor). Cached by mesh, placements and
    shape: a save asks for every tensor of the state."""
    spec = value._spec
    mesh, placements, shape = spec.mesh, spec.placements, tuple(value.shape)
    key = (id(mesh), placements, shape)
    cached = _BOXES.get(key)
    if cached is not None and cached[0] is mesh:
        return cached[1]
    order = getattr(spec, "shard_order", None)
    if order is not None and order != type(spec).compute_default_shard_order(placements):
        raise HubConfigError(
            f"{name}: its shards are laid out in a shard order other than left to right over the mesh dims "
            f"({order}), which hubckpt does not map. What to do: redistribute it to the default order first."
        )
    try:
        box = box_of(shape, tuple(mesh.shape), mesh.get_coordinate(), placements)
    except HubConfigError as e:
        raise HubConfigError(f"{name}: {e}") from None
    local = tuple(value._local_tensor.shape)
    if box_shape(box) != local:
        raise HubConfigError(
            f"{name}: placements {placements} on a mesh of shape {tuple(mesh.shape)} give local shape "
            f"{box_shape(box)} here, but the local tensor is {local}; hubckpt cannot tell which part of the tensor "
            "this rank holds."
        )
    whole = None if all(runs == ((0, n),) for runs, n in zip(box, shape)) else box
    _BOXES[key] = (mesh, whole)
    return whole


def box_slices(box: Box, item_bytes: int) -> list[tuple[tuple[slice, ...], tuple[slice, ...]]]:
    """(slices of the full tensor, slices of the local one) for each product of runs, on byte views of both
    (`tensor.view(torch.uint8)`: the last dim counted in bytes, so nothing needs aligning)."""
    import itertools

    per_dim = []
    last = len(box) - 1
    for d, runs in enumerate(box):
        scale = item_bytes if d == last else 1
        at, pairs = 0, []
        for a, b in runs:
            pairs.append((slice(a * scale, b * scale), slice(at * scale, (at + b - a) * scale)))
            at += b - a
        per_dim.append(pairs)
    return [(tuple(g for g, _ in combo), tuple(loc for _, loc in combo)) for combo in itertools.product(*per_dim)]


def byte_shape(shape: tuple[int, ...], item_bytes: int) -> tuple[int, ...]:
    """The shape of `as_bytes` of a tensor of `shape`."""
    return (*shape[:-1], shape[-1] * item_bytes) if shape else (item_bytes,)


def as_bytes(value: torch.Tensor) -> torch.Tensor:
    """A contiguous tensor's byte view of its own shape, the last dim in bytes (a 0-dim one: 1-D)."""
    import torch

    return (value.reshape(1) if value.dim() == 0 else value).view(torch.uint8)


__all__ = [
    "local_part",
    "Box",
    "as_bytes",
    "box_of",
    "byte_shape",
    "box_numel",
    "box_shape",
    "box_slices",
    "dtensor_box",
    "row_range",
    "unwrap",
]
