"""SIGKILL the publisher — at each stage, and at random moments for many rounds — then a clean run publishes
every revision exactly once: one commit each on its branch, listed once in the index, tags right, nothing hangs.

The random test is seeded: it prints its seed, and `HUBCKPT_CRASH_SEED=<seed>` replays a failing run.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch
from huggingface_hub import HfApi
from safetensors.torch import load_file

from hubckpt.formats.index import RevisionIndex

from . import environment as test_env
from .helpers import run_cli

STAGES = ["publish.after_capture", "publish.after_convert", "publish.after_commit", "publish.after_index"]
# Fault points a random round may pick instead of a random delay (kills during retention and journal writes too).
FAULTS = (
    STAGES
    + ["publish.retain.after_delete", "publish.after_retain"]
    + [f"journal.append:torn:{n}" for n in (1, 2, 3, 5, 8, 13)]
)


def _make_run(folder: Path, steps=(1, 2, 3)) -> Path:
    folder.mkdir()
    for step in steps:
        torch.save(_cli_weights(step), folder / f"ckpt-{step}.pt")
    return folder


def _cli_weights(step: int) -> dict[str, torch.Tensor]:
    return {"w": torch.full((8,), float(step)), "b": torch.ones(2) * step}


def _index(api: HfApi, repo_id: str, cache: Path) -> RevisionIndex:
    return RevisionIndex.from_json(open(api.hf_hub_download(repo_id, "revisions.json", cache_dir=cache), "rb").read())


@pytest.mark.slow
@pytest.mark.timeout(240)
@pytest.mark.parametrize("stage", STAGES)
def test_kill_at_each_stage_then_resume(local_hub, tmp_path, stage):
    run = _make_run(tmp_path / "run")
    repo_id = f"alice/crash-{stage.split('.')[-1].replace('_', '-')}"
    spool = tmp_path / "spool"
    args = ["publish", str(run), "--repo", repo_id, "--hub", local_hub.url, "--spool", str(spool)]
    killed = subprocess.run(
        [sys.executable, "-m", "hubckpt", *args],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "HUBCKPT_FAULT": f"{stage}:kill"},
    )
    assert killed.returncode == -signal.SIGKILL, killed.stdout + killed.stderr

    resumed = run_cli("resume", "--repo", repo_id, "--hub", local_hub.url, "--spool", str(spool))
    assert resumed.returncode == 0, resumed.stderr
    again = run_cli(*args)  # and anything the killed run never captured
    assert again.returncode == 0, again.stderr

    api = HfApi(endpoint=local_hub.url, token="x")
    index = _index(api, repo_id, tmp_path / "c")
    assert [r.name for r in index.revisions] == ["step-0000001", "step-0000002", "step-0000003"]
    titles = [c.title for c in api.list_repo_commits(repo_id, revision="step-0000003")]
    for step in (1, 2, 3):
        assert titles.count(f"Checkpoint step-000000{step} (step {step})") == 1, titles
    heads = {b.name: b.target_commit for b in api.list_repo_refs(repo_id).branches}
    assert all(r.commit == heads[r.name] for r in index.revisions)
    assert not list((spool / "jobs").glob("*/revision"))  # spool cleaned once published


# -- random kills -----------------------------------------------------------------------------------

LIVE_STEPS = (1, 2, 3, 4, 5)
LIVE_LOSSES = {1: 3.0, 2: 1.0, 3: 2.5, 4: 2.0, 5: 1.5}  # best: step 2; final: step 5

LIVE_SCRIPT = textwrap.dedent("""
    import sys, torch
    from hubckpt.publishing import Publisher

    url, spool, repo = sys.argv[1:4]
    losses = {1: 3.0, 2: 1.0, 3: 2.5, 4: 2.0, 5: 1.5}
    model = {"w": torch.zeros(64), "b": torch.zeros(4)}
    with Publisher(repo, hub=url, spool_dir=spool, monitor="eval_loss", keep_last=2, max_pending=1) as pub:
        for step in sorted(losses):
            model["w"].fill_(float(step))          # the training loop changes the live tensors in place
            model["b"].copy_(torch.arange(4.0) * step)
            pub.publish(state_dict=model, step=step, metrics={"eval_loss": losses[step]}, final=step == 5)
