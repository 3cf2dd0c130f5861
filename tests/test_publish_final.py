"""A final save after a periodic save of the same step, however late it comes; background failures reach
the caller from wait() / close() in both background modes."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from hubckpt.errors import PublishFailedError
from hubckpt.publishing import Publisher, stages
from hubckpt.publishing.jobs import JobStore

from .helpers import run_cli


def _published(api, repo_id: str, cache: Path) -> tuple[dict, dict[str, str], dict[str, torch.Tensor]]:
    """The index on main, the tags, and the weights on main."""
    index = json.loads(Path(api.hf_hub_download(repo_id, "revisions.json", cache_dir=cache)).read_text())
    tags = {t.name: t.target_commit for t in api.list_repo_refs(repo_id).tags}
    weights = load_file(api.hf_hub_download(repo_id, "model.safetensors", cache_dir=cache))
    return index, tags, weights


def _assert_final(api, repo_id: str, cache: Path, name: str, weights: dict[str, torch.Tensor]) -> None:
    index, tags, on_main = _published(api, repo_id, cache)
    assert index["final"] == name, index
    assert [r["name"] for r in index["revisions"]] == [name]  # exactly one revision
    assert tags["final"] == index["revisions"][0]["commit"]
    for key, value in weights.items():
        assert torch.equal(on_main[key], value), key


class _Held:
    """Holds the worker inside a function of `stages` until `go` is set (a slowed stage, deterministically)."""

    def __init__(self, monkeypatch, obj, name: str) -> None:
        self.entered, self.go = threading.Event(), threading.Event()
        real = getattr(obj, name)

        def held(*args, **kwargs):
            self.entered.set()
            assert self.go.wait(60)
            return real(*args, **kwargs)

        monkeypatch.setattr(obj, name, held)


@pytest.mark.parametrize("when", ["at-once", "during-retention", "while-ending", "after"])
def test_a_final_save_after_a_periodic_one_marks_it_final_however_late(api, local_hub, tmp_path, monkeypatch, when):
    """The README's loop ending: `save(step, metrics=...)` then `save(step, final=True)` (other content: no
    metrics), with the final save landing in each window of the periodic job."""
    repo_id = f"alice/final-{when}"
    weights = {"w": torch.arange(6.0)}
    held = None
    if when == "during-retention":  # after the index stage read the job's `final` flag
        held = _Held(monkeypatch, stages, "retain")
    elif when == "while-ending":  # past the job's last look at the mark
        held = _Held(monkeypatch, JobStore, "done")
    with Publisher(repo_id, hub=local_hub.url, spool_dir=tmp_path / "spool", keep_last=3) as pub:
        periodic = pub.publish(state_dict=weights, step=5, metrics={"loss": 0.5})
        if held is not None:
            assert held.entered.wait(60)
            threading.Timer(0.5, held.go.set).start()  # (the final save may wait for the job to end)
        elif when == "after":
            periodic.result(timeout=60)
        final = pub.publish(state_dict={"w": torch.zeros(6)}, step=5, final=True)
        assert final.result(timeout=60).revision == "step-0000005"
        if held is not None:
            held.go.set()
    _assert_final(api, repo_id, tmp_path / "c", "step-0000005", weights)
    index, _, _ = _published(api, repo_id, tmp_path / "c")
    assert index["revisions"][0]["metrics"] == {"loss": 0.5}  # the revision as published, not the final save's
    listing = run_cli("jobs", repo_id, "--spool", str(tmp_path / "spool"))
    assert "FAILED" not in listing.stdout and "published" in listing.stdout, listing.stdout


def test_a_final_save_in_a_new_process_marks_the_published_revision_final(api, local_hub, tmp_path):
    """The periodic save published by another process (another spool): the final save needs no new content."""
    repo_id = "alice/final-elsewhere"
    weights = {"w": torch.arange(4.0)}
    with Publisher(repo_id, hub=local_hub.url, spool_dir=tmp_path / "a") as pub:
        pub.publish(state_dict=weights, step=3, metrics={"loss": 1.0})
    with Publisher(repo_id, hub=local_hub.url, spool_dir=tmp_path / "b") as pub:
        pub.publish(state_dict={"w": torch.ones(4)}, step=3, final=True)
    _assert_final(api, repo_id, tmp_path / "c", "step-0000003", weights)


@pytest.mark.slow
@pytest.mark.timeout(180)
@pytest.mark.parametrize("background", ["thread", "process"])
@pytest.mark.parametrize("when", ["at-once", "during-retention", "after"])
def test_checkpointer_final_save_after_the_loop(api, local_hub, tmp_path, monkeypatch, background, when):
    """The README's Checkpointer loop, in both background modes."""
    import hubckpt

    from .test_checkpointer import make, train

    if when == "during-retention":  # the job held after its index stage (the child inherits it)
        monkeypatch.setenv("HUBCKPT_FAULT", "publish.after_index:sleep:2")
    repo_id = f"alice/ckpt-final-{background}-{when}"
    model, optimizer, scheduler = make(seed=0)
    with hubckpt.Checkpointer(
        repo_id,
        model=model,
        optimizer=optimizer,
        scheduler=scheduler,
        hub=local_hub.url,
        spool_dir=tmp_path / "spool",
        every=2,
        background=background,
        keep_last=2,
    ) as ckpt:
        train(model, optimizer, scheduler, 0, 2)
        periodic = ckpt.save(2, metrics={"loss": 0.25})
        if when == "after":
            periodic.result(timeout=60)
        elif when == "during-retention":
            # wait until the job is past its index stage (the index lists the step), then save final
            for _ in range(200):
                try:
                    index = json.loads(
                        Path(api.hf_hub_download(repo_id, "revisions.json", cache_dir=tmp_path / "poll")).read_text()
                    )
                    if index["revisions"]:
                        break
                except Exception:  # noqa: BLE001 - not there yet
                    pass
                threading.Event().wait(0.05)
        ckpt.save(2, final=True)
    expected = {k: v.detach().clone() for k, v in model.state_dict().items()}
    index, tags, on_main = _published(api, repo_id, tmp_path / "c")
    assert index["final"] == "step-0000002" and [r["step"] for r in index["revisions"]] == [2]
    assert tags["final"] == index["revisions"][0]["commit"]
    for key, value in expected.items():
        assert torch.equal(on_main[key], value), key


