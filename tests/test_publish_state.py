"""The publisher's state model: per-hub job state, one queue entry per job, the spool lock, failed jobs, journal."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest
import torch
from huggingface_hub import HfApi
from safetensors.torch import load_file

from hubckpt.errors import CorruptCheckpointError, PublishFailedError, RevisionCollisionError, SpoolBusyError
from hubckpt.formats.index import RevisionIndex
from hubckpt.publishing import Publisher
from hubckpt.publishing.journal import Journal

from .helpers import run_cli

pytestmark = pytest.mark.timeout(180)


def _index(api: HfApi, repo_id: str, cache: Path) -> RevisionIndex:
    return RevisionIndex.from_json(open(api.hf_hub_download(repo_id, "revisions.json", cache_dir=cache), "rb").read())


def _weights(api: HfApi, repo_id: str, revision: str, cache: Path) -> dict[str, torch.Tensor]:
    return load_file(api.hf_hub_download(repo_id, "model.safetensors", revision=revision, cache_dir=cache))


def _titles(api: HfApi, repo_id: str, revision: str) -> list[str]:
    return [c.title for c in api.list_repo_commits(repo_id, revision=revision)]


def _make_run(folder: Path, steps=(1, 2, 3)) -> Path:
    folder.mkdir()
    for step in steps:
        torch.save({"w": torch.full((8,), float(step)), "b": torch.arange(2.0) + step}, folder / f"ckpt-{step}.pt")
    return folder


def _assert_complete(api: HfApi, repo_id: str, run: Path, steps, cache: Path) -> None:
    """Every step listed once, its branch at the listed commit, one commit each, the source's values."""
    index = _index(api, repo_id, cache)
    names = [f"step-{s:07d}" for s in steps]
    assert [r.name for r in index.revisions] == names
    heads = {b.name: b.target_commit for b in api.list_repo_refs(repo_id).branches}
    for step, info in zip(steps, index.revisions):
        assert heads[info.name] == info.commit
        assert _titles(api, repo_id, info.name).count(f"Checkpoint {info.name} (step {step})") == 1
        source = torch.load(run / f"ckpt-{step}.pt", weights_only=True)
        published = _weights(api, repo_id, info.name, cache)
        assert all(torch.equal(source[k], published[k]) for k in source), info.name


@pytest.mark.slow
def test_a_second_hub_and_a_recreated_repo_get_everything(tmp_path):
    """Bug: the spool said "3 already published" for a hub that held nothing."""
    from hubckpt.server import LocalHubServer

    run = _make_run(tmp_path / "run")
    spool = tmp_path / "spool"
    repo_id = "alice/second-hub"
    with LocalHubServer(tmp_path / "h1") as h1, LocalHubServer(tmp_path / "h2") as h2:
        first = run_cli("publish", str(run), "--repo", repo_id, "--hub", h1.url, "--spool", str(spool))
        assert first.returncode == 0, first.stderr
        second = run_cli("publish", str(run), "--repo", repo_id, "--hub", h2.url, "--spool", str(spool))
        assert second.returncode == 0, second.stderr
        assert "0 already published, 3 to publish" in second.stdout
        api1, api2 = HfApi(endpoint=h1.url, token="x"), HfApi(endpoint=h2.url, token="x")
        _assert_complete(api2, repo_id, run, (1, 2, 3), tmp_path / "c2")

        # The same hub again: the journal and the hub agree, nothing to do and nothing converted.
        again = run_cli("publish", str(run), "--repo", repo_id, "--hub", h1.url, "--spool", str(spool))
        assert "3 already published, 0 to publish" in again.stdout

        # The repo deleted and created again: published again, in full.
        api1.delete_repo(repo_id)
        api1.create_repo(repo_id)
        with Publisher(repo_id, hub=h1.url, spool_dir=spool) as pub:
            results = [pub.publish(run / f"ckpt-{s}.pt", step=s).result() for s in (1, 2, 3)]
        assert not any(r.skipped for r in results)
        _assert_complete(api1, repo_id, run, (1, 2, 3), tmp_path / "c1")


