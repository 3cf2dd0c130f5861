"""Hub commits of revisions: exact files per branch, no half-made branches, real faults, bytes the hub received,
timeouts, Retry-After, tokens per hub."""

from __future__ import annotations

import json
import os
import threading
import time
from pathlib import Path

import pytest
import torch
from huggingface_hub import HfApi
from safetensors.torch import load_file, save_file

from hubckpt.hub.select import Hub
from hubckpt.hub.writer import STAGING_PREFIX, HubTarget
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
    manifest = json.loads(
        Path(
            api.hf_hub_download(repo_id, "checkpoint.json", revision="step-0000040", cache_dir=tmp_path / "dl")
        ).read_text()
    )
    assert manifest["step"] == 40
    assert {f["path"] for f in manifest["files"]} | {"README.md", "checkpoint.json", ".gitattributes"} == _files(
        api, repo_id, "step-0000040"
    )
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
        pub.publish(
            state_dict={"w": torch.full((2,), 60.0)}, step=60, training_state={"opt": {"m": torch.ones(2)}}
        ).result()
    api.create_branch(repo_id, branch="step-0000040", revision="step-0000060")  # the half-made branch
    with Publisher(repo_id, hub=local_hub.url, spool_dir=tmp_path / "b") as pub:
        pub.publish(state_dict={"w": torch.full((2,), 40.0)}, step=40).result()
    assert torch.equal(_weights(api, repo_id, "step-0000040", tmp_path)["w"], torch.full((2,), 40.0))
    assert not any(f.startswith("training_state/") for f in _files(api, repo_id, "step-0000040"))


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
    assert torch.equal(
        _weights(api, repo_id, "step-0000002", tmp_path)["w"], load_file(ckpt / "model.safetensors")["w"]
    )


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


class _FakeHub:
    """A loopback HTTP server scripted per test: records each request's headers, answers from `replies`."""

    def __init__(self, replies):
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        self.requests: list[dict] = []
        self.replies = list(replies)
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802
                fake.requests.append({"path": self.path, "time": time.monotonic(), **dict(self.headers)})
                reply = fake.replies.pop(0) if len(fake.replies) > 1 else fake.replies[0]
                if reply == "stall":
                    threading.Event().wait(30)  # longer than the test allows: only a client timeout ends it
                    return
                status, headers, body = reply
                self.send_response(status)
                for k, v in headers.items():
                    self.send_header(k, v)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


REFS = (200, {"Content-Type": "application/json"}, json.dumps({"branches": [], "tags": [], "converts": []}).encode())


def test_a_stalled_hub_times_out(monkeypatch):
    import huggingface_hub.utils._http as hf_http

    from hubckpt.errors import HubUnavailableError

    monkeypatch.setenv("HUBCKPT_HTTP_TIMEOUT", "0.5")
    monkeypatch.setattr(hf_http.time, "sleep", lambda s: None)  # only the stalls count, not the backoff waits
    fake = _FakeHub(["stall"])
    try:
        target = HubTarget(Hub(fake.url, "remote"), "alice/stalled")
        started = time.monotonic()
        with pytest.raises(HubUnavailableError):
            target.read_index()
        # A stalled read ends within its documented bound, 2 x HUBCKPT_HTTP_TIMEOUT with all retries (here 1 s):
        # a retry whose back-off would pass it is not made (docs/security.md).
        assert time.monotonic() - started < 5
        assert len(fake.requests) >= 1
    finally:
        fake.close()


def test_retries_wait_as_long_as_retry_after_says():
    fake = _FakeHub([(429, {"Retry-After": "2"}, b"slow down"), REFS])
    try:
        branches, _ = HubTarget(Hub(fake.url, "remote"), "alice/limited").refs()
        assert branches == {}
        assert fake.requests[1]["time"] - fake.requests[0]["time"] >= 1.9
    finally:
        fake.close()


