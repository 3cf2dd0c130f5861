"""Checkpointer + restore: a plain PyTorch loop resumed from the hub in a fresh process is bit-exact."""

from __future__ import annotations

import itertools
import json
import os
import random
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

ROOT = Path(__file__).resolve().parents[1]
N = 7  # steps before the interruption: mid-epoch (5 batches per epoch)
TOTAL = 2 * N  # crosses two epoch boundaries
BATCH, SAMPLES = 8, 40


def _data() -> torch.utils.data.TensorDataset:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(SAMPLES, 8, generator=g)
    return torch.utils.data.TensorDataset(x, x @ torch.randn(8, 4, generator=g))


def make(seed: int):
    """Model with dropout, AdamW, OneCycle; `seed` decides the initial weights."""
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(8, 32), nn.ReLU(), nn.Dropout(0.3), nn.Linear(32, 4))
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2, weight_decay=0.01)
    scheduler = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=0.05, total_steps=TOTAL)
    return model, optimizer, scheduler


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def train(model, optimizer, scheduler, start: int, stop: int) -> None:
    """Steps start+1 .. stop. Shuffled sampler (one seeded permutation per epoch), dropout and input
    noise from the global torch / numpy / python RNGs, which a resume must restore."""
    data = _data()
    per_epoch = SAMPLES // BATCH
    step = start
    while step < stop:
        epoch, skip = divmod(step, per_epoch)
        sampler = torch.utils.data.RandomSampler(data, generator=torch.Generator().manual_seed(100 + epoch))
        # its own generator too: a loader without one draws its base seed from the global RNG per iterator
        loader = torch.utils.data.DataLoader(
            data, batch_size=BATCH, sampler=sampler, generator=torch.Generator().manual_seed(200 + epoch)
        )
        for x, y in itertools.islice(loader, skip, None):
            noise = torch.from_numpy(np.random.normal(0, 0.01, size=x.shape).astype(np.float32)) * random.random()
            loss = nn.functional.mse_loss(model(x + noise), y)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            scheduler.step()
            step += 1
            if step == stop:
                return


def resume_in_fresh_process(repo_id: str, endpoint: str, out: str) -> None:
    """Run in a subprocess: another init, restore from the hub, finish training, save the result."""
    import hubckpt

    torch.set_num_threads(1)
    seed_everything(123)
    model, optimizer, scheduler = make(seed=123)  # different initial weights on purpose
    resumed = hubckpt.restore(repo_id, model=model, optimizer=optimizer, scheduler=scheduler, hub=endpoint)
    assert resumed.step == N and resumed.extra == {"data": "per-epoch permutation"}, resumed
    train(model, optimizer, scheduler, resumed.step, TOTAL)
    torch.save(
        {
            "model": model.state_dict(),
            "optimizer": optimizer.state_dict(),
            "lr": scheduler.get_last_lr(),
            "revision": resumed.revision,
        },
        out,
    )


def _flat_optimizer(state: dict) -> dict[str, torch.Tensor]:
    return {f"{pid}.{k}": v for pid, s in state["state"].items() for k, v in s.items()}


@pytest.fixture
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.mark.slow
@pytest.mark.timeout(180)
def test_plain_loop_resumed_from_the_hub_in_a_fresh_process_is_bit_exact(local_hub, api, tmp_path, one_thread):
    import hubckpt

    repo_id = "alice/checkpointer-exact"
    seed_everything(0)
    straight = make(seed=0)
    train(*straight, 0, TOTAL)

    seed_everything(0)
    model, optimizer, scheduler = make(seed=0)
    with hubckpt.Checkpointer(
        repo_id, model=model, optimizer=optimizer, scheduler=scheduler, hub=local_hub.url, spool_dir=tmp_path / "spool"
    ) as ckpt:
        train(model, optimizer, scheduler, 0, N)
        at_n = {k: v.clone() for k, v in model.state_dict().items()}
        future = ckpt.save(N, metrics={"loss": 0.5}, extra={"data": "per-epoch permutation"})
        with torch.no_grad():  # the loop goes on changing the weights: the capture must not see it
            for p in model.parameters():
                p.add_(1.0)
    published = future.result(timeout=60)
    assert published.revision == "step-0000007"
    files = api.list_repo_files(repo_id, revision=published.revision)
    assert {
        "training_state/optimizer.safetensors",
        "training_state/scheduler.json",
        "training_state/rng.json",
        "training_state/loop.json",
    } <= set(files)
    from safetensors.torch import load_file

    weights = load_file(api.hf_hub_download(repo_id, "model.safetensors", revision=published.revision))
    assert all(torch.equal(weights[k], at_n[k]) for k in at_n)

    out = tmp_path / "resumed.pt"
    code = (
        "from tests.test_checkpointer import resume_in_fresh_process as r; "
        f"r({repo_id!r}, {local_hub.url!r}, {str(out)!r})"
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=150)
    assert proc.returncode == 0, proc.stderr[-3000:]
    resumed = torch.load(out, weights_only=True)

    reference = straight[0].state_dict()
    assert resumed["model"].keys() == reference.keys()
    for k in reference:
        assert torch.equal(resumed["model"][k], reference[k]), k
    ours, theirs = _flat_optimizer(resumed["optimizer"]), _flat_optimizer(straight[1].state_dict())
    assert ours.keys() == theirs.keys() and ours
    for k in theirs:
        assert torch.equal(ours[k], theirs[k]), k
    assert resumed["lr"] == straight[2].get_last_lr()
    assert resumed["revision"] == "step-0000007"


