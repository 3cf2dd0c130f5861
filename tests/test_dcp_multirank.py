"""Folders written by torch.distributed.checkpoint from several ranks publish as one revision of full tensors.

Real 2-rank torchrun (gloo, CPU) writes an FSDP2 model + AdamW as plain DCP (`.metadata` + `*.distcp`)
and through `HuggingFaceStorageWriter(save_distributed=True)` with and without consolidation; the
published values must equal the gathered full state (`get_*_state_dict(full_state_dict=True)`).
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

import hubckpt
from hubckpt.errors import CorruptCheckpointError
from hubckpt.publishing import Publisher

from .helpers import run_cli

ROOT = Path(__file__).resolve().parents[1]

RANKS_SCRIPT = r"""
import os, sys
import torch, torch.distributed as dist, torch.nn as nn
import torch.distributed.checkpoint as dcp
from torch.distributed.checkpoint import HuggingFaceStorageWriter
from torch.distributed.checkpoint.state_dict import (
    StateDictOptions, get_model_state_dict, get_optimizer_state_dict, get_state_dict,
)
from torch.distributed.device_mesh import init_device_mesh
from torch.distributed.fsdp import fully_shard

out = sys.argv[1]
dist.init_process_group("gloo")
rank, world = dist.get_rank(), dist.get_world_size()
mesh = init_device_mesh("cpu", (world,))
torch.manual_seed(0)
# Odd row counts: the ranks' slices are uneven (47 -> 24+23...); 23 KB of weights in all.
model = nn.Sequential(nn.Linear(64, 47), nn.ReLU(), nn.Linear(47, 39), nn.ReLU(), nn.Linear(39, 23))
for layer in model:
    if isinstance(layer, nn.Linear):
        fully_shard(layer, mesh=mesh)
fully_shard(model, mesh=mesh)
opt = torch.optim.AdamW(model.parameters(), lr=0.01)
torch.manual_seed(1 + rank)
for _ in range(3):
    model(torch.randn(4, 64)).sum().backward()
    opt.step()
    opt.zero_grad()
msd, osd = get_state_dict(model, opt)
dcp.save({"model": msd, "optimizer": osd, "step": 3}, checkpoint_id=os.path.join(out, "dcp"))
for name, consolidate in (("hf-sharded", False), ("hf-consolidated", True)):
    writer = HuggingFaceStorageWriter(os.path.join(out, name), save_distributed=True, enable_consolidation=consolidate)
    dcp.save(msd, storage_writer=writer)
full = StateDictOptions(full_state_dict=True, cpu_offload=True)
expected = {
    "model": get_model_state_dict(model, options=full),
    "optimizer": get_optimizer_state_dict(model, opt, options=full),
}
if rank == 0:
    torch.save(expected, os.path.join(out, "expected.pt"))