""")


def _live_weights(step: int) -> dict[str, torch.Tensor]:
    return {"w": torch.full((64,), float(step)), "b": torch.arange(4.0) * step}


def _run_killed(cmd: list[str], rng: random.Random, log: list[str], timeout: float = 90) -> None:
    """One round: a fault point, or a SIGKILL after a random delay; never longer than `timeout`."""
    env = {**os.environ}
    env.pop("HUBCKPT_FAULT", None)
    if rng.random() < 0.5:
        fault = rng.choice(FAULTS)
        env["HUBCKPT_FAULT"] = fault if fault.startswith("journal.") else f"{fault}:kill"
        how, delay = f"fault {fault}", timeout
    else:
        delay = rng.uniform(0.3, 6.0)
        how = f"SIGKILL after {delay:.2f}s"
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
    try:
        proc.wait(timeout=delay)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=30)
    log.append(f"{how}: rc={proc.returncode}")
    if proc.returncode not in (0, -signal.SIGKILL):  # anything else is a bug, not a crash we caused
        raise AssertionError(f"round ended with {proc.returncode}: {proc.stderr.read().decode()[-2000:]}\n{log}")
    proc.stderr.close()


def _rounds(cmd: list[str], rng: random.Random, budget_s: float, log: list[str], min_rounds=3, max_rounds=8) -> None:
    started = time.monotonic()
    for n in range(max_rounds):
        if n >= min_rounds and time.monotonic() - started > budget_s:
            break
        _run_killed(cmd, rng, log)


def _assert_published(
    api: HfApi, repo_id: str, steps, live: set[int], expected, cache: Path, *, best: int | None, final: int
) -> None:
    names = {s: f"step-{s:07d}" for s in steps}
    index = _index(api, repo_id, cache)
    assert [r.name for r in index.revisions] == [names[s] for s in steps]  # each listed once, in order
    assert {r.step for r in index.live()} == live
    refs = api.list_repo_refs(repo_id)
    heads = {b.name: b.target_commit for b in refs.branches}
    assert set(heads) == {"main"} | {names[s] for s in live}, heads  # no pruned or staging branch left
    for step in live:
        info = index.get(names[step])
        assert heads[info.name] == info.commit
        titles = [c.title for c in api.list_repo_commits(repo_id, revision=info.name)]
        assert titles.count(f"Checkpoint {info.name} (step {step})") == 1, titles
        published = load_file(api.hf_hub_download(repo_id, "model.safetensors", revision=info.name, cache_dir=cache))
        assert all(torch.equal(published[k], v) for k, v in expected(step).items()), info.name
    tags = {t.name: t.target_commit for t in refs.tags}
    assert index.final == names[final] and tags["final"] == heads[names[final]]
    if best is not None:
        assert index.best == names[best] and tags["best"] == heads[names[best]]
    on_main = load_file(api.hf_hub_download(repo_id, "model.safetensors", cache_dir=cache))
    assert all(torch.equal(on_main[k], v) for k, v in expected(final).items())


@pytest.mark.slow
@pytest.mark.timeout(420)
def test_random_kills_then_a_clean_run_publish_everything_exactly_once(local_hub, tmp_path):
    seed = test_env.crash_seed()
    print(f"random crash test seed: {seed} (replay: HUBCKPT_CRASH_SEED={seed})")
    rng = random.Random(seed)
    budget = test_env.crash_budget_s()
    api = HfApi(endpoint=local_hub.url, token="x")
    log: list[str] = []

    # `hubckpt publish RUN`: four checkpoints on disk, keep the last two, the last one final.
    run = _make_run(tmp_path / "run", steps=(1, 2, 3, 4))
    cli_repo = f"alice/random-cli-{seed}"
    cli = [
        sys.executable,
        "-m",
        "hubckpt",
        "publish",
        str(run),
        "--repo",
        cli_repo,
        "--hub",
        local_hub.url,
        "--spool",
        str(tmp_path / "cli-spool"),
        "--keep-last",
        "2",
        "--final",
    ]
    _rounds(cli, rng, budget, log)
    clean = subprocess.run(
        cli,
        capture_output=True,
        text=True,
        timeout=120,
        env={k: v for k, v in os.environ.items() if k != "HUBCKPT_FAULT"},
    )
    assert clean.returncode == 0, f"seed {seed}: {clean.stderr}\n{log}"
    _assert_published(api, cli_repo, (1, 2, 3, 4), {3, 4}, _cli_weights, tmp_path / "c1", best=None, final=4)

    # A Python Publisher with live tensors changed in place by the "training loop" after each capture.
    script = tmp_path / "train.py"
    script.write_text(LIVE_SCRIPT)
    live_repo = f"alice/random-live-{seed}"
    live = [sys.executable, str(script), local_hub.url, str(tmp_path / "live-spool"), live_repo]
    _rounds(live, rng, budget, log)
    clean = subprocess.run(
        live,
        capture_output=True,
        text=True,
        timeout=120,
        env={k: v for k, v in os.environ.items() if k != "HUBCKPT_FAULT"},
    )
    assert clean.returncode == 0, f"seed {seed}: {clean.stderr}\n{log}"
    _assert_published(api, live_repo, LIVE_STEPS, {2, 4, 5}, _live_weights, tmp_path / "c2", best=2, final=5)
    print("\n".join(log))


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_kill_during_retention_then_resume_deletes_what_it_pruned(local_hub, tmp_path):
    """Bug: the index marked revisions pruned before deleting their branches; a kill left the branches forever.

    Retention is now marked in the update of `main` that lists the new revision (no commit of its own), and
    the branches go after it: a kill in between leaves branches of pruned revisions, which the next pass
    deletes. At no point does the index list a live revision whose branch is gone."""
    run = _make_run(tmp_path / "run")
    repo_id = "alice/crash-retention"
    args = [
        "publish",
        str(run),
        "--repo",
        repo_id,
        "--hub",
        local_hub.url,
        "--spool",
        str(tmp_path / "spool"),
        "--keep-last",
        "1",
    ]
    killed = subprocess.run(
        [sys.executable, "-m", "hubckpt", *args],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "HUBCKPT_FAULT": "publish.retain.after_delete:kill"},
    )
    assert killed.returncode == -signal.SIGKILL, killed.stdout + killed.stderr
    api = HfApi(endpoint=local_hub.url, token="x")
    index = _index(api, repo_id, tmp_path / "c0")
    branches = {b.name for b in api.list_repo_refs(repo_id).branches}
    assert all(r.name in branches for r in index.revisions if not r.pruned)  # never deleted before it is marked
    assert any(r.pruned and r.name not in branches for r in index.revisions)  # killed after deleting one

    again = run_cli(*args)
    assert again.returncode == 0, again.stderr
    index = _index(api, repo_id, tmp_path / "c1")
    assert [(r.name, r.pruned) for r in index.revisions] == [
        ("step-0000001", True),
        ("step-0000002", True),
        ("step-0000003", False),
    ]
    assert {b.name for b in api.list_repo_refs(repo_id).branches} == {"main", "step-0000003"}