def test_a_local_hub_is_one_target_by_its_data_folder(tmp_path):
    from hubckpt.hub.select import Hub
    from hubckpt.hub.writer import HubTarget
    from hubckpt.publishing.jobs import target_key
    from hubckpt.server import LocalHubServer

    with LocalHubServer(tmp_path / "hub") as hub:
        by_url = target_key(HubTarget(Hub(hub.url, "remote"), "alice/x"))
    with LocalHubServer(tmp_path / "hub") as hub:  # the same data folder on another port
        again = target_key(HubTarget(Hub(hub.url, "remote"), "alice/x"))
    local = target_key(HubTarget(Hub("http://127.0.0.1:1", "local", (tmp_path / "hub").resolve()), "alice/x"))
    assert by_url == again == local == f"local:{(tmp_path / 'hub').resolve()}/alice/x"
    assert target_key(HubTarget(Hub("https://huggingface.co", "remote"), "alice/x")) == "https://huggingface.co/alice/x"


def test_the_same_step_twice_in_one_process(api, local_hub, tmp_path):
    """A periodic save and a final save at the last step; then the same step again, changed and unchanged."""
    repo_id = "alice/twice"
    cache = tmp_path / "c"
    with Publisher(repo_id, hub=local_hub.url, spool_dir=tmp_path / "spool") as pub:
        weights = {"w": torch.arange(6.0)}
        first = pub.publish(state_dict=weights, step=5)
        second = pub.publish(state_dict=weights, step=5, final=True)  # joins the queued job
        assert second is first
        assert first.result(timeout=60).revision == "step-0000005"
        assert not first.result().skipped
        unchanged = pub.publish(state_dict=weights, step=5).result(timeout=60)
        assert unchanged.skipped
        changed = pub.publish(state_dict={"w": torch.zeros(6)}, step=5)
        with pytest.raises(RevisionCollisionError, match="step-0000005"):
            changed.result(timeout=60)
        pub.wait()  # reported once: the caller saw it through the Future
        unseen = pub.publish(state_dict={"w": torch.full((6,), 2.0)}, step=5)
        with pytest.raises(PublishFailedError, match="RevisionCollisionError"):
            pub.wait()  # not seen yet: raised here...
        pub.wait()  # ...and only once
        assert isinstance(unseen.exception(), RevisionCollisionError)
    index = _index(api, repo_id, cache)
    assert [r.name for r in index.revisions] == ["step-0000005"] and index.final == "step-0000005"
    assert _titles(api, repo_id, "step-0000005").count("Checkpoint step-0000005 (step 5)") == 1
    assert torch.equal(_weights(api, repo_id, "step-0000005", cache)["w"], torch.arange(6.0))
    tags = {t.name: t.target_commit for t in api.list_repo_refs(repo_id).tags}
    assert tags["final"] == index.revisions[0].commit

    # A new process (fresh Publisher, same spool) knows the step: a change is still a collision...
    with pytest.raises(RevisionCollisionError):
        with Publisher(repo_id, hub=local_hub.url, spool_dir=tmp_path / "spool") as pub:
            pub.publish(state_dict={"w": torch.ones(6)}, step=5).result(timeout=60)  # (raised by result())
    # ...unless the caller asks to replace it.
    with Publisher(repo_id, hub=local_hub.url, spool_dir=tmp_path / "spool") as pub:
        assert not pub.publish(state_dict={"w": torch.ones(6)}, step=5, replace=True).result(timeout=60).skipped
    assert torch.equal(_weights(api, repo_id, "step-0000005", tmp_path / "c2")["w"], torch.ones(6))
    assert [r.name for r in _index(api, repo_id, tmp_path / "c2").revisions] == ["step-0000005"]


def test_two_processes_on_one_spool(local_hub, tmp_path):
    spool = tmp_path / "spool"
    with Publisher("alice/owned", hub=local_hub.url, spool_dir=spool) as pub:
        pub.publish(state_dict={"w": torch.ones(2)}, step=1).result(timeout=60)
        sentinel = spool / "jobs" / "000000000009-step-0000009" / "revision"
        sentinel.mkdir(parents=True)
        (sentinel / "model.safetensors").write_bytes(b"staged")
        journal = (spool / "journal.jsonl").read_bytes()

        with pytest.raises(SpoolBusyError, match=f"pid {os.getpid()}") as info:
            Publisher("alice/owned", hub=local_hub.url, spool_dir=spool)
        assert info.value.pid == os.getpid()
        refused = run_cli("resume", "--repo", "alice/owned", "--hub", local_hub.url, "--spool", str(spool))
        assert refused.returncode == 1
        assert f"in use by pid {os.getpid()}" in refused.stderr and "Traceback" not in refused.stderr
        assert (sentinel / "model.safetensors").read_bytes() == b"staged"
        assert (spool / "journal.jsonl").read_bytes() == journal
    # Closed: the spool is free again.
    Publisher("alice/owned", hub=local_hub.url, spool_dir=spool, resume=False).close()