def test_a_background_failure_raises_from_close_naming_the_steps(local_hub, tmp_path):
    """A collision found in the background, never looked at through its Future: close() raises it, typed."""
    repo_id = "alice/fails-in-background"
    with Publisher(repo_id, hub=local_hub.url, spool_dir=tmp_path / "a") as pub:
        pub.publish(state_dict={"w": torch.ones(2)}, step=1)
    pub = Publisher(repo_id, hub=local_hub.url, spool_dir=tmp_path / "b")
    failed = pub.publish(state_dict={"w": torch.zeros(2)}, step=1)
    pub.publish(state_dict={"w": torch.zeros(2)}, step=2)
    with pytest.raises(PublishFailedError, match="step-0000001") as raised:
        pub.close()
    assert [(f["revision"], f["step"], f["error"]) for f in raised.value.failures] == [
        ("step-0000001", 1, "RevisionCollisionError")
    ]
    assert isinstance(raised.value.__cause__, hubckpt_errors().RevisionCollisionError)
    assert failed.exception() is raised.value.__cause__


def hubckpt_errors():
    import hubckpt.errors

    return hubckpt.errors


@pytest.fixture(scope="module")
def read_only(tmp_path_factory):
    """A hub with accounts, and a read-only token of alice's."""
    from hubckpt.server import LocalHubServer

    with LocalHubServer(tmp_path_factory.mktemp("ro-hub")) as hub:
        store = hub.ctx.store
        store.add_account("alice", "user")
        yield hub, store.create_token("alice", "read", "laptop")[1]


