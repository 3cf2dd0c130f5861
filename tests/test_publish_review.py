"""Seams of the publishing change found in review: what a crashed publish leaves behind stays invisible,
and the advice the errors give works."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file, save_file
from starlette.testclient import TestClient

import hubckpt
from hubckpt.publishing import Publisher

from .helpers import run_cli


def test_staging_branches_never_show_as_revisions(local_hub, api, tmp_path):
    """A kill between the staging commit and the revision branch leaves `hubckpt-staging-<name>`:
    listings, the refs fallback, `ls` and the web pages must not offer it as a revision."""
    from hubckpt.server.app import create_app

    # a hubckpt repo (with an index) ...
    repo_id = "alice/review-staging"
    with Publisher(repo_id, hub=local_hub.url, spool_dir=tmp_path / "spool") as pub:
        pub.publish(state_dict={"w": torch.ones(3)}, step=1)
    api.create_branch(repo_id, branch="hubckpt-staging-step-0000002", revision="step-0000001")
    assert {r.name for r in hubckpt.list_revisions(repo_id, hub=local_hub.url, refresh=True)} == {"step-0000001"}
    # ... and a repo without one (listed from its refs)
    plain = "alice/review-staging-plain"
    api.create_repo(plain, exist_ok=True)
    save_file({"w": torch.arange(3.0)}, tmp_path / "model.safetensors")
    api.upload_file(path_or_fileobj=tmp_path / "model.safetensors", path_in_repo="model.safetensors", repo_id=plain)
    api.create_branch(plain, branch="hubckpt-staging-step-0000009")
    assert {r.name for r in hubckpt.list_revisions(plain, hub=local_hub.url)} == {"main"}
    listing = run_cli("ls", plain, "--hub", local_hub.url)
    assert listing.returncode == 0 and "hubckpt-staging" not in listing.stdout, listing.stdout

    with TestClient(create_app(local_hub.ctx)) as client:
        page = client.get(f"/{repo_id}/compare/step-0000001...main").text
        assert "hubckpt-staging" not in page
        assert "hubckpt-staging" not in client.get(f"/{repo_id}").text


def test_staging_prefix_is_one_prefix_and_not_a_revision_name():
    import pytest

    from hubckpt import names
    from hubckpt.errors import HubckptError
    from hubckpt.hub import writer
    from hubckpt.revisions import validate_revision_name

    assert writer.STAGING_PREFIX == names.STAGING_PREFIX
    with pytest.raises(HubckptError, match="staging"):
        validate_revision_name("hubckpt-staging-step-1")  # it would be hidden from every listing


def test_collision_advice_delete_that_branch_first_works(local_hub, api, tmp_path):
    """RevisionCollisionError says "or delete that branch first": after deleting it, publishing the new
    content succeeds, and the branch and the index hold it."""
    import pytest

    from hubckpt.errors import RevisionCollisionError

    repo_id = "alice/review-collision"
    with Publisher(repo_id, hub=local_hub.url, spool_dir=tmp_path / "spool") as pub:
        pub.publish(state_dict={"w": torch.ones(4)}, step=5).result(timeout=60)
    with Publisher(repo_id, hub=local_hub.url, spool_dir=tmp_path / "spool2") as pub:
        with pytest.raises(RevisionCollisionError, match="delete that branch"):
            pub.publish(state_dict={"w": torch.full((4,), 2.0)}, step=5).result(timeout=60)
    api.delete_branch(repo_id, branch="step-0000005")
    with Publisher(repo_id, hub=local_hub.url, spool_dir=tmp_path / "spool3") as pub:
        pub.publish(state_dict={"w": torch.full((4,), 2.0)}, step=5).result(timeout=60)
    weights = load_file(
        api.hf_hub_download(repo_id, "model.safetensors", revision="step-0000005", cache_dir=tmp_path / "c")
    )
    assert torch.equal(weights["w"], torch.full((4,), 2.0))
    [info] = hubckpt.list_revisions(repo_id, hub=local_hub.url)
    assert info.commit == {b.name: b.target_commit for b in api.list_repo_refs(repo_id).branches}["step-0000005"]


def test_retention_never_deletes_a_branch_published_again_after_it_was_pruned(local_hub, api, tmp_path):
    """The index lists step-1 as pruned (at its old commit) while its branch was published again at a new
    commit and is not indexed yet (a publisher between its commit and index stages, `hubckpt prune`
    running meanwhile): retention must not delete that branch as a leftover of an interrupted prune."""
    from hubckpt.cards import CardOptions
    from hubckpt.hub.select import resolve_hub
    from hubckpt.hub.writer import HubTarget
    from hubckpt.publishing import stages

    repo_id = "alice/review-retain"
    with Publisher(repo_id, hub=local_hub.url, spool_dir=tmp_path / "spool") as pub:
        for step in (1, 2):
            pub.publish(state_dict={"w": torch.full((3,), float(step))}, step=step)
    target = HubTarget(resolve_hub(local_hub.url), repo_id)

    def mark_pruned(index):
        index.get("step-0000001").pruned = True
        return {"revisions.json": index.to_json()}, None, [], "prune step 1"

    target.update_main(mark_pruned)
    heads = target.branches()
    api.delete_branch(repo_id, branch="step-0000001")  # published again: the branch now at another commit
    api.create_branch(repo_id, branch="step-0000001", revision=heads["step-0000002"])
    stages.retire(target, [], CardOptions(), has_config=False)
    assert target.branches().get("step-0000001") == heads["step-0000002"]


@pytest.mark.timeout(120)
def test_trainer_callback_still_publishes_the_checkpoint_after_a_failed_one(local_hub, api, tmp_path):
    """The next on_save after a failed job used to raise the old failure from publish() before capturing:
    the new checkpoint was never published (and `save_total_limit` may delete it)."""
    from types import SimpleNamespace

    from hubckpt.integrations.transformers import HubckptCallback

    repo_id = "alice/review-callback"
    out = tmp_path / "out"
    (out / "checkpoint-2").mkdir(parents=True)
    (out / "checkpoint-2" / "model.safetensors").write_bytes(b"not safetensors at all")  # this job fails
    (out / "checkpoint-4").mkdir()
    save_file({"w": torch.full((3,), 4.0)}, out / "checkpoint-4" / "model.safetensors")
    callback = HubckptCallback(repo_id, hub=local_hub.url, spool_dir=tmp_path / "spool")
    args = SimpleNamespace(output_dir=str(out))

    def state(step):
        return SimpleNamespace(global_step=step, max_steps=4, is_world_process_zero=True, log_history=[])

    callback.on_train_begin(args, state(0), None)
    callback.on_save(args, state(2), None)
    assert callback._publisher._worker.wait(60)  # the failed job has run
    callback.on_save(args, state(4), None)
    callback.on_train_end(args, state(4), None)
    weights = load_file(
        api.hf_hub_download(repo_id, "model.safetensors", revision="step-0000004", cache_dir=tmp_path / "c")
    )
    assert torch.equal(weights["w"], torch.full((3,), 4.0))


@pytest.mark.timeout(30)
def test_a_submit_blocked_by_backpressure_is_refused_when_the_worker_stops():
    """A submit waiting for room used to queue its job anyway once the worker stopped meanwhile: its
    Future then never resolved (or the job ran after stop). It must be refused like any late submit."""
    import threading

    from hubckpt.errors import PublishError
    from hubckpt.publishing.worker import Worker

    gate = threading.Event()
    worker = Worker(lambda job: gate.wait(10), on_error=lambda j, e: None, max_pending=1)
    worker.submit("running")
    while worker.busy() and worker._current is None:
        pass
    worker.submit("queued")
    outcome = {}

    def blocked():
        try:
            outcome["future"] = worker.submit("late", block=True)[0]
        except PublishError as e:
            outcome["error"] = e

    thread = threading.Thread(target=blocked)
    thread.start()
    thread.join(0.3)
    assert thread.is_alive()  # backpressure: it waits
    worker.stop(0, drain=False)
    thread.join(5)
    gate.set()
    assert worker.stop(5, drain=False)
    assert "error" in outcome, f"the late job was queued after stop: {outcome}"


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_cli_run_with_one_corrupt_checkpoint_publishes_all_the_others(local_hub, api, tmp_path):
    """A corrupt checkpoint early in a run fails its own job; every other checkpoint is still published."""
    run = tmp_path / "run"
    run.mkdir()
    (run / "ckpt-1.pt").write_bytes(b"garbage")
    for step in range(2, 7):
        torch.save({"w": torch.full((4,), float(step))}, run / f"ckpt-{step}.pt")
    repo_id = "alice/review-corrupt-run"
    result = run_cli("publish", str(run), "--repo", repo_id, "--hub", local_hub.url, "--spool", str(tmp_path / "spool"))
    assert result.returncode == 1
    assert result.stderr.count("ckpt-1.pt") == 1, result.stderr  # reported once
    branches = {b.name for b in api.list_repo_refs(repo_id).branches}
    assert branches == {"main"} | {f"step-{s:07d}" for s in range(2, 7)}, (branches, result.stdout, result.stderr)
    for step in range(2, 7):
        weights = load_file(
            api.hf_hub_download(repo_id, "model.safetensors", revision=f"step-{step:07d}", cache_dir=tmp_path / "c")
        )
        assert torch.equal(weights["w"], torch.full((4,), float(step)))


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_replace_survives_a_kill_after_the_commit(local_hub, api, tmp_path):
    """publish(replace=True) killed after its commit landed: the resumed job must still replace (the
    flag was kept in memory only, so the resume failed for good with RevisionCollisionError while the
    branch already held the new weights and the index the old ones)."""
    import os
    import signal
    import subprocess
    import sys

    repo_id = "alice/review-replace"
    spool = tmp_path / "spool"
    with Publisher(repo_id, hub=local_hub.url, spool_dir=spool) as pub:
        pub.publish(state_dict={"w": torch.ones(4)}, step=3).result(timeout=60)
    source = tmp_path / "new.pt"
    torch.save({"w": torch.full((4,), 9.0)}, source)
    script = (
        f"from hubckpt.publishing import Publisher\n"
        f"with Publisher({repo_id!r}, hub={local_hub.url!r}, spool_dir={str(spool)!r}) as pub:\n"
        f"    pub.publish({str(source)!r}, step=3, replace=True).result(timeout=60)\n"
    )
    killed = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        timeout=90,
        env={**os.environ, "HUBCKPT_FAULT": "publish.after_commit:kill"},
    )
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    with Publisher(repo_id, hub=local_hub.url, spool_dir=spool) as pub:  # resumes the job
        pass
    weights = load_file(
        api.hf_hub_download(repo_id, "model.safetensors", revision="step-0000003", cache_dir=tmp_path / "c")
    )
    assert torch.equal(weights["w"], torch.full((4,), 9.0))
    [info] = hubckpt.list_revisions(repo_id, hub=local_hub.url)
    assert info.commit == {b.name: b.target_commit for b in api.list_repo_refs(repo_id).branches}["step-0000003"]


@pytest.mark.timeout(30)
def test_stopping_an_idle_worker_gives_the_spool_up_before_returning():
    """`with Publisher(...)` left by an exception stops the worker with timeout 0: the spool lock (given up
    when the thread ends) was still held when __exit__ returned, so an immediate new Publisher on that
    spool got SpoolBusyError (seen as a flaky test_the_same_step_twice_in_one_process)."""
    import threading

    from hubckpt.publishing.worker import Worker

    for _ in range(20):
        released = threading.Event()
        worker = Worker(lambda job: job, on_error=lambda j, e: None, max_pending=1, on_exit=released.set)
        worker.submit("a")[0].result(timeout=10)
        assert worker.stop(0, drain=False)
        assert released.is_set()