@pytest.mark.timeout(120)
def test_first_save_uses_buffers_staged_ahead_and_a_restart_skips_published_steps(local_hub, tmp_path):
    import hubckpt

    repo_id = "alice/checkpointer-restart"
    seed_everything(0)
    model, optimizer, scheduler = make(seed=0)
    ckpt = hubckpt.Checkpointer(
        repo_id,
        model=model,
        optimizer=optimizer,
        scheduler=scheduler,
        hub=local_hub.url,
        every=2,
        spool_dir=tmp_path / "spool",
    )
    train(model, optimizer, scheduler, 0, 1)  # the first optimizer step triggers staging of its state
    ckpt.wait_staged()
    staged = ckpt._pool._sets[0]
    assert any(k.startswith("optimizer/") for k in staged.buffers) and any(
        k.startswith("model/") for k in staged.buffers
    )
    assert ckpt.save(1) is None  # not a multiple of every=2
    train(model, optimizer, scheduler, 1, 2)
    first = ckpt.save(2, metrics={"loss": 1.0})
    assert staged.allocated_on_capture == 0  # the first save only copied
    train(model, optimizer, scheduler, 2, 4)
    ckpt.save(4, final=True)
    ckpt.close()
    assert first.result().revision == "step-0000002"

    # A restarted run: different init, restore() finds the latest revision, published steps are not redone.
    seed_everything(5)
    model2, optimizer2, scheduler2 = make(seed=5)
    with hubckpt.Checkpointer(
        repo_id,
        model=model2,
        optimizer=optimizer2,
        scheduler=scheduler2,
        hub=local_hub.url,
        every=2,
        spool_dir=tmp_path / "spool2",
    ) as again:
        resumed = again.restore()
        assert resumed.step == 4 and resumed.revision == "step-0000004"
        assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), model2.state_dict().values()))
        skipped = again.save(4).result()
        assert skipped.skipped
        train(model2, optimizer2, scheduler2, 4, 6)
        assert again.save(6).result(timeout=60).revision == "step-0000006"
    index = json.loads(Path(hubckpt.hub_api(local_hub.url).hf_hub_download(repo_id, "revisions.json")).read_text())
    assert [r["step"] for r in index["revisions"]] == [2, 4, 6]


def test_restore_before_anything_is_published_returns_none(local_hub, tmp_path):
    import hubckpt

    model, optimizer, scheduler = make(seed=0)
    with hubckpt.Checkpointer(
        "alice/checkpointer-fresh", model=model, optimizer=optimizer, hub=local_hub.url, spool_dir=tmp_path / "spool"
    ) as ckpt:
        assert ckpt.restore() is None
        with pytest.raises(hubckpt.HubConfigError, match="JSON"):
            ckpt.save(1, extra={"bad": object()})


def crashing_run(repo_id: str, endpoint: str, spool: str, background: str) -> None:
    """Subprocess: saves steps 2 and 4; HUBCKPT_FAULT kills the publisher after step 2's commit, before its
    index (with background="process" that is the publishing process: this one then exits with its error)."""
    import hubckpt

    seed_everything(0)
    model, optimizer, scheduler = make(seed=0)
    ckpt = hubckpt.Checkpointer(
        repo_id,
        model=model,
        optimizer=optimizer,
        scheduler=scheduler,
        hub=endpoint,
        spool_dir=spool,
        background=background,
    )
    train(model, optimizer, scheduler, 0, 2)
    ckpt.save(2)
    train(model, optimizer, scheduler, 2, 4)
    ckpt.save(4)
    ckpt.wait()
    raise SystemExit("the fault point was not reached")