def test_tokens_are_per_hub_and_the_hf_token_stays_home(monkeypatch):
    from hubckpt.errors import HubConfigError
    from hubckpt.hub.select import token_for

    monkeypatch.setenv("HF_TOKEN", "hf_the_users_huggingface_token")
    monkeypatch.delenv("HUBCKPT_TOKEN", raising=False)
    fake = _FakeHub([REFS])
    try:
        HubTarget(Hub(fake.url, "remote"), "alice/x").refs()
        assert "hf_the_users" not in json.dumps(fake.requests)
        monkeypatch.setenv("HUBCKPT_TOKEN", "team-hub-token")
        HubTarget(Hub(fake.url, "remote"), "alice/x").refs()
        assert fake.requests[-1].get("authorization") == "Bearer team-hub-token"
    finally:
        fake.close()
    a, b = Hub("http://127.0.0.1:1", "remote"), Hub("http://127.0.0.1:2", "remote")
    tokens = {"http://127.0.0.1:1": "ta", b.endpoint: "tb"}
    assert token_for(a, "http://127.0.0.1:1", tokens) == "ta" and token_for(b, b.endpoint, tokens) == "tb"
    assert token_for(Hub("https://huggingface.co", "remote"), "hf", {"hf": "th"}) == "th"
    with pytest.raises(HubConfigError, match="belongs to one hub"):
        Publisher("alice/x", hub=[a.endpoint, b.endpoint], token="one-for-all", spool_dir="/tmp/unused-spool")


def test_the_shared_reader_keeps_the_hf_token_home_too(monkeypatch):
    """The consumer's HubReader (also HubTarget.reader) resolves its token per hub, like the publisher."""
    from hubckpt.hub.reader import HubReader

    monkeypatch.setenv("HF_TOKEN", "hf_the_users_huggingface_token")
    monkeypatch.delenv("HUBCKPT_TOKEN", raising=False)
    fake = _FakeHub([REFS, REFS])
    try:
        assert HubReader(Hub(fake.url, "remote"), "alice/x").refs() == ({}, {})
        assert "hf_the_users" not in json.dumps(fake.requests)
        target = HubTarget(Hub(fake.url, "remote"), "alice/x", token="explicit")
        assert target.reader.token == "explicit"
        target.refs()
        assert fake.requests[-1].get("authorization") == "Bearer explicit"
    finally:
        fake.close()


# -- cards and the index ---------------------------------------------------------------------------


def _read(api: HfApi, repo_id: str, path: str, revision: str, tmp_path: Path) -> str:
    return Path(api.hf_hub_download(repo_id, path, revision=revision, cache_dir=tmp_path / "dl")).read_text()


def test_cards_link_to_the_hub_they_are_committed_to(tmp_path):
    from hubckpt.server import LocalHubServer

    with LocalHubServer(tmp_path / "h1") as h1, LocalHubServer(tmp_path / "h2") as h2:
        with Publisher("alice/mirror-cards", hub=[h1.url, h2.url], spool_dir=tmp_path / "spool") as pub:
            pub.publish(state_dict={"w": torch.arange(4.0)}, step=5).result()
        for hub, other in ((h1, h2), (h2, h1)):
            api = HfApi(endpoint=hub.url, token="x")
            for path, rev in (("README.md", "step-0000005"), ("README.md", "main")):
                card = _read(api, "alice/mirror-cards", path, rev, tmp_path / hub.url[-5:])
                assert f"{hub.url}/alice/mirror-cards" in card and other.url not in card
            assert torch.equal(
                _weights(api, "alice/mirror-cards", "step-0000005", tmp_path / "w")["w"], torch.arange(4.0)
            )


