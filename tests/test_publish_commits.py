"""Hub commits of revisions: exact files per branch, no half-made branches, real faults, bytes the hub received,
timeouts, Retry-After, tokens per hub."""

from __future__ import annotations

import json
import os
import socket
import threading
import time
from pathlib import Path

import pytest
import torch
from huggingface_hub import HfApi
from safetensors.torch import load_file, save_file

from hubckpt.hub_client import STAGING_PREFIX, HubTarget
from hubckpt.hubs import Hub, resolve_hub
from hubckpt.publishing import Publisher

from .conftest import free_port
from .helpers import run_cli, start_server

pytestmark = pytest.mark.timeout(180)


def _weights(api: HfApi, repo_id: str, revision: str, tmp_path: Path) -> dict[str, torch.Tensor]:
    path = api.hf_hub_download(repo_id, "model.safetensors", revision=revision, cache_dir=tmp_path / "dl")
    return load_file(path)


def _files(api: HfApi, repo_id: str, revision: str) -> set[str]:
    return set(api.list_repo_files(repo_id, revision=revision))


def _branches(api: HfApi, repo_id: str) -> set[str]:
    return {b.name for b in api.list_repo_refs(repo_id).branches}


def test_earlier_step_after_later_one_with_a_new_publisher(api, local_hub, tmp_path):
    """Step 40 after step 60 (a late evaluation checkpoint): step 40's branch holds step 40's weights."""
    repo_id = "alice/out-of-order"
    w60, w40 = {"w": torch.full((4,), 60.0)}, {"w": torch.full((4,), 40.0)}
    with Publisher(repo_id, hub=local_hub.url, spool_dir=tmp_path / "a") as pub:
        pub.publish(state_dict=w60, step=60, training_state={"opt": {"m": torch.ones(2)}}).result()
    with Publisher(repo_id, hub=local_hub.url, spool_dir=tmp_path / "b") as pub:
        pub.publish(state_dict=w40, step=40).result()
    assert torch.equal(_weights(api, repo_id, "step-0000060", tmp_path)["w"], w60["w"])
    assert torch.equal(_weights(api, repo_id, "step-0000040", tmp_path)["w"], w40["w"])
    manifest = json.loads(Path(api.hf_hub_download(repo_id, "checkpoint.json", revision="step-0000040",
                                                   cache_dir=tmp_path / "dl")).read_text())
    assert manifest["step"] == 40
    assert {f["path"] for f in manifest["files"]} | {"README.md", "checkpoint.json", ".gitattributes"} \
        == _files(api, repo_id, "step-0000040")
    assert not any(b.startswith(STAGING_PREFIX) for b in _branches(api, repo_id))


def test_revision_without_training_state_after_one_with_it(api, local_hub, tmp_path):
    repo_id = "alice/fewer-files"
    with Publisher(repo_id, hub=local_hub.url, spool_dir=tmp_path / "s") as pub:
        pub.publish(state_dict={"w": torch.ones(3)}, step=1, training_state={"opt": {"m": torch.ones(2)}}).result()
        pub.publish(state_dict={"w": torch.full((3,), 2.0)}, step=2).result()
    assert any(f.startswith("training_state/") for f in _files(api, repo_id, "step-0000001"))
    assert not any(f.startswith("training_state/") for f in _files(api, repo_id, "step-0000002"))
    assert torch.equal(_weights(api, repo_id, "step-0000001", tmp_path)["w"], torch.ones(3))
    assert torch.equal(_weights(api, repo_id, "step-0000002", tmp_path)["w"], torch.full((3,), 2.0))
    titles = [c.title for c in api.list_repo_commits(repo_id, revision="step-0000002")]
    assert titles.count("Checkpoint step-0000002 (step 2)") == 1


def _weights_folder(folder: Path, value: float, extra: bool) -> Path:
    folder.mkdir(parents=True)
    save_file({"w": torch.full((4,), value)}, folder / "model.safetensors")
    (folder / "config.json").write_text("{}")
    if extra:
        (folder / "notes.txt").write_text("only in this checkpoint")
    return folder


def test_cli_step_10_after_step_20(api, local_hub, tmp_path):
    repo_id = "alice/cli-out-of-order"
    env = {"HUBCKPT_HUB": local_hub.url, "HUBCKPT_SPOOL": str(tmp_path / "spool")}
    c20 = _weights_folder(tmp_path / "c20" / "checkpoint-20", 20.0, extra=True)
    c10 = _weights_folder(tmp_path / "c10" / "checkpoint-10", 10.0, extra=False)
    for ckpt in (c20, c10):
        out = run_cli("publish", str(ckpt), "--repo", repo_id, env=env)
        assert out.returncode == 0, out.stdout + out.stderr
    assert torch.equal(_weights(api, repo_id, "step-0000010", tmp_path)["w"], torch.full((4,), 10.0))
    assert torch.equal(_weights(api, repo_id, "step-0000020", tmp_path)["w"], torch.full((4,), 20.0))
    assert "notes.txt" in _files(api, repo_id, "step-0000020")
    assert "notes.txt" not in _files(api, repo_id, "step-0000010")


