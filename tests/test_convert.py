"""Conversion: every reader, safetensors output loadable by transformers and safetensors, exact training state."""

from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

import hubckpt
from hubckpt.conversion.training_state import load_training_state, restore_rng
from hubckpt.errors import DestinationExistsError

from .factories import (
    all_dtypes_state_dict,
    make_dcp_folder,
    make_lightning_ckpt,
    make_nanogpt_file,
    make_trainer_run,
)


@pytest.fixture(scope="module")
def trainer_run(tmp_path_factory) -> Path:
    return make_trainer_run(tmp_path_factory.mktemp("trainer") / "run")


def _manifest(dest: Path) -> dict:
    return json.loads((dest / "checkpoint.json").read_text())


def test_trainer_checkpoint(trainer_run, tmp_path):
    from transformers import AutoModelForCausalLM

    src = trainer_run / "checkpoint-2"
    [result] = hubckpt.convert(src, tmp_path / "out")
    out = result.dest
    assert sorted(p.name for p in out.iterdir()) == [
        "checkpoint.json",
        "config.json",
        "generation_config.json",
        "model.safetensors",
        "training_state",
    ]
    manifest = _manifest(out)
    assert manifest["step"] == 2 and manifest["epoch"] == 0.5 and manifest["source"]["format"] == "trainer"
    assert {"loss", "eval_loss", "learning_rate"} <= set(manifest["metrics"])
    assert manifest["skipped"] == [
        {"file": "training_args.bin", "reason": "pickled TrainingArguments: never unpickled (it could run code)"}
    ]
    assert {f["path"] for f in manifest["files"]} >= {
        "model.safetensors",
        "config.json",
        "training_state/optimizer.json",
    }
    source = AutoModelForCausalLM.from_pretrained(src)
    loaded = AutoModelForCausalLM.from_pretrained(out)
    assert all(torch.equal(a, b) for a, b in zip(source.state_dict().values(), loaded.state_dict().values()))
    assert not list((out / "training_state").glob("*.pt")) and not list(out.rglob("*.bin"))


def test_trainer_training_state_restores_exactly(trainer_run, tmp_path):
    src = trainer_run / "checkpoint-4"
    [result] = hubckpt.convert(src, tmp_path / "out")
    state = load_training_state(result.dest / "training_state")
    assert set(state) == {"loop", "optimizer", "rng", "scheduler"}
    original = torch.load(src / "optimizer.pt", weights_only=True)

    # A fresh optimizer with the Trainer's two parameter groups (decay / no decay).
    groups = [
        {"params": [torch.nn.Parameter(torch.zeros_like(original["state"][i]["exp_avg"])) for i in g["params"]]}
        for g in original["param_groups"]
    ]
    fresh = torch.optim.AdamW(groups, lr=5e-5)
    fresh.load_state_dict(state["optimizer"])
    restored = fresh.state_dict()
    assert restored["param_groups"] == original["param_groups"]
    for k, v in original["state"].items():
        for name, tensor in v.items():
            assert torch.equal(restored["state"][k][name], tensor), (k, name)

    sched = torch.optim.lr_scheduler.LambdaLR(fresh, lambda s: 1.0)
    sched.load_state_dict(state["scheduler"])
    expected = torch.load(src / "scheduler.pt", weights_only=True)
    assert {k: v for k, v in sched.state_dict().items() if k != "lr_lambdas"} == {
        k: v for k, v in expected.items() if k != "lr_lambdas"
    }

    # Identical subsequent random draws: restore from our files, then from the Trainer's own pickle.
    restore_rng(state["rng"]["rng_state"])
    ours = (random.random(), np.random.rand(), torch.rand(3))
    with torch.serialization.safe_globals(hubckpt.safe_pickle._numpy_rng_globals()):
        trainer_rng = torch.load(src / "rng_state.pth", weights_only=True)
    restore_rng(trainer_rng)
    theirs = (random.random(), np.random.rand(), torch.rand(3))
    assert ours[0] == theirs[0] and ours[1] == theirs[1] and torch.equal(ours[2], theirs[2])
    assert state["loop"]["global_step"] == 4


def test_nanogpt_file_with_compile_prefix_and_tied_weights(tmp_path):
    path, model, optimizer = make_nanogpt_file(tmp_path / "ckpt.pt")
    [result] = hubckpt.convert(path, tmp_path / "out")
    weights = load_file(result.dest / "model.safetensors")
    assert sorted(weights) == ["block.bias", "block.weight", "wte.weight"]  # lm_head.weight is the same tensor
    assert result.weights.tied == {"lm_head.weight": "wte.weight"}
    assert torch.equal(weights["wte.weight"], model.wte.weight)
    manifest = _manifest(result.dest)
    assert manifest["step"] == 1500 and manifest["source"]["format"] == "nanogpt"
    assert manifest["metrics"] == {"best_val_loss": 2.5}
    state = load_training_state(result.dest / "training_state")
    assert state["loop"] == {
        "config": {"dataset": "toy", "lr": 0.001},
        "iter_num": 1500,
        "best_val_loss": 2.5,
        "model_args": {"n_embd": 8, "vocab_size": 32},
    }
    fresh = torch.optim.AdamW(TinyParams(model), lr=1e-3)
    fresh.load_state_dict(state["optimizer"])
    assert torch.equal(fresh.state_dict()["state"][0]["exp_avg"], optimizer.state_dict()["state"][0]["exp_avg"])


