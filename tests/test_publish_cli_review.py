"""`hubckpt publish / watch / resume / jobs` as a user runs them: each failure said once, options kept."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import torch


def _cli(capsys, *argv: str) -> tuple[int, str, str]:
    """The CLI in this process (its error boundary included): (exit code, stdout, stderr)."""
    from hubckpt.cli import main

    with pytest.raises(SystemExit) as exit_:
        main(list(argv))
    out, err = capsys.readouterr()
    return exit_.value.code, out, err


def _index(api, repo_id: str, cache: Path) -> dict:
    return json.loads(Path(api.hf_hub_download(repo_id, "revisions.json", cache_dir=cache)).read_text())


def test_publish_allow_global_reads_the_step_inside_the_pickle(api, local_hub, tmp_path, capsys):
    """The CLI peeked with --allow-global, the Publisher peeked again without it: "pass --step"."""
    from argparse import Namespace

    ckpt = tmp_path / "ckpt.pt"  # no step in the name: only the pickle says it
    torch.save({"model": {"w": torch.ones(2)}, "iter_num": 7, "args": Namespace(lr=0.1)}, ckpt)
    repo_id = "alice/cli-allow-global-step"
    code, out, err = _cli(
        capsys, "publish", str(ckpt), "--repo", repo_id, "--hub", local_hub.url,
        "--spool", str(tmp_path / "spool"), "--allow-global", "argparse.Namespace",
    )  # fmt: skip
    assert code == 0, err
    assert re.search(r"published\s+step-0000007", out), out
    assert "step-0000007" in {b.name for b in api.list_repo_refs(repo_id).branches}


def test_publish_run_final_marks_the_last_checkpoint_final_when_it_was_published_already(
    api, local_hub, tmp_path, capsys
):
    run = tmp_path / "run"
    run.mkdir()
    for step in (10, 20):
        torch.save({"w": torch.full((4,), float(step))}, run / f"ckpt-{step}.pt")
    repo_id = "alice/cli-final-later"
    args = ["publish", str(run), "--repo", repo_id, "--hub", local_hub.url, "--spool", str(tmp_path / "spool")]
    assert _cli(capsys, *args)[0] == 0
    assert _index(api, repo_id, tmp_path / "c1")["final"] is None
    code, out, err = _cli(capsys, *args, "--final")
    assert code == 0, err
    index = _index(api, repo_id, tmp_path / "c2")
    assert index["final"] == "step-0000020", (index, out, err)
    tags = {t.name: t.target_commit for t in api.list_repo_refs(repo_id).tags}
    assert tags["final"] == {r["name"]: r["commit"] for r in index["revisions"]}["step-0000020"]


def _run_with_a_corrupt_checkpoint(tmp_path: Path) -> Path:
    run = tmp_path / "run"
    run.mkdir()
    torch.save({"w": torch.ones(4)}, run / "ckpt-10.pt")
    (run / "ckpt-20.pt").write_bytes(b"PK\x03\x04 not a checkpoint at all" * 10)
    return run


def test_watch_once_reports_a_failed_checkpoint_once_and_exits_non_zero(api, local_hub, tmp_path, capsys):
    """close() raising in `finally:` repeated the failure as a second `Error:` line (and could mask others)."""
    run = _run_with_a_corrupt_checkpoint(tmp_path)
    repo_id = "alice/cli-watch-fails"
    code, out, err = _cli(
        capsys, "watch", str(run), "--repo", repo_id, "--hub", local_hub.url,
        "--spool", str(tmp_path / "spool"), "--once",
    )  # fmt: skip
    assert code == 1, (out, err)
    assert "published step-0000010" in out, out
    assert err.count("ckpt-20.pt") == 1 or err.count("step-0000020") == 1, err  # said once
    assert not [line for line in err.splitlines() if line.startswith("Error:")], err
    assert "Traceback" not in err and "hubckpt jobs" in err, err


def test_resume_with_a_failed_job_still_says_what_is_kept(api, local_hub, tmp_path, capsys):
    """close() raising made `resume` skip its hint and `Done.`, and print the failure as a bare error."""
    from hubckpt.publishing.jobs import JobStore, target_key
    from hubckpt.publishing.publisher import hub_targets

    repo_id = "alice/cli-resume-fails"
    spool = tmp_path / "spool"
    store = JobStore(spool)
    key = target_key(hub_targets(repo_id, [local_hub.url])[0])
    missing = tmp_path / "gone" / "ckpt-5.pt"  # the source is gone by the time it is resumed
    store.capture(
        "000000000005-step-0000005",
        {"revision": "step-0000005", "step": 5, "source": str(missing), "final": False, "metrics": {},
         "companions": [], "targets": [key]},
    )  # fmt: skip
    store.release()
    code, out, err = _cli(capsys, "resume", "--repo", repo_id, "--hub", local_hub.url, "--spool", str(spool))
    assert code == 1, (out, err)
    assert "Resuming 1 unfinished job(s): step-0000005" in out
    assert err.count("step-0000005") >= 1 and f"hubckpt jobs {repo_id}" in err, err
    assert not [line for line in err.splitlines() if line.startswith("Error:")], err


def test_jobs_does_not_call_a_job_indexed_on_one_of_two_hubs_published(tmp_path, capsys):
    from hubckpt.publishing.jobs import JobStore

    spool = tmp_path / "spool"
    store = JobStore(spool)
    job = "000000000003-step-0000003"
    store.capture(job, {"revision": "step-0000003", "step": 3, "targets": ["hub-a", "hub-b"]})
    store.committed(job, "hub-a", "c" * 40)
    store.indexed(job, "hub-a")
    store.failed(job, "RevisionCollisionError: on hub-b", retryable=False)
    store.release()
    code, out, _ = _cli(capsys, "jobs", "alice/two-hubs", "--spool", str(spool))
    assert code == 0
    (line,) = [line for line in out.splitlines() if "step-0000003" in line]
    assert "published" not in line and "FAILED" in line, line


def test_a_user_tag_protects_the_revision_not_its_staging_branch():
    from hubckpt.formats.index import RevisionIndex
    from hubckpt.publishing.stages import HubView, hub_user_tags

    commit = "c" * 40
    view = HubView(
        RevisionIndex(), {"main": "m" * 40, "step-1": commit, "hubckpt-staging-step-1": commit}, {"paper": commit}
    )
    assert hub_user_tags(view) == {"paper": "step-1"}


def test_jobs_retry_publishes_with_the_options_the_job_was_captured_with(api, local_hub, tmp_path, capsys):
    """`jobs --retry` used default options: --keep-last (and --template, --allow-global...) were lost."""
    from hubckpt.publishing import Publisher

    repo_id = "alice/cli-retry-options"
    hub = ["--hub", local_hub.url]
    with Publisher(repo_id, hub=local_hub.url, spool_dir=tmp_path / "other", revision_template="r-{step}") as pub:
        pub.publish(state_dict={"w": torch.ones(2)}, step=1)
        pub.publish(state_dict={"w": torch.zeros(2)}, step=2)  # the name, with other content
    torch.save({"w": torch.full((2,), 2.0)}, tmp_path / "ckpt-2.pt")
    spool = str(tmp_path / "spool")
    code, out, err = _cli(
        capsys, "publish", str(tmp_path / "ckpt-2.pt"), "--repo", repo_id, *hub, "--spool", spool,
        "--template", "r-{step}", "--keep-last", "1",
    )  # fmt: skip
    assert code == 1 and "RevisionCollisionError" in err, (out, err)
    api.delete_branch(repo_id, branch="r-2")  # the user clears the collision
    code, out, err = _cli(capsys, "jobs", repo_id, "--spool", spool, "--retry", "r-2", *hub)
    assert code == 0, err
    branches = {b.name for b in api.list_repo_refs(repo_id).branches}
    assert "r-2" in branches and "r-1" not in branches, branches  # --keep-last 1, as captured
