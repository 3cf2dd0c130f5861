"""Which part of a tensor each rank holds (`hubckpt/sharding.py`), and how the multi-rank publisher puts the
parts back together (`publishing/ranks.py`: `build_layout`, `Layout.plan`, `route`), on fabricated
meshes and placements: no process group, so 2-D meshes of 4 and 8 ranks cost milliseconds. The torchrun tests
(`test_multirank*.py`) run the same code over gloo."""

from __future__ import annotations

import itertools
import math
import random

import pytest


def _reference(shape, mesh_shape, coordinate, placements):
    """The local tensor torch's own splitting gives (left to right over the mesh dims, as distribute_tensor)."""
    import torch
    from torch.distributed.tensor import Shard
    from torch.distributed.tensor.placement_types import _StridedShard

    t = torch.arange(torch.Size(shape).numel()).reshape(shape)
    for mesh_dim, p in enumerate(placements):
        if isinstance(p, (Shard, _StridedShard)):
            parts, _ = p._split_tensor(t, mesh_shape[mesh_dim], with_padding=False)
            t = parts[coordinate[mesh_dim]]
    return t


def _index(full, box):
    import torch

    out = full
    for d, runs in enumerate(box):
        out = out.index_select(d, torch.tensor([i for a, b in runs for i in range(a, b)], dtype=torch.long))
    return out


def test_boxes_are_the_parts_torch_gives_each_rank_for_any_placements_even_or_not():
    import torch
    from torch.distributed.tensor import Replicate, Shard
    from torch.distributed.tensor._utils import _compute_local_shape_and_global_offset
    from torch.distributed.tensor.placement_types import _StridedShard

    from hubckpt.sharding import box_of, box_shape

    rnd = random.Random(0)
    for _ in range(300):
        ndim = rnd.randint(1, 3)
        shape = tuple(rnd.randint(0, 9) for _ in range(ndim))
        mesh_shape = tuple(rnd.randint(1, 4) for _ in range(rnd.randint(1, 3)))
        placements = []
        for _ in mesh_shape:
            kind, dim = rnd.random(), rnd.randrange(ndim)
            placements.append(
                Replicate()
                if kind < 0.25
                else Shard(dim)
                if kind < 0.7
                else _StridedShard(dim, split_factor=rnd.randint(1, 3))
            )
        full = torch.arange(torch.Size(shape).numel()).reshape(shape)
        for coordinate in itertools.product(*[range(m) for m in mesh_shape]):
            box = box_of(shape, mesh_shape, list(coordinate), placements)
            want = _reference(shape, mesh_shape, coordinate, placements)
            assert torch.equal(_index(full, box), want), (shape, mesh_shape, coordinate, placements, box)
            local_shape, _ = _compute_local_shape_and_global_offset(shape, mesh_shape, list(coordinate), placements)
            assert box_shape(box) == tuple(local_shape)


def test_partial_placements_are_refused_with_what_to_do():
    from torch.distributed.tensor import Partial, Shard

    from hubckpt.errors import HubConfigError
    from hubckpt.sharding import box_of

    with pytest.raises(HubConfigError, match="Partial.*What to do"):
        box_of((4, 4), (2, 2), [0, 1], [Shard(0), Partial()])


MESHES = {
    # name: (mesh shape, placements per tensor): FSDP2 on one mesh; tensor parallel (colwise, rowwise, a
    # replicated bias); HSDP (replicas of dim-0 shards); FSDP2 over TP on a (dp, tp) mesh (_StridedShard and
    # Shard(0) x Shard(1)); 3 ranks, uneven; a plain (replicated) tensor next to them.
    "fsdp": ((2,), [("Shard", 0)]),
    "tp": ((2,), [("Shard", 0)], [("Shard", 1)], [("Replicate",)]),
    "hsdp": ((2, 2), [("Replicate",), ("Shard", 0)]),
    "fsdp+tp": (
        (2, 2),
        [("Strided", 0, 2), ("Shard", 0)],
        [("Shard", 0), ("Shard", 1)],
        [("Shard", 0), ("Replicate",)],
    ),
    "uneven": ((3,), [("Shard", 0)], [("Shard", 1)]),
    "3-d": ((2, 2, 2), [("Shard", 1), ("Replicate",), ("Strided", 0, 2)]),
}


def _placements(spec):
    from torch.distributed.tensor import Replicate, Shard
    from torch.distributed.tensor.placement_types import _StridedShard

    out = []
    for p in spec:
        if p[0] == "Shard":
            out.append(Shard(p[1]))
        elif p[0] == "Strided":
            out.append(_StridedShard(p[1], split_factor=p[2]))
        else:
            out.append(Replicate())
    return out