@pytest.mark.slow
def test_a_failed_job_is_reported_once_stays_visible_and_can_be_retried_or_dropped(api, local_hub, tmp_path):
    repo_id = "alice/failing"
    spool = tmp_path / "spool"
    bad = tmp_path / "checkpoint-7"
    bad.mkdir()
    (bad / "model.safetensors").write_bytes(b"\x08\x00\x00\x00\x00\x00\x00\x00{broken}")
    torch.save({"w": torch.ones(3)}, tmp_path / "w.pt")
    pub = Publisher(repo_id, hub=local_hub.url, spool_dir=spool)
    failed = pub.publish(bad)
    good = pub.publish(tmp_path / "w.pt", step=8)  # not blocked by the failure before it
    assert good.result(timeout=60).revision == "step-0000008"
    with pytest.raises(PublishFailedError, match="CorruptCheckpointError") as raised:
        pub.close()  # not looked at through its Future: close() reports it, once
    assert isinstance(raised.value.__cause__, CorruptCheckpointError)
    assert isinstance(failed.exception(), CorruptCheckpointError)

    # A later process is not poisoned by it...
    with Publisher(repo_id, hub=local_hub.url, spool_dir=spool) as later:
        later.publish(state_dict={"w": torch.zeros(2)}, step=9).result(timeout=60)
    resumed = run_cli("resume", "--repo", repo_id, "--hub", local_hub.url, "--spool", str(spool))
    assert resumed.returncode == 0, resumed.stderr
    assert "1 failed job(s) kept (step-0000007)" in resumed.stderr
    # ...and the job stays listed until retried or dropped.
    listing = run_cli("jobs", repo_id, "--spool", str(spool))
    assert listing.returncode == 0, listing.stderr
    line = next(row for row in listing.stdout.splitlines() if "step-0000007" in row)
    assert "FAILED" in line and "CorruptCheckpointError" in line
    assert "published" in next(row for row in listing.stdout.splitlines() if "step-0000008" in row)

    torch.save({"w": torch.full((3,), 7.0)}, bad / "pytorch_model.bin")  # the user fixes the checkpoint
    (bad / "model.safetensors").unlink()
    retried = run_cli("jobs", repo_id, "--spool", str(spool), "--retry", "step-0000007", "--hub", local_hub.url)
    assert retried.returncode == 0, retried.stderr
    assert torch.equal(_weights(api, repo_id, "step-0000007", tmp_path / "c")["w"], torch.full((3,), 7.0))

    bad2 = tmp_path / "checkpoint-11"
    bad2.mkdir()
    (bad2 / "model.safetensors").write_bytes(b"\x08\x00\x00\x00\x00\x00\x00\x00{broken}")
    with pytest.raises(PublishFailedError, match="CorruptCheckpointError"):
        with Publisher(repo_id, hub=local_hub.url, spool_dir=spool) as pub:
            pub.publish(bad2)
    dropped = run_cli("jobs", repo_id, "--spool", str(spool), "--drop", "step-0000011")
    assert dropped.returncode == 0, dropped.stderr
    assert "dropped" in next(
        row for row in run_cli("jobs", repo_id, "--spool", str(spool)).stdout.splitlines() if "step-0000011" in row
    )
    with Publisher(repo_id, hub=local_hub.url, spool_dir=spool) as pub:
        assert pub.pending() == []


def test_wait_and_close_take_a_timeout(local_hub, tmp_path):
    from hubckpt.errors import PublishError

    pub = Publisher("alice/timeout", hub=local_hub.url, spool_dir=tmp_path / "spool")
    pub.publish(state_dict={"w": torch.randn(256, 256)}, step=1)
    with pytest.raises(PublishError, match="still running"):
        pub.wait(timeout=0.0)
    pub.close(timeout=60)


# -- the journal ------------------------------------------------------------------------------------