def test_nan_metrics_hostile_names_tags_and_main_metrics(api, local_hub, tmp_path):
    repo_id = "alice/hostile-metrics"
    evil = "<script>alert(1)</script>|x"
    with Publisher(repo_id, hub=local_hub.url, spool_dir=tmp_path / "s", monitor="eval_loss") as pub:
        pub.publish(state_dict={"w": torch.ones(2)}, step=1, metrics={"eval_loss": 1.0, evil: 0.5, "eval_acc": 0.1})
        pub.publish(state_dict={"w": torch.ones(2)}, step=2, metrics={"eval_loss": 0.5, evil: 0.7, "eval_acc": 0.2})
        pub.publish(
            state_dict={"w": torch.ones(2)},
            step=3,
            metrics={"eval_loss": float("nan"), evil: 1.0, "eval_acc": 0.3},
            final=True,
        ).result()
    raw = _read(api, repo_id, "revisions.json", "main", tmp_path)
    doc = json.loads(raw, parse_constant=lambda c: pytest.fail(f"non-standard JSON constant {c}"))
    assert doc["revisions"][2]["metrics"]["eval_loss"] == "NaN"
    from hubckpt.formats.index import RevisionIndex

    index = RevisionIndex.from_json(raw)
    import math

    assert math.isnan(index.get("step-0000003").metrics["eval_loss"]) and index.best == "step-0000002"
    card = _read(api, repo_id, "README.md", "main", tmp_path)
    assert "<script>" not in card and "NaN" in card
    svg = _read(api, repo_id, "metrics.svg", "main", tmp_path)
    assert "<script>" not in svg and "&lt;script&gt;" in svg
    import xml.dom.minidom

    xml.dom.minidom.parseString(svg)  # well-formed
    assert svg.count("<polyline") >= 2  # one panel (own y-axis) per metric
    # main holds the final weights: its model-index reports the final revision's metrics, not the best's
    head = card.split("---")[1]
    assert "0.3" in head and "0.2" not in head
    # no transformers config: no AutoModel advice
    assert "AutoModel" not in card and "AutoModel" not in _read(api, repo_id, "README.md", "step-0000001", tmp_path)

    from hubckpt.cli._options import target as cli_target
    from hubckpt.publishing.maintenance import tag

    tag(cli_target(repo_id, local_hub.url, None), "step-0000001", "paper-v1")
    index = RevisionIndex.from_json(_read(api, repo_id, "revisions.json", "main", tmp_path / "2"))
    assert index.tags == {"paper-v1": "step-0000001"} and "paper-v1" in index.get("step-0000001").tags
    assert "paper-v1" in _read(api, repo_id, "README.md", "main", tmp_path / "2")


def test_reindex_keeps_a_hand_written_readme(api, local_hub, tmp_path):
    from hubckpt.cli._options import target as cli_target
    from hubckpt.publishing.maintenance import reindex

    repo_id = "alice/hand-written"
    api.create_repo(repo_id)
    api.upload_file(path_or_fileobj=b"# My model\n\nWritten by hand.\n", path_in_repo="README.md", repo_id=repo_id)
    api.create_branch(repo_id, branch="step-0000001")
    reindex(cli_target(repo_id, local_hub.url, None))
    assert _read(api, repo_id, "README.md", "main", tmp_path) == "# My model\n\nWritten by hand.\n"
    assert "revisions.json" in _files(api, repo_id, "main")


def test_reindex_of_an_unchanged_repo_logs_no_empty_commit_warning(api, local_hub, tmp_path, caplog):
    """A second reindex changes nothing on main: huggingface_hub's 'No files have been modified' warning
    reached the CLI's stderr twice, as if something had gone wrong."""
    import logging

    from hubckpt.cli._options import target as cli_target
    from hubckpt.publishing.maintenance import reindex

    repo_id = "alice/reindex-twice"
    api.create_repo(repo_id)
    api.create_branch(repo_id, branch="step-0000001")
    reindex(cli_target(repo_id, local_hub.url, None))
    head = api.list_repo_refs(repo_id).branches
    with caplog.at_level(logging.INFO, logger="huggingface_hub"):
        reindex(cli_target(repo_id, local_hub.url, None))
    assert not [r for r in caplog.records if "No files have been modified" in r.getMessage()]
    assert api.list_repo_refs(repo_id).branches == head  # and indeed nothing was committed


# -- what is read from disk: steps, paths, snapshots ------------------------------------------------


def test_one_step_parser_for_checkpoint_names():
    from hubckpt.readers import step_from_name

    for name, step in [
        ("checkpoint-1200", 1200),
        ("global_step1200", 1200),
        ("step1200", 1200),
        ("step_1200", 1200),
        ("step-1200", 1200),
        ("global_step=1200", 1200),
        ("epoch=3-step=1200.ckpt", 1200),
        ("ckpt_1200.pt", 1200),
        ("iter-1200.bin", 1200),
        ("1200", 1200),
        ("ckpt.pt", None),
        ("last.ckpt", None),
        ("model", None),
    ]:
        assert step_from_name(name) == step, name