@pytest.mark.parametrize("background", ["publisher", "thread", "process"])
def test_a_read_only_token_raises_from_close(read_only, tmp_path, background):
    import hubckpt

    hub, token = read_only
    if background == "publisher":
        pub = Publisher("alice/ro", hub=hub.url, token=token, spool_dir=tmp_path / "spool")
        future = pub.publish(state_dict={"w": torch.ones(2)}, step=1)
        with pytest.raises(PublishFailedError) as raised:
            pub.close()
    else:
        from torch import nn

        model = nn.Linear(2, 2)
        ckpt = hubckpt.Checkpointer(
            "alice/ro", model=model, hub=hub.url, token=token, spool_dir=tmp_path / "spool", background=background
        )
        future = ckpt.save(1)
        with pytest.raises(PublishFailedError) as raised:
            ckpt.close()
    assert future.exception() is not None
    (failure,) = raised.value.failures
    assert failure["step"] == 1
    assert "403" in failure["message"] or "read" in failure["message"].lower(), failure  # the token's role
    assert "step-0000001" in str(raised.value) and "hubckpt jobs alice/ro" in str(raised.value)


@pytest.mark.parametrize("background", ["thread", "process"])
def test_the_staging_buffers_are_ready_when_the_checkpointer_is(local_hub, tmp_path, background):
    """A save right after construction (a step-0 checkpoint) must not wait for the buffers to fault in."""
    from torch import nn

    import hubckpt

    model = nn.Linear(2048, 4096)  # 32 MiB: tens of milliseconds of page faults
    ckpt = hubckpt.Checkpointer(
        "alice/first-save", model=model, hub=local_hub.url, spool_dir=tmp_path / "spool", background=background
    )
    try:
        assert ckpt._pool._todo.unfinished_tasks == 0  # allocated and touched before the constructor returned
        (staging_set,) = ckpt._pool._sets
        assert {"model/weight", "model/bias"} <= set(staging_set.buffers)
    finally:
        ckpt.close()


def test_a_script_exiting_without_close_says_what_failed(local_hub, tmp_path):
    """No close(): the failure found in the background is logged at exit (not silently lost)."""
    import subprocess
    import sys

    repo_id = "alice/exit-unclosed"
    with Publisher(repo_id, hub=local_hub.url, spool_dir=tmp_path / "a") as pub:
        pub.publish(state_dict={"w": torch.ones(2)}, step=1)
    script = f"""
import torch
from concurrent import futures
from hubckpt.publishing import Publisher
pub = Publisher({repo_id!r}, hub={local_hub.url!r}, spool_dir={str(tmp_path / "b")!r})
futures.wait([pub.publish(state_dict={{"w": torch.zeros(2)}}, step=1)])  # fails: another content
"""
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert "exiting: 1 checkpoint(s) not published: step-0000001" in done.stderr, done.stderr
    assert "RevisionCollisionError" in done.stderr


def test_jobs_does_not_list_a_published_revision_as_failed(tmp_path):
    """A job whose revision is on the hub (committed, indexed) and whose later step failed is not FAILED."""
    spool = tmp_path / "spool"
    store = JobStore(spool)
    job = "000000000060-step-0000060"
    store.capture(job, {"revision": "step-0000060", "step": 60, "targets": ["t"]})
    store.committed(job, "t", "abc")
    store.indexed(job, "t")
    store.failed(job, "HfHubHTTPError: 500 moving tag final", retryable=False)
    store.release()
    listing = run_cli("jobs", "alice/listed", "--spool", str(spool))
    line = next(row for row in listing.stdout.splitlines() if "step-0000060" in row)
    assert "FAILED" not in line and "published; then failed" in line and "500 moving tag" in line, line