def test_journal_recovers_a_torn_line_without_losing_the_next_record(tmp_path):
    path = tmp_path / "journal.jsonl"
    journal = Journal(path)
    journal.append("captured", "j1", revision="r1", step=1)
    with open(path, "ab") as f:
        f.write(b'{"event": "converted", "job": "j1", "manifest_sh')  # a kill in the middle of a write
    replayed = Journal(path).replay()
    assert replayed["j1"].manifest_sha256 is None
    journal = Journal(path)
    journal.replay()
    journal.append("converted", "j1", manifest_sha256="abc")
    assert Journal(path).replay()["j1"].manifest_sha256 == "abc"  # the record after the torn one survives


def test_journal_reads_glued_lines_and_skips_records_without_a_job(tmp_path):
    path = tmp_path / "journal.jsonl"
    path.write_bytes(
        b'{"event": "captured", "job": "j1", "revision": "r1", "step": 1}\n'
        b'{"event": "conv{"event": "published", "job": "j1", "target": "t"}\n'  # an older writer's damage
        b'{"event": "note"}\n'
        b"[1, 2]\n"
    )
    jobs = Journal(path).replay()
    assert list(jobs) == ["j1"] and jobs["j1"].published == {"t"}


def test_journal_compaction_keeps_every_jobs_state(tmp_path):
    from hubckpt.publishing.jobs import JobStore

    spool = tmp_path / "spool"
    journal = Journal(spool / "journal.jsonl")
    for i in range(150):
        job = f"{i:012d}-step-{i:07d}"
        journal.append("captured", job, revision=f"step-{i:07d}", step=i, source=None, targets=["t"])
        journal.append("converted", job, manifest_sha256=f"d{i}")
        journal.append("committed", job, target="t", commit=f"c{i}")
        journal.append("indexed", job, target="t")
        journal.append("published", job, target="t")
    journal.append("failed", f"{7:012d}-step-{7:07d}", error="boom", retryable=False)
    before = Journal(spool / "journal.jsonl").replay()
    store = JobStore(spool)  # compacts: 751 lines for 150 jobs
    store.release()
    lines = (spool / "journal.jsonl").read_bytes().splitlines()
    assert len(lines) == 150
    after = Journal(spool / "journal.jsonl").replay()

    def essentials(jobs):
        return {
            k: (v.revision, v.step, v.manifest_sha256, v.published, v.failed, v.finished_for(["t"]))
            for k, v in jobs.items()
        }

    assert essentials(after) == essentials(before)
    assert after[f"{7:012d}-step-{7:07d}"].failed == "boom"


def test_journal_replay_of_ten_thousand_finished_jobs_is_fast(tmp_path):
    path = tmp_path / "journal.jsonl"
    lines = []
    for i in range(10_000):
        state = {
            "captured": {"revision": f"step-{i:07d}", "step": i, "targets": ["t"], "source": f"/r/ckpt-{i}.pt"},
            "manifest_sha256": "0" * 64,
            "committed": {"t": "1" * 40},
            "indexed": ["t"],
            "published": ["t"],
        }
        lines.append(json.dumps({"event": "snapshot", "job": f"{i:012d}-step-{i:07d}", "state": state}))
    path.write_text("\n".join(lines) + "\n")
    best = min(_timed(lambda: Journal(path).replay()) for _ in range(3))
    assert best < 1.0, best  # aim (bench/journal.py): under 0.2 s on an idle machine


def _timed(action) -> float:
    started = time.perf_counter()
    action()
    return time.perf_counter() - started


