"""SIGKILL the publisher at each stage; the next start finishes the job: every revision exactly once."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import pytest
import torch
from huggingface_hub import HfApi

from hubckpt.revisions import RevisionIndex

from .helpers import run_cli

STAGES = ["publish.after_capture", "publish.after_convert", "publish.after_commit", "publish.after_index"]


def _make_run(folder):
    folder.mkdir()
    for step in (1, 2, 3):
        torch.save({"w": torch.full((8,), float(step)), "b": torch.ones(2)}, folder / f"ckpt-{step}.pt")
    return folder


@pytest.mark.slow
@pytest.mark.parametrize("stage", STAGES)
def test_kill_at_each_stage_then_resume(local_hub, tmp_path, stage):
    run = _make_run(tmp_path / "run")
    repo_id = f"alice/crash-{stage.split('.')[-1].replace('_', '-')}"
    spool = tmp_path / "spool"
    args = ["publish", str(run), "--repo", repo_id, "--hub", local_hub.url, "--spool", str(spool)]
    killed = subprocess.run([sys.executable, "-m", "hubckpt", *args], capture_output=True, text=True, timeout=120,
                            env={**os.environ, "HUBCKPT_FAULT": f"{stage}:kill"})
    assert killed.returncode == -signal.SIGKILL, killed.stdout + killed.stderr

    resumed = run_cli("resume", "--repo", repo_id, "--hub", local_hub.url, "--spool", str(spool))
    assert resumed.returncode == 0, resumed.stderr
    again = run_cli(*args)  # and anything the killed run never captured
    assert again.returncode == 0, again.stderr

    api = HfApi(endpoint=local_hub.url, token="x")
    index = RevisionIndex.from_json(open(api.hf_hub_download(repo_id, "revisions.json",
                                                             cache_dir=tmp_path / "c"), "rb").read())
    assert [r.name for r in index.revisions] == ["step-0000001", "step-0000002", "step-0000003"]
    titles = [c.title for c in api.list_repo_commits(repo_id, revision="step-0000003")]
    for step in (1, 2, 3):
        assert titles.count(f"Checkpoint step-000000{step} (step {step})") == 1, titles
    heads = {b.name: b.target_commit for b in api.list_repo_refs(repo_id).branches}
    assert all(r.commit == heads[r.name] for r in index.revisions)
    assert not list((spool / "jobs").glob("*/revision"))  # spool cleaned once published
