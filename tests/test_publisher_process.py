"""The Checkpointer's publishing process: captures cross in shared memory, and survive the training process."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from torch import nn

from tests.test_checkpointer import ROOT, make, train


def test_published_values_are_those_captured_even_if_the_model_changes_right_after(local_hub, api, tmp_path):
    import hubckpt
    from safetensors.torch import load_file

    model, optimizer, scheduler = make(seed=0)
    with hubckpt.Checkpointer("alice/proc-values", model=model, optimizer=optimizer, scheduler=scheduler,
                              hub=local_hub.url, spool_dir=tmp_path / "spool", background="process") as ckpt:
        assert ckpt.background == "process" and ckpt.nice == 10
        train(model, optimizer, scheduler, 0, 2)
        expected = {k: v.clone() for k, v in model.state_dict().items()}
        future = ckpt.save(2)
        with torch.no_grad():  # the training loop goes on writing into the live weights at once
            for p in model.parameters():
                p.add_(1.0)
        published = future.result(timeout=60)
    assert published.revision == "step-0000002" and not published.skipped
    weights = load_file(api.hf_hub_download("alice/proc-values", "model.safetensors", revision="step-0000002"))
    assert weights.keys() == expected.keys()
    assert all(torch.equal(weights[k], expected[k]) for k in expected)
    state = json.loads(Path(api.hf_hub_download("alice/proc-values", "training_state/loop.json",
                                                revision="step-0000002")).read_text())
    assert state["state"]["step"] == 2


def killed_after_save(repo_id: str, endpoint: str, spool: str) -> None:
    """Subprocess: saves step 3, then is SIGKILLed at once (before the publish can have finished)."""
    import hubckpt

    model, optimizer, scheduler = make(seed=0)
    ckpt = hubckpt.Checkpointer(repo_id, model=model, optimizer=optimizer, scheduler=scheduler, hub=endpoint,
                                spool_dir=spool, background="process")
    train(model, optimizer, scheduler, 0, 3)
    torch.save(model.state_dict(), Path(spool).parent / "expected.pt")
    ckpt.save(3)
    ckpt._handoff.join()  # handed to the publishing process: all a training loop has to wait for
    print(ckpt.publisher._process.pid, flush=True)
    os.kill(os.getpid(), signal.SIGKILL)


@pytest.mark.timeout(120)
def test_a_step_saved_just_before_the_training_process_is_killed_is_still_published(local_hub, api, tmp_path):
    repo_id, spool = "alice/proc-orphan", tmp_path / "spool"
    code = (f"from tests.test_publisher_process import killed_after_save as k; "
            f"k({repo_id!r}, {local_hub.url!r}, {str(spool)!r})")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=90,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert proc.returncode == -9, proc.stderr[-3000:]
    child = int(proc.stdout.split()[-1])
    deadline = time.monotonic() + 60
    while Path(f"/proc/{child}").exists() and time.monotonic() < deadline:  # the orphan finishes, then exits
        time.sleep(0.2)
    assert not Path(f"/proc/{child}").exists(), "the publishing process did not exit after publishing"
    from safetensors.torch import load_file

    expected = torch.load(tmp_path / "expected.pt", weights_only=True)
    weights = load_file(api.hf_hub_download(repo_id, "model.safetensors", revision="step-0000003"))
    assert all(torch.equal(weights[k], expected[k]) for k in expected)
    index = json.loads(Path(api.hf_hub_download(repo_id, "revisions.json")).read_text())
    assert [r["step"] for r in index["revisions"]] == [3]


def test_options_that_cannot_cross_to_the_process_get_a_clear_error(local_hub, tmp_path):
    import hubckpt
    from hubckpt.hubs import resolve_hub

    model = nn.Linear(2, 2)
    with pytest.raises(hubckpt.HubConfigError, match="background='thread'"):
        hubckpt.Checkpointer("alice/proc-bad", model=model, hub=resolve_hub(local_hub.url),
                             spool_dir=tmp_path / "s", background="process")
    with pytest.raises(hubckpt.HubConfigError, match="'process' or 'thread'"):
        hubckpt.Checkpointer("alice/proc-bad", model=model, hub=local_hub.url, background="fork")


def test_an_error_of_the_publisher_reaches_the_caller_with_its_type(local_hub, tmp_path):
    """The child's Publisher refuses a busy spool: the same SpoolBusyError as in-process, at construction."""
    import hubckpt

    spool = tmp_path / "spool"
    with hubckpt.Publisher("alice/proc-busy", hub=local_hub.url, spool_dir=spool):
        with pytest.raises(hubckpt.SpoolBusyError, match="pid"):
            hubckpt.Checkpointer("alice/proc-busy", model=nn.Linear(2, 2), hub=local_hub.url, spool_dir=spool,
                                 background="process")