@pytest.mark.slow
def test_trainer_callback_after_resume_from_checkpoint(api, local_hub, tmp_path, caplog):
    """The resumed Trainer saves step 4 again (and 6): each revision listed once, holding the resumed run's files."""
    import logging

    import transformers
    from transformers import GPT2LMHeadModel, Trainer, TrainingArguments

    from hubckpt.integrations.transformers import HubckptCallback

    from .factories import tiny_gpt2_config

    transformers.logging.set_verbosity_error()
    gen = torch.Generator().manual_seed(0)
    data = [
        {"input_ids": torch.randint(0, 32, (8,), generator=gen), "labels": torch.randint(0, 32, (8,), generator=gen)}
        for _ in range(16)
    ]
    out, repo_id = tmp_path / "out", "alice/resumed"

    def train(max_steps: int, resume: str | None = None) -> None:
        torch.manual_seed(0)
        args = TrainingArguments(
            output_dir=str(out),
            max_steps=max_steps,
            save_steps=2,
            per_device_train_batch_size=4,
            report_to=[],
            use_cpu=True,
            disable_tqdm=True,
            seed=0,
            logging_steps=1,
        )
        callback = HubckptCallback(repo_id, hub=local_hub.url, spool_dir=tmp_path / "spool")
        Trainer(model=GPT2LMHeadModel(tiny_gpt2_config()), args=args, train_dataset=data, callbacks=[callback]).train(
            resume_from_checkpoint=resume
        )

    train(4)
    with caplog.at_level(logging.ERROR, logger="hubckpt"):
        train(6, resume=str(out / "checkpoint-2"))
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR], caplog.text
    index = _index(api, repo_id, tmp_path / "c")
    assert [r.name for r in index.revisions] == ["step-0000002", "step-0000004", "step-0000006"]
    assert index.final == "step-0000006"
    heads = {b.name: b.target_commit for b in api.list_repo_refs(repo_id).branches}
    assert all(heads[r.name] == r.commit for r in index.revisions)
    for step in (4, 6):
        on_disk = load_file(out / f"checkpoint-{step}" / "model.safetensors")
        published = _weights(api, repo_id, f"step-{step:07d}", tmp_path / "c")
        assert all(torch.equal(on_disk[k], published[k]) for k in on_disk)


def test_worker_runs_each_job_once_survives_failures_and_never_waits_on_a_dead_thread():
    import threading

    from hubckpt.errors import PublishError
    from hubckpt.publishing.worker import Worker

    gate, runs = threading.Event(), []

    def process(job: str) -> str:
        gate.wait(10)
        runs.append(job)
        if job == "bad":
            raise ZeroDivisionError("boom")
        return job.upper()

    def on_error(job: str, error: BaseException) -> None:
        raise RuntimeError("recording the failure failed too")  # must not kill the worker

    worker = Worker(process, on_error=on_error, max_pending=4)
    first, queued = worker.submit("a")
    again, queued_again = worker.submit("a")  # queued or running: the same Future, not a second entry
    bad, _ = worker.submit("bad")
    last, _ = worker.submit("b")
    assert queued and not queued_again and again is first
    assert worker.wait(timeout=0.05) is False  # a timeout, not a hang
    gate.set()
    assert first.result(timeout=10) == "A" and last.result(timeout=10) == "B"
    assert isinstance(bad.exception(timeout=10), ZeroDivisionError)
    assert worker.wait(timeout=10) and runs == ["a", "bad", "b"]
    assert worker.stop(timeout=10)

    dead = Worker(process, on_error=lambda j, e: None, max_pending=1)
    dead.stop(timeout=10)
    with pytest.raises(PublishError, match="stopped"):
        dead.submit("x")
    dead._queue.append("x")  # a job left queued when the thread is gone
    with pytest.raises(PublishError, match="died"):
        dead.wait(timeout=10)


def test_prune_on_a_stale_index_never_deletes_what_the_current_index_keeps(api, local_hub, tmp_path, monkeypatch):
    """`hubckpt prune` racing a publisher: what it read first is stale; it re-reads before deleting."""
    import copy

    from hubckpt.hub.select import resolve_hub
    from hubckpt.hub.writer import HubTarget
    from hubckpt.publishing import Retention, maintenance

    repo_id = "alice/prune-race"
    with Publisher(repo_id, hub=local_hub.url, spool_dir=tmp_path / "spool", monitor="eval_loss") as pub:
        for step, loss in ((1, 1.0), (2, 2.0), (3, 3.0)):  # step 1 is best
            pub.publish(state_dict={"w": torch.full((2,), float(step))}, step=step, metrics={"eval_loss": loss})
    target = HubTarget(resolve_hub(local_hub.url), repo_id)
    stale = copy.deepcopy(maintenance.list_revisions(target))
    stale.best = None  # as read before the publisher recorded step 1 as best
    stale.monitor = None
    monkeypatch.setattr(maintenance, "list_revisions", lambda t: copy.deepcopy(stale))
    result = maintenance.prune(target, Retention(keep_last=1))
    assert result.pruned == ["step-0000002"]
    assert {b.name for b in api.list_repo_refs(repo_id).branches} == {"main", "step-0000001", "step-0000003"}
    index = _index(api, repo_id, tmp_path / "c")
    assert [r.name for r in index.live()] == ["step-0000001", "step-0000003"] and index.best == "step-0000001"