def TinyParams(model):  # noqa: N802 - a fresh copy of the parameters, shaped like the model's
    return [torch.nn.Parameter(p.detach().clone()) for p in model.parameters()]


def test_every_dtype_round_trips_bitwise_and_deterministically(tmp_path):
    state = all_dtypes_state_dict()
    torch.save(state, tmp_path / "weights.bin")
    [a] = hubckpt.convert(tmp_path / "weights.bin", tmp_path / "a")
    [b] = hubckpt.convert(tmp_path / "weights.bin", tmp_path / "b")
    assert (a.dest / "model.safetensors").read_bytes() == (b.dest / "model.safetensors").read_bytes()
    assert (a.dest / "checkpoint.json").read_bytes() == (b.dest / "checkpoint.json").read_bytes()
    loaded = load_file(a.dest / "model.safetensors")
    for name, tensor in state.items():
        assert loaded[name].dtype == tensor.dtype and loaded[name].shape == tensor.shape, name
        assert (
            loaded[name].contiguous().view(torch.uint8).equal(tensor.contiguous().view(torch.uint8))
            if tensor.dim()
            else torch.equal(loaded[name].reshape(1).view(torch.uint8), tensor.reshape(1).view(torch.uint8))
        ), name


def test_sharded_pytorch_model_bin_loads_with_transformers(tmp_path):
    from transformers import GPT2LMHeadModel

    from .factories import tiny_gpt2_config

    torch.manual_seed(5)
    model = GPT2LMHeadModel(tiny_gpt2_config(n_layer=2))
    model.save_pretrained(tmp_path / "src", safe_serialization=False) if False else None
    (tmp_path / "src").mkdir()
    torch.save(model.state_dict(), tmp_path / "src" / "pytorch_model.bin")
    model.config.save_pretrained(tmp_path / "src")
    [result] = hubckpt.convert(tmp_path / "src", tmp_path / "out", max_shard_size="8KB")
    assert result.weights.shards > 1
    index = json.loads((result.dest / "model.safetensors.index.json").read_text())
    assert set(index["weight_map"].values()) == {f.path for f in result.files if f.path.startswith("model-")}
    loaded = GPT2LMHeadModel.from_pretrained(result.dest)
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), loaded.state_dict().values()))
    # Sharded safetensors input (the output above) within the shard limit is reused as it is: same shards,
    # same bytes; above the limit (or with a dtype cast) it is rewritten.
    [again] = hubckpt.convert(result.dest, tmp_path / "again")
    assert {(f.path, f.sha256) for f in again.files if f.path.endswith(".safetensors")} == {
        (f.path, f.sha256) for f in result.files if f.path.endswith(".safetensors")
    }
    assert GPT2LMHeadModel.from_pretrained(again.dest).state_dict().keys() == loaded.state_dict().keys()
    [fp16] = hubckpt.convert(result.dest, tmp_path / "fp16", dtype="fp16")
    assert [f.path for f in fp16.files if f.path.endswith(".safetensors")] == ["model.safetensors"]


def test_lightning_and_dcp_and_bf16(tmp_path):
    [lit] = hubckpt.convert(make_lightning_ckpt(tmp_path / "epoch=3-step=120.ckpt"), tmp_path / "lit", dtype="bf16")
    weights = load_file(lit.dest / "model.safetensors")
    assert sorted(weights) == ["0.bias", "0.weight", "2.bias", "2.weight"]  # the LightningModule's `model.` prefix
    assert all(t.dtype == torch.bfloat16 for t in weights.values())
    m = _manifest(lit.dest)
    assert m["step"] == 120 and m["epoch"] == 3.0 and m["source"]["format"] == "lightning"
    assert set(load_training_state(lit.dest / "training_state")) == {"loop", "optimizers", "schedulers"}

    [dcp] = hubckpt.convert(make_dcp_folder(tmp_path / "dcp"), tmp_path / "dcp-out")
    assert sorted(load_file(dcp.dest / "model.safetensors")) == ["bias", "weight"]
    assert _manifest(dcp.dest)["step"] == 77


def test_run_folder_converts_each_checkpoint_with_its_step(trainer_run, tmp_path):
    assert [s for s, _ in hubckpt.discover(trainer_run)] == [2, 4]
    results = hubckpt.convert(trainer_run, tmp_path / "run-out")
    assert [r.dest.name for r in results] == ["step-0000002", "step-0000004"]
    assert [_manifest(r.dest)["step"] for r in results] == [2, 4]


def test_existing_destination_is_never_replaced_silently(tmp_path):
    torch.save({"w": torch.ones(2)}, tmp_path / "w.pt")
    dest = tmp_path / "dest"
    dest.mkdir()
    (dest / "keep.txt").write_text("mine")
    with pytest.raises(DestinationExistsError):
        hubckpt.convert(tmp_path / "w.pt", dest)
    assert (dest / "keep.txt").read_text() == "mine"
    hubckpt.convert(tmp_path / "w.pt", dest, overwrite=True)
    assert not (dest / "keep.txt").exists() and (dest / "model.safetensors").exists()
    assert not list(tmp_path.glob(".dest.tmp-*"))