def test_weights_folder_named_global_step_gets_its_step(tmp_path):
    from hubckpt.readers import read_checkpoint

    for name in ("global_step1200", "step1200"):
        folder = tmp_path / name
        folder.mkdir()
        save_file({"w": torch.ones(2)}, folder / "model.safetensors")
        assert read_checkpoint(folder).step == 1200


def test_cli_publishes_a_nanogpt_file_at_its_iter_num(api, local_hub, tmp_path):
    from .factories import make_nanogpt_file

    path, _, _ = make_nanogpt_file(tmp_path / "ckpt.pt")
    env = {"HUBCKPT_HUB": local_hub.url, "HUBCKPT_SPOOL": str(tmp_path / "spool")}
    out = run_cli("publish", str(path), "--repo", "alice/nano-cli", env=env)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "step-0001500" in _branches(api, "alice/nano-cli")
    assert "published step-0001500" in out.stdout  # says what happened, not only the name
    bare = tmp_path / "weights.pt"
    torch.save({"model": {"w": torch.ones(2)}}, bare)
    out = run_cli("publish", str(bare), "--repo", "alice/nano-cli", env=env)
    assert out.returncode != 0 and "--step" in out.stderr and "step=..." not in out.stderr


def test_no_absolute_paths_are_published(api, local_hub, tmp_path):
    run = tmp_path / "home" / "alice" / "runs" / "exp1"
    ckpt = run / "checkpoint-4"
    ckpt.mkdir(parents=True)
    save_file({"w": torch.ones(2)}, ckpt / "model.safetensors")
    (ckpt / "config.json").write_text("{}")
    (ckpt / "trainer_state.json").write_text(
        json.dumps(
            {
                "global_step": 4,
                "epoch": 1.0,
                "best_metric": 0.5,
                "best_model_checkpoint": str(ckpt),
                "log_history": [{"step": 4, "eval_loss": 0.5}],
                "output_dir": "C:\\Users\\alice\\runs",
            }
        )
    )
    with Publisher("alice/no-paths", hub=local_hub.url, spool_dir=tmp_path / "spool") as pub:
        pub.publish(ckpt).result()
    files = api.list_repo_files("alice/no-paths", revision="step-0000004")
    texts = {
        f: _read(api, "alice/no-paths", f, "step-0000004", tmp_path) for f in files if f.endswith((".json", ".md"))
    }
    assert "training_state/loop.json" in texts
    for name, text in texts.items():
        assert str(tmp_path) not in text and "alice\\\\runs" not in text and "C:" not in text, name
    manifest = json.loads(texts["checkpoint.json"])
    assert manifest["best"]["checkpoint"] == "checkpoint-4"


def test_snapshot_of_a_file_overwritten_in_place(tmp_path):
    from hubckpt.snapshots import SnapshotChangedError, check_snapshot, take_snapshot

    # nanoGPT: one name, rewritten in place by torch.save -> the snapshot is a copy and keeps its bytes
    ckpt = tmp_path / "out" / "ckpt.pt"
    ckpt.parent.mkdir()
    torch.save({"model": {"w": torch.ones(2)}, "iter_num": 1}, ckpt)
    snap = take_snapshot(ckpt, tmp_path / "spool" / "a")
    inode = ckpt.stat().st_ino
    torch.save({"model": {"w": torch.zeros(2)}, "iter_num": 2}, ckpt)
    assert ckpt.stat().st_ino == inode  # in place, as nanoGPT does it
    check_snapshot(snap)
    assert torch.equal(torch.load(snap, weights_only=True)["model"]["w"], torch.ones(2))

    # a per-step folder is linked; if it is rewritten in place anyway, the snapshot refuses clearly
    folder = tmp_path / "run" / "checkpoint-5"
    folder.mkdir(parents=True)
    save_file({"w": torch.ones(2)}, folder / "model.safetensors")
    snap = take_snapshot(folder, tmp_path / "spool" / "b")
    assert (snap / "model.safetensors").stat().st_ino == (folder / "model.safetensors").stat().st_ino
    time.sleep(0.01)
    with open(folder / "model.safetensors", "r+b") as f:  # overwrite in place, same inode
        f.seek(-4, os.SEEK_END)
        f.write(b"\x00\x00\x80\x7f")
    with pytest.raises(SnapshotChangedError, match="overwrote the file in place"):
        check_snapshot(snap)
    # ... and a later snapshot of the same, reused file is a copy
    again = take_snapshot(folder, tmp_path / "spool" / "c")
    assert (again / "model.safetensors").stat().st_ino != (folder / "model.safetensors").stat().st_ino