def test_a_published_step_published_again_as_final_becomes_final(api, local_hub, tmp_path):
    repo_id = "alice/late-final"
    with Publisher(repo_id, hub=local_hub.url, spool_dir=tmp_path / "spool") as pub:
        weights = {"w": torch.arange(3.0)}
        pub.publish(state_dict=weights, step=1).result(timeout=60)
        pub.publish(state_dict={"w": torch.ones(3)}, step=2).result(timeout=60)
        again = pub.publish(state_dict={"w": torch.ones(3)}, step=2, final=True).result(timeout=60)
    assert not again.skipped
    index = _index(api, repo_id, tmp_path / "c")
    assert index.final == "step-0000002"
    assert _titles(api, repo_id, "step-0000002").count("Checkpoint step-0000002 (step 2)") == 1
    on_main = load_file(api.hf_hub_download(repo_id, "model.safetensors", cache_dir=tmp_path / "c"))
    assert torch.equal(on_main["w"], torch.ones(3))


@pytest.mark.slow
def test_resume_after_a_kill_reconverts_lost_files_and_names_lost_live_tensors(api, local_hub, tmp_path):
    import shutil
    import subprocess
    import sys

    spool = tmp_path / "spool"

    def killed_at(fault: str, code: str) -> None:
        script = (
            f"import sys, torch\nfrom hubckpt.publishing import Publisher\n"
            f"pub = Publisher('alice/lost', hub=sys.argv[1], spool_dir=sys.argv[2])\n{code}\n"
        )
        proc = subprocess.run(
            [sys.executable, "-c", script, local_hub.url, str(spool)],
            capture_output=True,
            text=True,
            timeout=120,
            env={**os.environ, "HUBCKPT_FAULT": f"{fault}:kill"},
        )
        assert proc.returncode == -9, proc.stderr

    killed_at("publish.after_capture", "pub.publish(state_dict={'w': torch.ones(4)}, step=4)")  # live tensors
    torch.save({"w": torch.full((4,), 5.0)}, tmp_path / "ckpt-5.pt")
    killed_at("publish.after_convert", f"pub.publish({str(tmp_path / 'ckpt-5.pt')!r}, step=5).result()")
    staged = list(spool.glob("jobs/*/revision"))
    assert staged
    for folder in staged:  # the converted files are lost too (a cleaned cache, another disk)
        shutil.rmtree(folder)

    resumed = run_cli("resume", "--repo", "alice/lost", "--hub", local_hub.url, "--spool", str(spool))
    assert resumed.returncode == 0, resumed.stderr
    assert "1 failed job(s) kept (step-0000004)" in resumed.stderr
    listing = run_cli("jobs", "alice/lost", "--spool", str(spool)).stdout
    assert "captured from live tensors" in next(row for row in listing.splitlines() if "step-0000004" in row)
    assert torch.equal(_weights(api, "alice/lost", "step-0000005", tmp_path / "c")["w"], torch.full((4,), 5.0))
    assert [r.name for r in _index(api, "alice/lost", tmp_path / "c").revisions] == ["step-0000005"]


def test_a_kill_while_journaling_a_conversion_keeps_the_staged_files(api, local_hub, tmp_path):
    """Found by the random crash test: files staged, the `converted` record torn; the resume took the job
    for live tensors lost in memory (before the fix)."""
    import subprocess
    import sys

    spool = tmp_path / "spool"
    script = (
        "import sys, torch\nfrom hubckpt.publishing import Publisher\n"
        "pub = Publisher('alice/torn', hub=sys.argv[1], spool_dir=sys.argv[2])\n"
        "pub.publish(state_dict={'w': torch.full((4,), 2.0)}, step=2).result()\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", script, local_hub.url, str(spool)],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "HUBCKPT_FAULT": "journal.append:torn:2"},
    )
    assert proc.returncode == -9, proc.stderr
    assert list(spool.glob("jobs/*/revision/checkpoint.json"))
    with Publisher("alice/torn", hub=local_hub.url, spool_dir=spool) as pub:
        assert pub.pending() == ["step-0000002"]
    assert torch.equal(_weights(api, "alice/torn", "step-0000002", tmp_path / "c")["w"], torch.full((4,), 2.0))