dist.barrier()
dist.destroy_process_group()
os._exit(0)  # torch 2.13's gloo may abort at interpreter exit
"""


@pytest.fixture(scope="module")
def dcp_folders(tmp_path_factory) -> Path:
    """Run the 2-rank script once; the folders it writes and the gathered state (expected.pt)."""
    pytest.importorskip("torch.distributed.fsdp")
    out = tmp_path_factory.mktemp("dcp-ranks")
    script = out / "ranks.py"
    script.write_text(RANKS_SCRIPT)
    proc = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2", str(script), str(out)],
        capture_output=True,
        text=True,
        env={**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)},
        timeout=150,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert sorted(p.name for p in (out / "hf-sharded").iterdir()) == [
        "shard-00001-model-00001-of-00001.safetensors",
        "shard-00002-model-00001-of-00001.safetensors",
    ]  # one file per rank, no index: the layout hubckpt must put back together
    assert (out / "hf-consolidated" / "model.safetensors.index.json").is_file()
    return out


def _expected(folder: Path) -> dict:
    return torch.load(folder / "expected.pt", weights_only=True)


def _assert_same(got, want, where: str = "") -> None:
    if isinstance(want, torch.Tensor):
        assert isinstance(got, torch.Tensor) and got.dtype == want.dtype and torch.equal(got, want), where
    elif isinstance(want, dict):
        assert isinstance(got, dict) and sorted(map(str, got)) == sorted(map(str, want)), where
        for k in want:
            _assert_same(got[k], want[k], f"{where}.{k}")
    elif isinstance(want, (list, tuple)):
        assert isinstance(got, (list, tuple)) and len(got) == len(want), where
        for i, (a, b) in enumerate(zip(got, want)):
            _assert_same(a, b, f"{where}[{i}]")
    else:
        assert got == want, where


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_cli_publishes_a_two_rank_dcp_folder_as_one_revision(dcp_folders, local_hub, api, tmp_path, cache_dir):
    repo_id = "alice/dcp-two-ranks"
    expected = _expected(dcp_folders)
    # The folder's name carries no step: the step is the one the state records (`"step": 3`).
    result = run_cli(
        "publish",
        str(dcp_folders / "dcp"),
        "--repo",
        repo_id,
        "--hub",
        local_hub.url,
        "--spool",
        str(tmp_path / "spool"),
        "--max-shard-size",
        "8KB",
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "published step-0000003" in result.stdout
    assert {b.name for b in api.list_repo_refs(repo_id).branches} == {"main", "step-0000003"}

    files = set(api.list_repo_files(repo_id, revision="step-0000003"))
    shards = sorted(f for f in files if f.startswith("model-"))
    assert len(shards) >= 2 and "model.safetensors.index.json" in files  # full tensors, HF shards + index
    assert not any(f.endswith((".distcp", ".metadata", ".pt", ".pth", ".bin")) for f in files)
    weights = hubckpt.load_state_dict(repo_id, "step-0000003", hub=local_hub.url, cache_dir=cache_dir)
    _assert_same(weights, expected["model"], "model")

    local = api.snapshot_download(repo_id, revision="step-0000003", cache_dir=cache_dir)
    state = hubckpt.load_training_state(Path(local) / "training_state")
    _assert_same(state["optimizer"], expected["optimizer"], "optimizer")  # pickle-free, every rank's slices


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_hf_storage_writer_folders_publish_one_revision_each(dcp_folders, local_hub, api, tmp_path, cache_dir):
    repo_id = "alice/dcp-hf-writer"
    expected = _expected(dcp_folders)["model"]
    with Publisher(repo_id, hub=local_hub.url, spool_dir=tmp_path / "spool") as pub:
        sharded = pub.publish(dcp_folders / "hf-sharded", step=5)
        consolidated = pub.publish(dcp_folders / "hf-consolidated", step=6)
        assert [sharded.result().revision, consolidated.result().revision] == ["step-0000005", "step-0000006"]
    for revision in ("step-0000005", "step-0000006"):
        files = set(api.list_repo_files(repo_id, revision=revision))
        assert "model.safetensors" in files and not any("shard-" in f or f.startswith("sharded/") for f in files)
        weights = hubckpt.load_state_dict(repo_id, revision, hub=local_hub.url, cache_dir=cache_dir)
        _assert_same(weights, expected, revision)


def _rank_file(folder: Path, rank: int, tensors: dict, offsets: dict | str) -> None:
    info = offsets if isinstance(offsets, str) else json.dumps({k: {"saved_offsets": v} for k, v in offsets.items()})
    save_file(
        tensors,
        folder / f"shard-{rank:05d}-model-00001-of-00001.safetensors",
        metadata={"DCP_SHARDING_INFO": info, "DCP_VERSION": "1.0", "format": "pt"},
    )


def test_per_rank_safetensors_slices_must_tile_the_tensor(tmp_path):
    w = torch.arange(30, dtype=torch.float32).reshape(6, 5)
    good = tmp_path / "good"
    good.mkdir()
    _rank_file(good, 1, {"w": w[:4].clone(), "s": torch.tensor(7.0)}, {"w": [0, 0], "s": []})
    _rank_file(good, 2, {"w": w[4:].clone()}, {"w": [4, 0]})
    assert hubckpt.readers.kind_of(good) == "dcp"
    ckpt = hubckpt.read_checkpoint(good)
    assert ckpt.source_format == "dcp" and torch.equal(ckpt.weights["w"], w) and ckpt.weights["s"].item() == 7.0

    def refused(name: str, files: list[tuple[int, dict, dict | str]]) -> str:
        folder = tmp_path / name
        folder.mkdir()
        for rank, tensors, offsets in files:
            _rank_file(folder, rank, tensors, offsets)
        with pytest.raises(CorruptCheckpointError) as info:
            hubckpt.read_checkpoint(folder)
        return str(info.value)

    # Rank 2's file is missing (rows 2-3 were its share).
    gap = [(1, {"w": w[:2].clone()}, {"w": [0, 0]}), (3, {"w": w[4:].clone()}, {"w": [4, 0]})]
    assert "shard-00002-* is missing" in refused("gap", gap)
    # Two ranks claim column 2 of rows 3-5 and none column 4: the element count adds up, the tiling does not.
    overlap = [
        (1, {"w": w[:3].clone()}, {"w": [0, 0]}),
        (2, {"w": w[3:, :3].clone()}, {"w": [3, 0]}),
        (3, {"w": w[3:, 2:4].clone()}, {"w": [3, 2]}),
    ]
    assert "slices of 'w' overlap" in refused("overlap", overlap)
    # A hostile offset would make the full tensor huge: refused before anything that size is allocated.
    huge = refused("huge", [(1, {"w": w.clone()}, {"w": [2**40, 0]})])
    assert "a rank's file is missing" in huge and str(math.prod([2**40 + 6, 5])) in huge
    assert "saved_offsets" in refused("no-offsets", [(1, {"w": w.clone()}, {"x": [0, 0]})])
    assert "saved_offsets" in refused("negative", [(1, {"w": w.clone()}, {"w": [-1, 0]})])
    assert "not JSON" in refused("not-json", [(1, {"w": w.clone()}, "{nope")])