# -- the CLI and package surface -------------------------------------------------------------------


def test_cli_publish_metrics_companion_one_error_line_no_bars(api, local_hub, tmp_path):
    ckpt = _weights_folder(tmp_path / "c" / "checkpoint-7", 7.0, extra=False)
    extra = tmp_path / "tokenizer.json"
    extra.write_text('{"v": 1}')
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if "PROGRESS_BARS" not in k}  # bars on, as for a user
    env.update(HUBCKPT_HUB=local_hub.url, HUBCKPT_SPOOL=str(tmp_path / "spool"))

    def cli(*args):
        return subprocess.run(
            [sys.executable, "-m", "hubckpt", *args], capture_output=True, text=True, env=env, timeout=120
        )

    out = cli(
        "publish",
        str(ckpt),
        "--repo",
        "alice/cli-extras",
        "--metrics",
        '{"eval_loss": NaN, "eval_acc": 0.5}',
        "--companion",
        str(extra),
    )
    assert out.returncode == 0, out.stdout + out.stderr
    assert "%|" not in out.stderr and "it/s" not in out.stderr  # no upload progress bars in piped output
    assert "tokenizer.json" in _files(api, "alice/cli-extras", "step-0000007")
    from hubckpt.formats.index import RevisionIndex

    index = RevisionIndex.from_json(_read(api, "alice/cli-extras", "revisions.json", "main", tmp_path))
    metrics = index.get("step-0000007").metrics
    assert metrics["eval_acc"] == 0.5 and metrics["eval_loss"] != metrics["eval_loss"]  # NaN kept
    # a failing publish is reported once
    bad = tmp_path / "bad" / "checkpoint-9"
    bad.mkdir(parents=True)
    (bad / "model.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{}" + b" " * 14)
    out = cli("publish", str(bad), "--repo", "alice/cli-extras")
    assert out.returncode == 1
    assert out.stderr.count("holds no model weights") == 1, out.stderr


@pytest.mark.parametrize("kind", ["file", "read-only"])
def test_unusable_hub_root_is_one_line(tmp_path, kind):
    root = tmp_path / "root"
    if kind == "file":
        root.write_text("not a folder")
    else:
        root.mkdir()
        root.chmod(0o500)
        if os.access(root, os.W_OK):
            pytest.skip("running as a user who can write anywhere")
    ckpt = _weights_folder(tmp_path / "checkpoint-1", 1.0, extra=False)
    out = run_cli(
        "publish",
        str(ckpt),
        "--repo",
        "alice/x",
        "--hub",
        "local",
        "--root",
        str(root),
        env={"HUBCKPT_SPOOL": str(tmp_path / "spool")},
    )
    root.chmod(0o700) if kind != "file" else None
    assert out.returncode == 1 and "Traceback" not in out.stderr and "cannot be used" in out.stderr, out.stderr


def test_dir_shows_lazy_names_and_restore_rng_takes_both_layouts():
    import random

    import hubckpt
    from hubckpt.conversion.training_state import capture_rng, restore_rng

    assert {"Publisher", "convert", "restore_rng", "LocalHubServer"} <= set(dir(hubckpt))
    state = capture_rng()
    first = random.random()
    restore_rng(state)
    assert random.random() == first
    restore_rng({"rng_state": state})  # a Trainer checkpoint's layout
    assert random.random() == first
