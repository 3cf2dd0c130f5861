"""Multi-rank publishing and restore of DTensor layouts beyond FSDP2 on one mesh: tensor parallel
(`parallelize_module`, ColwiseParallel / RowwiseParallel) on 2 ranks, and on 4 ranks FSDP2 over tensor parallel
on a (dp, tp) mesh (`_StridedShard`) and HSDP (replicas of dim-0 shards), each restored into the others.

`torchrun` launched as a subprocess (gloo, CPU) on a tiny `LlamaForCausalLM` built from config; rank 0 writes
the gathered full state (`get_model_state_dict(full_state_dict=True)`) at each point, which the test compares
with what the hub holds and with what each restore put back. This file is also the rank script (`__main__`).
"""

from __future__ import annotations

import faulthandler
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

LAUNCH_TIMEOUT = 240
VOCAB = 64


def _model(seed: int = 0):
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=VOCAB,
        hidden_size=32,
        intermediate_size=48,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=32,
        bos_token_id=0,
        eos_token_id=0,
        pad_token_id=0,
    )
    return LlamaForCausalLM(config)


def _tp(model, mesh):
    from torch.distributed.tensor.parallel import ColwiseParallel, RowwiseParallel, parallelize_module

    plan = {}
    for i in range(len(model.model.layers)):
        for name in ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "mlp.gate_proj", "mlp.up_proj"):
            plan[f"model.layers.{i}.{name}"] = ColwiseParallel()
        for name in ("self_attn.o_proj", "mlp.down_proj"):
            plan[f"model.layers.{i}.{name}"] = RowwiseParallel()
    return parallelize_module(model, mesh, plan)


def _fsdp(model, mesh):
    from torch.distributed.fsdp import fully_shard

    for layer in model.model.layers:
        fully_shard(layer, mesh=mesh)
    fully_shard(model, mesh=mesh)
    return model


