"""Multi-rank publishing on 2 CPU ranks (gloo): stall per save per rank vs its copy floor, bytes each rank
uploads, peak extra memory, and time until the revision is visible vs a rank-0 gather + save_pretrained +
upload_folder, and vs DCP's HuggingFaceStorageWriter + upload_folder.

A GPT-2 built from config (fp32), FSDP2-sharded per block, AdamW. Per rank and per save:
  floor: `dst.copy_(src)` of this rank's local shards (weights + optimizer state) into buffers allocated
         beforehand (the least a capture can cost)
  stall: `Checkpointer.save` on the training thread (the first save included)
  visible: from `save()` until its Future settles (committed and indexed on the local hub)
  baseline: `get_model_state_dict(full_state_dict=True, cpu_offload=True)` (the gather to rank 0), then
         rank 0 `save_pretrained` + `HfApi.upload_folder` (the weights only), every rank blocked throughout.
  dcp:   torch's `HuggingFaceStorageWriter(save_distributed=True, enable_consolidation=True)` (per-rank
         shards, then consolidated full-tensor files in one shared folder), then rank 0 `upload_folder` of
         the consolidated files (the weights only), every rank blocked throughout.
Bytes each rank uploads are the sizes of the files it wrote. Peak extra memory: max RSS growth of rank 0
over the run after construction (a coarse upper bound: it includes training's own allocations).

Usage:  .venv/bin/python bench/multirank.py [--n-embd 512] [--layers 6] [--saves 3]
        (starts a local hub in a temporary folder, then torchrun --nproc-per-node 2 on this file)
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def _rank(args: argparse.Namespace) -> None:
    import torch
    import torch.distributed as dist
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import fully_shard
    from transformers import GPT2Config, GPT2LMHeadModel

    import hubckpt

    dist.init_process_group("gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    torch.manual_seed(0)
    config = GPT2Config(n_layer=args.layers, n_embd=args.n_embd, n_head=8, vocab_size=8192, n_positions=64)
    model = GPT2LMHeadModel(config)
    mesh = init_device_mesh("cpu", (world,))
    for block in model.transformer.h:
        fully_shard(block, mesh=mesh)
    fully_shard(model, mesh=mesh)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)

    def step() -> None:
        ids = torch.randint(0, 8192, (1, 32))
        model(input_ids=ids, labels=ids).loss.backward()
        opt.step()
        opt.zero_grad()

    step()
    ckpt = hubckpt.Checkpointer(args.repo, model=model, optimizer=opt, hub=args.hub, rank_timeout=600)
    base_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    locals_ = [p.to_local() for p in model.parameters()] + [
        v.to_local() if hasattr(v, "to_local") else v
        for st in opt.state.values()
        for v in st.values()
        if isinstance(v, torch.Tensor)
    ]
    bufs = [torch.empty_like(t) for t in locals_]
    for b in bufs:
        b.zero_()
    floors, stalls, visible = [], [], []
    for s in range(1, args.saves + 1):
        step()
        t = time.perf_counter()
        for b, src in zip(bufs, locals_):
            b.copy_(src)
        floors.append(time.perf_counter() - t)
        t = time.perf_counter()
        future = ckpt.save(s)
        stalls.append(time.perf_counter() - t)
        future.result()
        visible.append(time.perf_counter() - t)
    ckpt.close()
    # The same, weights only (what the DCP and gather baselines below publish): another repo, 2 saves.
    weights_only = hubckpt.Checkpointer(args.repo + "-weights", model=model, hub=args.hub, rank_timeout=600)
    visible_weights = []
    for s in range(1, 3):
        t = time.perf_counter()
        weights_only.save(s).result()
        visible_weights.append(time.perf_counter() - t)
    weights_only.close()
    local_bytes = sum(t.numel() * t.element_size() for t in locals_)
    layout = ckpt._layout
    assert layout is not None
    owned = sum(i.nbytes for i in layout.items if i.owner == rank)
    peak = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - base_rss) * 1024
    # Baseline: gather to rank 0, save_pretrained, upload_folder (every rank waits for it).
    dist.barrier()
    t = time.perf_counter()
    full = get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
    if rank == 0:
        from huggingface_hub import HfApi

        plain = GPT2LMHeadModel(config)
        plain.load_state_dict(full)
        with tempfile.TemporaryDirectory() as d:
            plain.save_pretrained(d)
            HfApi(endpoint=args.hub).upload_folder(repo_id=args.repo, folder_path=d, revision="main")
    dist.barrier()
    baseline = time.perf_counter() - t
    # What a user does today with torch's own writer: DCP HuggingFaceStorageWriter (every rank writes its
    # shards, then consolidation into full-tensor files, on one shared folder), then rank 0 upload_folder.
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint import HuggingFaceStorageWriter

    folder = Path(args.out) / "dcp-hf"
    dist.barrier()
    t = time.perf_counter()
    writer = HuggingFaceStorageWriter(str(folder), save_distributed=True, enable_consolidation=True)
    tied = {"lm_head.weight"}  # an alias of transformer.wte.weight: left out, as transformers does
    dcp.save({k: v for k, v in get_model_state_dict(model).items() if k not in tied}, storage_writer=writer)
    if rank == 0:
        from huggingface_hub import HfApi

        HfApi(endpoint=args.hub).upload_folder(
            repo_id=args.repo, folder_path=str(folder), revision="main", ignore_patterns=["sharded/*"]
        )
    dist.barrier()
    dcp_s = time.perf_counter() - t
    result = dict(
        rank=rank,
        floors=floors,
        stalls=stalls,
        visible=visible,
        owned_bytes=owned,
        local_bytes=local_bytes,
        peak_rss_growth=peak,
        baseline_s=baseline,
        dcp_s=dcp_s,
        visible_weights=visible_weights,
    )
    (Path(args.out) / f"rank-{rank}.json").write_text(json.dumps(result))
    dist.barrier()
    dist.destroy_process_group()
    os._exit(0)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--n-embd", type=int, default=512)
    parser.add_argument("--layers", type=int, default=6)
    parser.add_argument("--saves", type=int, default=3)
    parser.add_argument("--rank", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--repo", default="bench/multirank")
    parser.add_argument("--hub", default="")
    parser.add_argument("--out", default="")
    args = parser.parse_args()
    if args.rank:
        _rank(args)
        return
    from huggingface_hub import HfApi

    from hubckpt.server import LocalHubServer

    with tempfile.TemporaryDirectory() as d, LocalHubServer(Path(d) / "hub", port=0) as hub:
        HfApi(endpoint=hub.url, token="x").create_repo(args.repo)
        env = {**os.environ, "HUBCKPT_SPOOL": str(Path(d) / "spool"), "HF_HUB_DISABLE_XET": "1"}
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2", __file__]
        cmd += ["--rank", "--repo", args.repo, "--hub", hub.url, "--out", d]
        cmd += ["--n-embd", str(args.n_embd), "--layers", str(args.layers), "--saves", str(args.saves)]
        subprocess.run(cmd, env=env, check=True, timeout=1800)
        ranks = [json.loads((Path(d) / f"rank-{r}.json").read_text()) for r in range(2)]
        files = HfApi(endpoint=hub.url).list_repo_tree(args.repo, revision=f"step-{args.saves:07d}", recursive=True)
        sizes = {f.path: getattr(f, "size", 0) for f in files}
    shards = [v for k, v in sorted(sizes.items()) if k.startswith("model-")]
    opt_shards = [v for k, v in sorted(sizes.items()) if k.startswith("training_state/optimizer-")]
    per_rank = [a + b for a, b in zip(shards, opt_shards)] if len(opt_shards) == len(shards) else shards
    total = sum(sizes.values())
    print(f"model n_embd={args.n_embd} layers={args.layers}: revision {total / 2**20:.1f} MiB, {len(sizes)} files")
    for r in ranks:
        ratios = [s / f for s, f in zip(r["stalls"], r["floors"])]
        over = [(s - f) * 1e3 for s, f in zip(r["stalls"], r["floors"])]
        print(
            f"rank {r['rank']}: median stall/floor {statistics.median(ratios):.2f}, max {max(ratios):.2f}, "
            f"least stall / least floor {min(r['stalls']) / min(r['floors']):.2f} (robust to a loaded machine); "
            f"stall - floor {', '.join(f'{x:.1f}' for x in over)} ms"
        )
        print(
            f"rank {r['rank']}: stall per save {', '.join(f'{s * 1e3:.1f}' for s in r['stalls'])} ms; "
            f"copy floor {', '.join(f'{f * 1e3:.1f}' for f in r['floors'])} ms; ratio "
            f"{', '.join(f'{x:.2f}' for x in ratios)} (first save included); visible after "
            f"{statistics.median(r['visible']):.2f} s (median); peak RSS growth {r['peak_rss_growth'] / 2**20:.0f} MiB"
        )
    print(
        f"bytes uploaded per rank (weights + optimizer shards): {[round(b / 2**20, 1) for b in per_rank]} MiB; "
        f"max/mean {max(per_rank) / (sum(per_rank) / len(per_rank)):.2f}"
    )
    print(
        f"baseline (gather to rank 0 + save_pretrained + upload_folder, weights only): {ranks[0]['baseline_s']:.2f} s "
        "blocking every rank"
    )
    ours = min(ranks[0]["visible_weights"])
    print(
        f"DCP HuggingFaceStorageWriter(save_distributed, enable_consolidation) + rank-0 upload_folder, weights "
        f"only, one shared folder: {ranks[0]['dcp_s']:.2f} s blocking every rank; ours, weights only: visible "
        f"after {ours:.2f} s ({ranks[0]['dcp_s'] / ours:.2f}x as fast), training blocked only for the capture"
    )


if __name__ == "__main__":
    main()