def test_half_made_branch_from_an_interrupted_publish_is_repaired(api, local_hub, tmp_path):
    """A branch left at its starting commit (what older versions left after a failed commit) is repaired."""
    repo_id = "alice/half-made"
    with Publisher(repo_id, hub=local_hub.url, spool_dir=tmp_path / "a") as pub:
        pub.publish(state_dict={"w": torch.full((2,), 60.0)}, step=60).result()
    api.create_branch(repo_id, branch="step-0000040", revision="step-0000060")  # the half-made branch
    with Publisher(repo_id, hub=local_hub.url, spool_dir=tmp_path / "b") as pub:
        pub.publish(state_dict={"w": torch.full((2,), 40.0)}, step=40).result()
    assert torch.equal(_weights(api, repo_id, "step-0000040", tmp_path)["w"], torch.full((2,), 40.0))


def test_a_failed_commit_leaves_no_revision_branch(api, local_hub, tmp_path, monkeypatch):
    """Whatever fails during the commit, the revision's branch does not exist without its files."""
    repo_id = "alice/no-half-branch"
    real = HfApi.create_commit

    def refuse(self, repo_id, operations, **kwargs):
        if kwargs.get("revision", "").startswith(STAGING_PREFIX):
            raise RuntimeError("the commit failed")
        return real(self, repo_id, operations, **kwargs)

    with Publisher(repo_id, hub=local_hub.url, spool_dir=tmp_path / "a") as pub:
        pub.publish(state_dict={"w": torch.ones(2)}, step=1).result()
    monkeypatch.setattr(HfApi, "create_commit", refuse)
    with pytest.raises(RuntimeError, match="the commit failed"):
        with Publisher(repo_id, hub=local_hub.url, spool_dir=tmp_path / "b") as pub:
            pub.publish(state_dict={"w": torch.zeros(2)}, step=2).result()
    assert "step-0000002" not in _branches(api, repo_id)
    monkeypatch.setattr(HfApi, "create_commit", real)
    with Publisher(repo_id, hub=local_hub.url, spool_dir=tmp_path / "b") as pub:
        pass  # resumes the failed job from the journal... or not; publish it again explicitly
    with Publisher(repo_id, hub=local_hub.url, spool_dir=tmp_path / "c") as pub:
        pub.publish(state_dict={"w": torch.zeros(2)}, step=2).result()
    assert torch.equal(_weights(api, repo_id, "step-0000002", tmp_path)["w"], torch.zeros(2))
    assert not any(b.startswith(STAGING_PREFIX) for b in _branches(api, repo_id))


def _received(hub) -> int:
    return hub.ctx.stats["lfs_bytes_received"] + hub.ctx.stats.get("regular_bytes_received", 0)


def test_unchanged_files_are_not_uploaded_again_bytes_received(api, local_hub, tmp_path):
    """Only the changed weights travel: counted as bytes the hub received (LFS and inline), not as objects."""
    repo_id = "alice/bytes-received"
    ckpt = tmp_path / "ckpt"
    ckpt.mkdir()
    (ckpt / "tokenizer.model").write_bytes(b"\x00" + os.urandom(300_000))  # binary: LFS
    (ckpt / "tokenizer.json").write_text(json.dumps({"vocab": list(range(20_000))}))  # text: inline
    (ckpt / "config.json").write_text("{}")
    with Publisher(repo_id, hub=local_hub.url, spool_dir=tmp_path / "spool") as pub:
        save_file({"w": torch.randn(64, 64)}, ckpt / "model.safetensors")
        before = _received(local_hub)
        pub.publish(ckpt, step=1).result()
        first = _received(local_hub) - before
        save_file({"w": torch.randn(64, 64)}, ckpt / "model.safetensors")
        before = _received(local_hub)
        pub.publish(ckpt, step=2).result()
        second = _received(local_hub) - before
    companions = sum((ckpt / n).stat().st_size for n in ("tokenizer.model", "tokenizer.json"))
    weights = (ckpt / "model.safetensors").stat().st_size
    assert first > companions + weights
    # What the second revision sent: its weights, its checkpoint.json, its card. Not the companions.
    assert weights <= second < weights + 64_000 < companions, (first, second, weights, companions)
    assert torch.equal(_weights(api, repo_id, "step-0000002", tmp_path)["w"], load_file(ckpt / "model.safetensors")["w"])


@pytest.mark.slow
def test_commit_that_landed_before_the_connection_dropped_is_not_repeated(tmp_path):
    """Real fault: the server dies right after the revision's commit lands (the client sees a dropped connection);
    it comes back, and the publisher finds the commit instead of committing again."""
    port = free_port()
    root = tmp_path / "hub"
    proc, url = start_server(root, port, {"HUBCKPT_FAULT": "server.commit.after_ref_update:kill"})
    restarted: list = []

    def restart_when_dead() -> None:
        proc.wait(timeout=120)
        restarted.append(start_server(root, port, {"HUBCKPT_FAULT": ""})[0])

    watcher = threading.Thread(target=restart_when_dead, daemon=True)
    watcher.start()
    try:
        with Publisher("alice/ambiguous", hub=url, spool_dir=tmp_path / "spool") as pub:
            pub.publish(state_dict={"w": torch.ones(3)}, step=1).result(timeout=120)
        watcher.join(timeout=60)
        assert proc.returncode is not None and restarted, "the fault did not fire"
        api = HfApi(endpoint=url, token="x")
        titles = [c.title for c in api.list_repo_commits("alice/ambiguous", revision="step-0000001")]
        assert titles.count("Checkpoint step-0000001 (step 1)") == 1
        assert torch.equal(_weights(api, "alice/ambiguous", "step-0000001", tmp_path)["w"], torch.ones(3))
    finally:
        for p in [proc, *restarted]:
            if p.poll() is None:
                p.kill()
                p.wait()