def _build(layout: str, seed: int):
    """A model of `layout`: "tp" (2 ranks), "fsdp" (1-D mesh), "fsdp+tp" (FSDP2 on dp over TP on tp, 2 x 2),
    "hsdp" (fully_shard on a (replicate, shard) mesh, 2 x 2); and its AdamW."""
    import torch
    import torch.distributed as dist
    from torch.distributed.device_mesh import init_device_mesh

    model = _model(seed)
    world = dist.get_world_size()
    if layout == "tp":
        _tp(model, init_device_mesh("cpu", (world,)))
    elif layout == "fsdp":
        _fsdp(model, init_device_mesh("cpu", (world,)))
    elif layout == "fsdp+tp":
        mesh = init_device_mesh("cpu", (2, world // 2), mesh_dim_names=("dp", "tp"))
        _tp(model, mesh["tp"])
        _fsdp(model, mesh["dp"])
    elif layout == "hsdp":
        _fsdp(model, init_device_mesh("cpu", (2, world // 2), mesh_dim_names=("replicate", "shard")))
    return model, torch.optim.AdamW(model.parameters(), lr=1e-2, foreach=False)


def _train(model, opt, steps: int, seed: int) -> None:
    """The same batches on every rank (what tensor parallel needs; FSDP2 does not mind)."""
    import torch

    g = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        ids = torch.randint(0, VOCAB, (2, 8), generator=g)
        model(input_ids=ids, labels=ids).loss.backward()
        opt.step()
        opt.zero_grad()


def _gathered(model, opt, out: Path, tag: str) -> None:
    """Rank 0 writes the gathered full weights and optimizer state (a collective: every rank calls it)."""
    import torch.distributed as dist
    from safetensors.torch import save_file
    from torch.distributed.checkpoint.state_dict import (
        StateDictOptions,
        get_model_state_dict,
        get_optimizer_state_dict,
    )

    options = StateDictOptions(full_state_dict=True, cpu_offload=True)
    full = get_model_state_dict(model, options=options)
    optim = get_optimizer_state_dict(model, opt, options=options)
    if dist.get_rank() == 0:
        save_file({k: v.clone() for k, v in full.items()}, str(out / f"{tag}.safetensors"))
        flat = {f"{fqn}.{k}": v.clone() for fqn, st in optim["state"].items() for k, v in st.items()}
        save_file(flat, str(out / f"{tag}-optimizer.safetensors"))


def _count_reads() -> dict:
    """Counts the tensor bytes this process reads by Range from the hub (safetensors headers left out)."""
    import threading

    from hubckpt.hub.reader import HubReader

    counted = {"bytes": 0}
    inside = threading.local()
    header, read_range = HubReader.safetensors_header, HubReader.read_range

    def header_(self, *args, **kwargs):
        inside.on = True
        try:
            return header(self, *args, **kwargs)
        finally:
            inside.on = False

    def read_range_(self, path, revision, start, end):
        raw, total = read_range(self, path, revision, start, end)
        if not getattr(inside, "on", False):
            counted["bytes"] += len(raw)
        return raw, total

    HubReader.safetensors_header, HubReader.read_range = header_, read_range_  # type: ignore[method-assign]
    return counted


def _needed(model, opt) -> int:
    """The bytes a restore should read on this rank: of each tensor (weights, optimizer state), the rows that
    cover this rank's part (all of it for a plain tensor)."""
    import math

    seen, total = set(), 0
    values = [*model.state_dict().values(), *(t for st in opt.state.values() for t in st.values())]
    for v in values:
        if id(v) in seen:
            continue
        seen.add(id(v))
        rows = getattr(v, "_local_tensor", v).shape[0] if v.dim() else 1
        total += rows * math.prod(v.shape[1:]) * v.element_size()
    return total


def _rank_main(repo: str, hub: str, out: Path, mode: str) -> None:
    import logging

    import torch.distributed as dist

    import hubckpt

    faulthandler.dump_traceback_later(LAUNCH_TIMEOUT - 20, exit=True)
    logging.basicConfig(level=logging.WARNING)
    dist.init_process_group("gloo")
    rank = dist.get_rank()
    first, second = ("tp", "fsdp") if mode == "tp" else ("fsdp+tp", "hsdp")
    seen: dict = {"placements": {}, "read": {}}
    counted = _count_reads()

    # Saved with the first layout (a step, another step uninterrupted), then resumed on the same layout.
    model, opt = _build(first, 0)
    seen["placements"][first] = sorted({str(p.placements) for p in model.parameters() if hasattr(p, "placements")})
    _train(model, opt, 2, 1)
    ckpt = hubckpt.Checkpointer(repo, model=model, optimizer=opt, hub=hub, rank_timeout=60)
    ckpt.save(2)
    _gathered(model, opt, out, "saved-2")
    _train(model, opt, 1, 2)
    _gathered(model, opt, out, "3-uninterrupted")
    seen["resumed"] = ckpt.restore(step=2).rng_restored
    _train(model, opt, 1, 2)
    _gathered(model, opt, out, "3-resumed")
    ckpt.close()

    # Restored into the second layout, which saves the next step.
    model, opt = _build(second, 5)
    seen["placements"][second] = sorted({str(p.placements) for p in model.parameters() if hasattr(p, "placements")})
    before = counted["bytes"]
    hubckpt.restore(repo, step=2, model=model, optimizer=opt, hub=hub)
    seen["read"][second] = [counted["bytes"] - before, _needed(model, opt)]
    _gathered(model, opt, out, f"restored-2-into-{second}")
    _train(model, opt, 1, 3)
    ckpt = hubckpt.Checkpointer(repo, model=model, optimizer=opt, hub=hub, rank_timeout=60)
    ckpt.save(3)
    _gathered(model, opt, out, "saved-3")
    ckpt.close()

    # ...and that step restored into the first layout.
    model, opt = _build(first, 6)
    before = counted["bytes"]
    hubckpt.restore(repo, step=3, model=model, optimizer=opt, hub=hub)
    seen["read"][first] = [counted["bytes"] - before, _needed(model, opt)]
    _gathered(model, opt, out, f"restored-3-into-{first}")
    (out / f"rank-{rank}.json").write_text(json.dumps(seen))
    dist.barrier()
    dist.destroy_process_group()
    os._exit(0)


def _launch(tmp_path: Path, repo: str, hub: str, mode: str, nproc: int) -> list[dict]:
    env = {**os.environ, "HUBCKPT_SPOOL": str(tmp_path / "spool"), "OMP_NUM_THREADS": "1"}
    env["PYTHONPATH"] = os.pathsep.join([str(Path(__file__).resolve().parents[1]), env.get("PYTHONPATH", "")])
    cmd = [sys.executable, "-m", "torch.distributed.run", f"--nproc-per-node={nproc}", "--standalone"]
    cmd += [__file__, repo, hub, str(tmp_path), mode]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=LAUNCH_TIMEOUT)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-8000:]
    return [json.loads((tmp_path / f"rank-{r}.json").read_text()) for r in range(nproc)]


def _same(tmp_path: Path, a: str, b: str) -> None:
    import torch
    from safetensors.torch import load_file

    for suffix in ("", "-optimizer"):
        want = load_file(str(tmp_path / f"{a}{suffix}.safetensors"))
        got = load_file(str(tmp_path / f"{b}{suffix}.safetensors"))
        assert sorted(got) == sorted(want), (a, b, suffix)
        for k in want:
            assert torch.equal(got[k], want[k]), (a, b, k)


def _check_reads(seen: list[dict]) -> None:
    """Each rank read by Range exactly the rows covering its parts: for dim-0 shards (FSDP2, HSDP, ColwiseParallel)
    its part and nothing more; for a part cut on dim 1 (RowwiseParallel) the whole rows that cover it."""
    for s in seen:
        for layout, (read, needed) in s["read"].items():
            assert read == needed, (s["placements"], layout, read, needed)


def _check_hub(tmp_path: Path, repo_id: str, hub: str, api, world: int) -> dict:
    """Each revision holds exactly the gathered state it was saved from; a plain process restores it."""
    import torch
    from safetensors.torch import load_file

    import hubckpt

    for step in (2, 3):
        want = load_file(str(tmp_path / f"saved-{step}.safetensors"))
        got = hubckpt.load_state_dict(repo_id, revision=f"step-{step:07d}", hub=hub)
        assert sorted(got) == sorted(want)
        assert all(torch.equal(got[k], want[k]) for k in want), step
    model = _model(9)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    restored = hubckpt.restore(repo_id, step=2, model=model, optimizer=opt, hub=hub)
    assert restored.rng_restored is False
    want = load_file(str(tmp_path / "saved-2.safetensors"))
    assert all(torch.equal(v, want[k]) for k, v in model.state_dict().items())
    names = {id(p): n for n, p in model.named_parameters()}
    got_opt = {f"{names[id(p)]}.{k}": v for p, st in opt.state.items() for k, v in st.items()}
    want_opt = load_file(str(tmp_path / "saved-2-optimizer.safetensors"))
    assert sorted(got_opt) == sorted(want_opt) and all(torch.equal(got_opt[k], want_opt[k]) for k in want_opt)
    manifest = json.loads(Path(api.hf_hub_download(repo_id, "checkpoint.json", revision="step-0000002")).read_text())
    assert manifest["ranks"]["world_size"] == world
    return manifest["ranks"]


@pytest.mark.slow
def test_tensor_parallel_revisions_hold_the_full_state_and_restore_into_fsdp2_and_back(
    tmp_path, local_hub, api, repo_id
):
    """2 ranks: TP-saved (ColwiseParallel: Shard(0), RowwiseParallel: Shard(1), replicated biases and plain
    norms/embeddings) → bit-exact resume on TP, restore into FSDP2 and a plain model; FSDP2-saved → TP."""
    seen = _launch(tmp_path, repo_id, local_hub.url, "tp", 2)
    assert seen[0]["placements"]["tp"] == ["(Shard(dim=0),)", "(Shard(dim=1),)"]
    assert all(s["resumed"] is True for s in seen)
    _check_reads(seen)
    _same(tmp_path, "3-uninterrupted", "3-resumed")
    _same(tmp_path, "saved-2", "restored-2-into-fsdp")
    _same(tmp_path, "saved-3", "restored-3-into-tp")
    ranks = _check_hub(tmp_path, repo_id, local_hub.url, api, 2)
    tensors = ranks["tensors"]
    o_proj = tensors["model.layers.0.self_attn.o_proj.weight"]  # Shard(1): a part per rank, recorded as such
    parts = ranks["layouts"][o_proj["layout"]]
    assert o_proj["rows"] is None and [p["ranks"] for p in parts] == [[0], [1]]
    assert parts[1]["box"] == [[[0, 32]], [[16, 32]]]
    assert tensors["model.layers.1.self_attn.o_proj.weight"]["layout"] == o_proj["layout"]  # one entry for both
    assert tensors["model.layers.0.self_attn.q_proj.weight"]["rows"] == [16, 16]  # Shard(0): rows, as before


@pytest.mark.slow
def test_two_dimensional_meshes_fsdp2_over_tp_and_hsdp_restore_into_each_other(tmp_path, local_hub, api, repo_id):
    """4 ranks on (2, 2) meshes: FSDP2 over TP (`_StridedShard` on dim 0, Shard(0) x Shard(1), parameters left
    to FSDP2 alone replicated over tp) saves, bit-exact resume, restore into HSDP (Replicate x Shard(0)), which
    saves; that restored into FSDP2 over TP."""
    seen = _launch(tmp_path, repo_id, local_hub.url, "2d", 4)
    assert "(_StridedShard(dim=0, sf=2), Shard(dim=0))" in seen[0]["placements"]["fsdp+tp"]
    assert seen[0]["placements"]["hsdp"] == ["(Replicate(), Shard(dim=0))"]
    _check_reads(seen)
    _same(tmp_path, "3-uninterrupted", "3-resumed")
    _same(tmp_path, "saved-2", "restored-2-into-hsdp")
    _same(tmp_path, "saved-3", "restored-3-into-fsdp+tp")
    _check_hub(tmp_path, repo_id, local_hub.url, api, 4)


if __name__ == "__main__":
    _rank_main(sys.argv[1], sys.argv[2], Path(sys.argv[3]), sys.argv[4])