@pytest.mark.parametrize("mesh", sorted(MESHES))
def test_the_owners_assemble_every_tensor_exactly_each_part_sent_once(mesh):
    """Every rank's signature → one layout; each owner receives each distinct part once (replicas: one of the
    holders sends) and puts together exactly the full tensors."""
    import torch

    from hubckpt.publishing.ranks import build_layout, route
    from hubckpt.sharding import box_numel, box_of

    mesh_shape, *specs = MESHES[mesh]
    world = 1
    for m in mesh_shape:
        world *= m
    coordinates = list(itertools.product(*[range(m) for m in mesh_shape]))  # rank r: coordinates[r] (row-major)
    torch.manual_seed(0)
    shapes = [(7, 6), (5, 9), (13,), (6, 3, 4)]
    fulls = {}
    signatures: list[list[tuple]] = [[] for _ in range(world)]
    staged: list[dict[str, torch.Tensor]] = [{} for _ in range(world)]
    for k, spec in enumerate(specs):
        for shape in shapes:
            placements = _placements(spec)
            if any(getattr(p, "dim", 0) >= len(shape) for p in placements):
                continue
            name = f"t{k}.{len(fulls)}"
            dtype = [torch.float32, torch.bfloat16, torch.int64][len(fulls) % 3]
            full = (torch.randn(shape) * 100).to(dtype)
            fulls[name] = full
            for r, coordinate in enumerate(coordinates):
                box = box_of(shape, mesh_shape, list(coordinate), placements)
                whole = all(runs == ((0, n),) for runs, n in zip(box, shape))
                signatures[r].append((name, "model", shape, str(dtype).removeprefix("torch."), None if whole else box))
                staged[r][name] = _index(full, box).contiguous()
    fulls["plain"] = torch.randn(3, 2)
    for r in range(world):
        signatures[r].append(("plain", "model", (3, 2), "float32", None))
        staged[r]["plain"] = fulls["plain"].clone()
    layout = build_layout(world, [tuple(s) for s in signatures], {})
    exchanges = [route(layout, r, staged[r]) for r in range(world)]
    messages = {(r, owner, tag): buf for r in range(world) for owner, tag, buf in exchanges[r].sends}
    assert len(messages) == sum(len(ex.sends) for ex in exchanges)  # (sender, owner, tag) names one message
    sent = [sum(buf.numel() for _, _, buf in ex.sends) for ex in exchanges]
    got = {}
    for owner in range(world):  # what gloo's isend / irecv do: each receive gets its sender's message
        for sender, tag, into in exchanges[owner].recvs:
            buf = messages.pop((sender, owner, tag))
            assert buf.numel() == into.numel()
            into.copy_(buf)
        got.update(exchanges[owner].finish())
        plan, sizes = layout.plan(owner)
        for r in range(world):
            if r != owner:
                assert sum(t.numel() for o, _, t in exchanges[r].sends if o == owner) == sizes[r]
        for item, parts in plan:  # each distinct part once
            assert len({box for _, box in parts}) == len(parts)
            assert sum(box_numel(box) for _, box in parts) == math.prod(item.shape)
    assert not messages  # every message sent was received
    assert sorted(got) == sorted(fulls)
    for name, full in fulls.items():
        assert torch.equal(got[name], full), name
    distributed = sum(i.nbytes for i in layout.items if i.boxes is not None)
    own = sum(layout.plan(o)[1][o] for o in range(world))  # an owner's own parts are not sent
    assert sum(sent) + own == distributed  # no replica sent twice, nothing whole sent at all
    doc = layout.to_json()
    if mesh == "fsdp":  # the first published layout keeps its format: rows per rank
        assert all(t["rows"] is not None and "layout" not in t for n, t in doc["tensors"].items() if n != "plain")
        assert "layouts" not in doc
    if mesh == "hsdp":
        entry = next(t for n, t in doc["tensors"].items() if n != "plain")
        assert entry["rows"] is None and [p["ranks"] for p in doc["layouts"][entry["layout"]]] == [[0, 2], [1, 3]]
    if mesh != "fsdp":  # tensors of the same shape and placements share one recorded layout
        assert len(doc["layouts"]) == len(
            {str(i.parts()) for i in layout.items if i.boxes is not None and i.rows is None}
        )


def test_parts_that_overlap_or_leave_a_gap_are_refused():
    from hubckpt.errors import HubConfigError
    from hubckpt.publishing.ranks import build_layout

    gap = [
        [("w", "model", (4, 2), "float32", (((0, 1),), ((0, 2),)))],
        [("w", "model", (4, 2), "float32", (((2, 4),), ((0, 2),)))],
    ]
    with pytest.raises(HubConfigError, match="overlap or leave a gap"):
        build_layout(2, gap, {})


def test_a_layouts_digest_is_computed_once(monkeypatch):
    """Every save journals the layout's digest: the same layout serves every save, so it is serialised once."""
    from hubckpt.publishing import ranks
    from hubckpt.publishing.rank_journal import layout_digest

    calls = []
    monkeypatch.setattr(ranks, "layout_digest", lambda doc: calls.append(1) or layout_digest(doc))
    signature = (("w", "model", (4, 2), "float32", None),)
    layout = ranks.build_layout(2, [signature, signature], {})
    first = layout.digest()
    assert [layout.digest() for _ in range(3)] == [first] * 3
    assert first == layout_digest(layout.to_json()) and len(calls) == 1