@pytest.mark.slow
@pytest.mark.timeout(180)
@pytest.mark.parametrize("background", ["thread", "process"])
def test_a_run_killed_while_publishing_resumes_and_publishes_each_step_once(
    local_hub, api, tmp_path, one_thread, background
):
    import hubckpt

    repo_id, spool = f"alice/checkpointer-crash-{background}", tmp_path / "spool"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HUBCKPT_FAULT": "publish.after_commit:kill"}
    code = (
        f"from tests.test_checkpointer import crashing_run as r; "
        f"r({repo_id!r}, {local_hub.url!r}, {str(spool)!r}, {background!r})"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=150)
    if background == "thread":
        assert proc.returncode == -9, proc.stderr[-3000:]
    else:  # the publishing process was killed; the training process is told, with what to do
        assert proc.returncode == 1, proc.stderr[-3000:]
        assert "publishing process exited (code -9)" in proc.stderr and "hubckpt resume" in proc.stderr

    seed_everything(1)
    model, optimizer, scheduler = make(seed=1)
    with hubckpt.Checkpointer(
        repo_id, model=model, optimizer=optimizer, scheduler=scheduler, hub=local_hub.url, spool_dir=spool
    ) as ckpt:
        resumed = ckpt.restore()  # finishes step 2 from the journal first; step 4 was only in memory
        assert resumed.step == 2
        assert ckpt.save(2).result().skipped
        train(model, optimizer, scheduler, 2, 4)
        ckpt.save(4)
    index = json.loads(Path(api.hf_hub_download(repo_id, "revisions.json")).read_text())
    assert [r["step"] for r in index["revisions"]] == [2, 4]
    commits = api.list_repo_commits(repo_id, revision="step-0000002")
    assert sum(1 for c in commits if "step-0000002" in c.title) == 1


@pytest.mark.timeout(120)
def test_a_transformers_model_is_published_with_its_config_so_load_model_builds_it(local_hub, tmp_path):
    """A Checkpointer of a PreTrainedModel publishes config.json: load_model / analyze can build the revision."""
    from transformers import GPT2LMHeadModel

    import hubckpt
    from tests.factories import tiny_gpt2_config

    torch.manual_seed(0)
    model = GPT2LMHeadModel(tiny_gpt2_config())
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    extra = tmp_path / "notes.txt"
    extra.write_text("run notes\n")
    repo_id = "alice/checkpointer-config"
    with hubckpt.Checkpointer(
        repo_id, model=model, optimizer=optimizer, hub=local_hub.url, companions=[extra], spool_dir=tmp_path / "spool"
    ) as ckpt:
        ckpt.save(3, final=True).result(timeout=60)
    files = hubckpt.hub_api(local_hub.url).list_repo_files(repo_id, revision="step-0000003")
    assert "config.json" in files and "notes.txt" in files
    loaded = hubckpt.load_model(repo_id, step=3, hub=local_hub.url)
    assert type(loaded).__name__ == "GPT2LMHeadModel"
    theirs = loaded.state_dict()
    for name, value in model.state_dict().items():
        assert torch.equal(theirs[name], value), name


@pytest.mark.timeout(120)
def test_a_step_whose_publishing_failed_is_not_reported_as_published_when_saved_again(local_hub, tmp_path):
    """The background publish of step 2 fails (the name is taken): saving step 2 again must try again,
    not answer `skipped` with a revision that does not exist."""
    import hubckpt

    repo_id = "alice/checkpointer-failed-step"
    model_b, optimizer_b, _ = make(seed=1)
    late = hubckpt.Checkpointer(
        repo_id, model=model_b, optimizer=optimizer_b, hub=local_hub.url, spool_dir=tmp_path / "late"
    )  # read the index while it was still empty
    model_a, optimizer_a, _ = make(seed=0)
    with hubckpt.Checkpointer(
        repo_id, model=model_a, optimizer=optimizer_a, hub=local_hub.url, spool_dir=tmp_path / "first"
    ) as first:
        first.save(2).result(timeout=60)
    with pytest.raises(hubckpt.RevisionCollisionError):
        late.save(2).result(timeout=60)
    again = late.save(2)
    with pytest.raises(hubckpt.RevisionCollisionError):  # tried again, failing the same way: not `skipped`
        again.result(timeout=60)
    late.close()


@pytest.mark.timeout(120)
@pytest.mark.parametrize("background", ["thread", "process"])
def test_a_final_save_of_a_step_saved_just_before_tags_it_final(local_hub, api, tmp_path, background):
    """The README's loop: periodic saves, then `save(steps, final=True)` of the step the loop saved last."""
    import hubckpt

    model, optimizer, scheduler = make(seed=0)
    repo_id = f"alice/checkpointer-final-{background}"
    with hubckpt.Checkpointer(
        repo_id,
        model=model,
        optimizer=optimizer,
        scheduler=scheduler,
        hub=local_hub.url,
        spool_dir=tmp_path / "spool",
        every=2,
        background=background,
    ) as ckpt:
        train(model, optimizer, scheduler, 0, 2)
        ckpt.save(2)
        ckpt.wait()
        assert ckpt.save(2, final=True).result(timeout=60).revision == "step-0000002"
    index = json.loads(Path(api.hf_hub_download(repo_id, "revisions.json")).read_text())
    assert index["final"] == "step-0000002"
    assert [r["step"] for r in index["revisions"]] == [2]
    tags = {t.name for t in api.list_repo_refs(repo_id).tags}
    assert "final" in tags
