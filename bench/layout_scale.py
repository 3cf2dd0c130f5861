"""What a multi-rank layout costs at 1,024 ranks, without 1,024 processes: every rank's signature (each
tensor's part, from its mesh coordinate and placements) fabricated here, then what the ranks compute from
them, once per layout (`publishing/ranks.py`): the layout (owners, parts tiling each tensor), one owner's
receive plan, and checkpoint.json's `ranks` record (size, time to build).

A 300-tensor state (50 layers of 4096 x 4096 x 4 and 11008 x 4096 / 4096 x 11008, fp32 metadata only) on
FSDP2 over 1,024 ranks (Shard(0)) and on FSDP2 over tensor parallel on a (128, 8) mesh
(_StridedShard(0, sf=8), Shard(0)).

Usage:  .venv/bin/python bench/layout_scale.py
"""

from __future__ import annotations

import itertools
import json
import pickle
import time


def main() -> None:
    from torch.distributed.tensor import Shard
    from torch.distributed.tensor.placement_types import _StridedShard

    from hubckpt.publishing.ranks import build_layout
    from hubckpt.sharding import box_of

    shapes = [(4096, 4096)] * 4 + [(11008, 4096), (4096, 11008)]
    names = [(f"layers.{n}.t{k}", s) for n in range(50) for k, s in enumerate(shapes)]
    cases = {
        "FSDP2, 1,024 ranks": ((1024,), [Shard(0)]),
        "FSDP2 over TP, (128, 8)": ((128, 8), [_StridedShard(0, split_factor=8), Shard(0)]),
    }
    for label, (mesh, placements) in cases.items():
        coordinates = list(itertools.product(*[range(m) for m in mesh]))
        boxes = {s: [box_of(s, mesh, list(c), placements) for c in coordinates] for s in set(shapes)}
        signatures = [tuple((n, "model", s, "float32", boxes[s][r]) for n, s in names) for r in range(len(coordinates))]
        started = time.perf_counter()
        layout = build_layout(len(coordinates), signatures, {})
        built = time.perf_counter()
        layout.plan(0)
        planned = time.perf_counter()
        doc = json.dumps(layout.to_json())
        recorded = time.perf_counter()
        print(
            f"{label}: signature {len(pickle.dumps(signatures[1])) / 1e3:.0f} kB per rank (all_gather_object once); "
            f"layout {built - started:.2f} s; rank 0's plan {1e3 * (planned - built):.1f} ms; checkpoint.json "
            f"ranks {len(doc) / 1e6:.2f} MB in {recorded - planned:.2f} s (then cached)"
        )


if __name__ == "__main__":
    main()
