"""Publishing to the local hub: revisions, cards, index, tags, retention, backpressure, errors, CLI."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from huggingface_hub import HfApi

import hubckpt
from hubckpt.errors import (
    CorruptCheckpointError,
    HubConfigError,
    InvalidNameError,
    PublishFailedError,
)
from hubckpt.formats.index import RevisionIndex
from hubckpt.publishing import Publisher
from hubckpt.revisions import render_revision_name

from .factories import make_trainer_run
from .helpers import run_cli


@pytest.fixture(scope="module")
def trainer_run(tmp_path_factory) -> Path:
    return make_trainer_run(tmp_path_factory.mktemp("pub") / "run", max_steps=6, save_steps=2)


def _index(api: HfApi, repo_id: str) -> RevisionIndex:
    return RevisionIndex.from_json(open(api.hf_hub_download(repo_id, "revisions.json"), "rb").read())


def _titles(api: HfApi, repo_id: str, revision: str) -> list[str]:
    return [c.title for c in api.list_repo_commits(repo_id, revision=revision)]


def test_revision_templates():
    assert render_revision_name("step-{step:07d}", step=1200) == "step-0001200"
    assert render_revision_name("step{step}-tokens{tokens_b}B", step=1000, tokens=4_000_000_000) == "step1000-tokens4B"
    with pytest.raises(HubConfigError, match="tokens"):
        render_revision_name("step{step}-tokens{tokens_b}B", step=1)
    with pytest.raises(HubConfigError, match="unknown field"):
        render_revision_name("run-{nope}", step=1)
    with pytest.raises(InvalidNameError):
        render_revision_name("step {step}", step=1)
    with pytest.raises(HubConfigError, match="no {step}"):
        Publisher("a/b", hub="http://127.0.0.1:1", revision_template="fixed", spool_dir="/tmp/x")


def test_publish_trainer_run(api, local_hub, trainer_run, tmp_path, cache_dir):
    from transformers import AutoModelForCausalLM

    repo_id = "alice/trainer-run"
    with Publisher(repo_id, hub=local_hub.url, spool_dir=tmp_path / "spool") as pub:
        futures = [pub.publish(path, final=step == 6) for step, path in hubckpt.discover(trainer_run)]
    results = [f.result() for f in futures]
    assert [r.revision for r in results] == ["step-0000002", "step-0000004", "step-0000006"]

    refs = api.list_repo_refs(repo_id)
    assert {b.name for b in refs.branches} == {"main", "step-0000002", "step-0000004", "step-0000006"}
    tags = {t.name: t.target_commit for t in refs.tags}
    heads = {b.name: b.target_commit for b in refs.branches}
    assert tags["final"] == heads["step-0000006"]
    index = _index(api, repo_id)
    assert [r.name for r in index.revisions] == ["step-0000002", "step-0000004", "step-0000006"]
    assert index.monitor == "eval_loss" and index.mode == "min"  # from trainer_state.json's best metric
    assert tags["best"] == heads[index.best]
    assert all(r.commit == heads[r.name] and "eval_loss" in r.metrics for r in index.revisions)

    # The branch history is the training trajectory; each revision is one commit.
    assert _titles(api, repo_id, "step-0000006")[:3] == [
        "Checkpoint step-0000006 (step 6)",
        "Checkpoint step-0000004 (step 4)",
        "Checkpoint step-0000002 (step 2)",
    ]
    files = set(api.list_repo_files(repo_id, revision="step-0000004"))
    assert {
        "model.safetensors",
        "config.json",
        "checkpoint.json",
        "README.md",
        "training_state/optimizer.json",
    } <= files
    assert not any(f.endswith((".pt", ".bin", ".pth")) for f in files)
    card = open(api.hf_hub_download(repo_id, "README.md", revision="step-0000004", cache_dir=cache_dir)).read()
    assert "revision `step-0000004`" in card and "step **4**" in card and "previous: [`step-0000002`]" in card
    assert 'revision="step-0000004"' in card and "library_name: transformers" in card and "model-index" in card

    main_files = set(api.list_repo_files(repo_id))
    assert {"README.md", "revisions.json", "metrics.svg", "model.safetensors", "config.json"} <= main_files
    repo_card = open(api.hf_hub_download(repo_id, "README.md", cache_dir=cache_dir)).read()
    assert "| [`step-0000002`]" in repo_card and "final" in repo_card

    source = AutoModelForCausalLM.from_pretrained(trainer_run / "checkpoint-4")
    loaded = AutoModelForCausalLM.from_pretrained(repo_id, revision="step-0000004", cache_dir=cache_dir)
    assert all(torch.equal(a, b) for a, b in zip(source.state_dict().values(), loaded.state_dict().values()))

    # Publishing the same run again publishes nothing new: from the same spool the journal and the hub
    # prove it without converting; from a fresh spool each checkpoint is converted and found identical.
    commits_before = len(api.list_repo_commits(repo_id))
    again = run_cli(
        "publish", str(trainer_run), "--repo", repo_id, "--hub", local_hub.url, "--spool", str(tmp_path / "spool")
    )
    assert again.returncode == 0, again.stderr
    assert "3 already published, 0 to publish" in again.stdout
    assert "published step-0000002" not in again.stdout  # nothing was published this time
    fresh = run_cli(
        "publish", str(trainer_run), "--repo", repo_id, "--hub", local_hub.url, "--spool", str(tmp_path / "spool2")
    )
    assert fresh.returncode == 0, fresh.stderr
    assert fresh.stdout.count("(already published)") == 3
    assert "unchanged step-0000002" in fresh.stdout and "published step-0000002" not in fresh.stdout
    assert len(api.list_repo_commits(repo_id)) == commits_before
    assert {b.name for b in api.list_repo_refs(repo_id).branches} == {
        "main",
        "step-0000002",
        "step-0000004",
        "step-0000006",
    }


def test_publish_options_are_typed_checked_and_round_trip_through_json(local_hub, tmp_path):
    from hubckpt.defaults import MAX_SHARD_SIZE, REVISION_TEMPLATE
    from hubckpt.hub.select import resolve_hub

    options = hubckpt.PublishOptions(
        hub=[local_hub.url, resolve_hub(local_hub.url)],
        token={local_hub.url: "t"},
        root=tmp_path / "hub",
        keep_last=3,
        card=hubckpt.CardOptions(license="mit", tags=["a"], template_dir=tmp_path),
        allow_globals=["collections.OrderedDict"],
        max_shard_size=1000,
        spool_dir=str(tmp_path / "spool"),
    )
    assert hubckpt.PublishOptions.from_json(json.loads(json.dumps(options.to_json()))) == options
    assert options.spool_dir == tmp_path / "spool" and options.retention == hubckpt.Retention(keep_last=3)
    defaults = hubckpt.PublishOptions()
    assert (defaults.max_shard_size, defaults.revision_template) == (MAX_SHARD_SIZE, REVISION_TEMPLATE)
    for bad, match in (
        (dict(mode="best"), "mode"),
        (dict(max_pending=0), "max_pending"),
        (dict(keep_last=0), "keep_last"),
        (dict(hub=["local", "hf"], token="t"), "A token belongs to one hub"),
        (dict(card={"license": "mit"}), "CardOptions"),
    ):
        with pytest.raises(HubConfigError, match=match):
            hubckpt.PublishOptions(**bad)
    with pytest.raises(HubConfigError, match="Unknown|unknown"):
        hubckpt.PublishOptions.from_json({"keep_lats": 3})
    # The Publisher's keywords are the options' fields, applied over `options=`.
    with Publisher("alice/opts", options=options.replace(hub=local_hub.url, token=None), keep_last=2) as pub:
        assert pub.options.keep_last == 2 and pub.options.card.license == "mit" and pub.spool == tmp_path / "spool"
    with pytest.raises(TypeError):
        Publisher("alice/opts", hub=local_hub.url, keep_lats=2)


def test_live_state_dicts_backpressure_and_unchanged_bytes(api, local_hub, tmp_path):
    repo_id = "alice/live"
    model = torch.nn.Sequential(torch.nn.Embedding(64, 32), torch.nn.Linear(32, 32))
    model[0].weight.requires_grad_(False)  # frozen: its shard never changes
    received = []
    with Publisher(
        repo_id, hub=local_hub.url, spool_dir=tmp_path / "spool", max_pending=1, max_shard_size="9KB"
    ) as pub:
        futures = []
        for step in range(1, 6):
            with torch.no_grad():
                model[1].weight.add_(0.01)
            before = local_hub.ctx.stats["lfs_bytes_received"]
            futures.append(pub.publish(state_dict=model.state_dict(), step=step * 10, metrics={"loss": 1.0 / step}))
            pub.wait()
            received.append(local_hub.ctx.stats["lfs_bytes_received"] - before)
    assert [f.result().revision for f in futures] == [f"step-{s * 10:07d}" for s in range(1, 6)]
    index = _index(api, repo_id)
    assert [r.step for r in index.revisions] == [10, 20, 30, 40, 50] and index.best is None
    # Only the changed shard travels after the first revision: the frozen embedding is already on the hub.
    shard_files = [f for f in api.list_repo_files(repo_id, revision="step-0000050") if f.startswith("model-")]
    assert len(shard_files) == 2
    assert all(r < received[0] for r in received[1:])


def test_backpressure_blocks_publish_and_captures_are_snapshots(api, local_hub, tmp_path, cache_dir):
    """publish() returns only once the job max_pending places ahead has started; the live tensors are copied."""
    from safetensors.torch import load_file

    repo_id = "alice/backpressure"
    model = {"w": torch.zeros(256, 256), "b": torch.zeros(8)}
    done_when_returned = []
    with Publisher(repo_id, hub=local_hub.url, spool_dir=tmp_path / "spool", max_pending=1) as pub:
        futures = []
        for step in range(1, 5):
            model["w"].fill_(float(step))
            model["b"].copy_(torch.arange(8.0) * step)
            futures.append(pub.publish(state_dict=model, step=step))
            model["w"].fill_(-1.0)  # the training loop goes on changing the tensors right after the capture
            model["b"].fill_(-1.0)
            done_when_returned.append(sum(f.done() for f in futures))
    # One job running and one waiting: the third publish() waited for the first job, the fourth for the second.
    assert done_when_returned[2] >= 1 and done_when_returned[3] >= 2, done_when_returned
    for step in range(1, 5):
        path = api.hf_hub_download(repo_id, "model.safetensors", revision=f"step-{step:07d}", cache_dir=cache_dir)
        published = load_file(path)
        assert torch.equal(published["w"], torch.full((256, 256), float(step)))
        assert torch.equal(published["b"], torch.arange(8.0) * step)


def test_worker_errors_are_reraised_and_nothing_half_published(api, local_hub, tmp_path):
    bad = tmp_path / "checkpoint-7"
    bad.mkdir()
    (bad / "model.safetensors").write_bytes(b"\x08\x00\x00\x00\x00\x00\x00\x00{broken}")
    pub = Publisher("alice/errors", hub=local_hub.url, spool_dir=tmp_path / "spool")
    future = pub.publish(bad)
    with pytest.raises(PublishFailedError, match="step-0000007") as raised:
        pub.wait()
    assert isinstance(raised.value.__cause__, CorruptCheckpointError)
    assert isinstance(future.exception(), CorruptCheckpointError)
    good = tmp_path / "w.pt"
    torch.save({"w": torch.ones(3)}, good)
    pub.publish(good, step=8).result()
    pub.close()
    refs = api.list_repo_refs("alice/errors")
    assert {b.name for b in refs.branches} == {"main", "step-0000008"}


def test_retention_keeps_last_best_and_final(api, local_hub, tmp_path):
    repo_id = "alice/retention"
    weights = {"w": torch.zeros(4)}
    losses = [5.0, 1.0, 4.0, 3.0, 2.0]  # best is step 20
    with Publisher(repo_id, hub=local_hub.url, spool_dir=tmp_path / "spool", monitor="eval_loss", keep_last=2) as pub:
        for i, loss in enumerate(losses, start=1):
            weights["w"] += 1
            pub.publish(state_dict=weights, step=i * 10, metrics={"eval_loss": loss}, final=i == len(losses))
    index = _index(api, repo_id)
    assert index.best == "step-0000020" and index.final == "step-0000050"
    assert [r.name for r in index.live()] == ["step-0000020", "step-0000040", "step-0000050"]
    assert {r.name for r in index.revisions if r.pruned} == {"step-0000010", "step-0000030"}
    branches = {b.name for b in api.list_repo_refs(repo_id).branches}
    assert branches == {"main", "step-0000020", "step-0000040", "step-0000050"}
    listing = run_cli("ls", repo_id, "--hub", local_hub.url)
    assert "step-0000020" in listing.stdout and "best" in listing.stdout and "step-0000010" not in listing.stdout
    dry = run_cli("prune", repo_id, "--hub", local_hub.url, "--keep-last", "1", "--dry-run")
    assert "Would prune 1: step-0000040" in dry.stdout
    assert run_cli("prune", repo_id, "--hub", local_hub.url, "--keep-last", "1").returncode == 0
    assert {b.name for b in api.list_repo_refs(repo_id).branches} == {"main", "step-0000020", "step-0000050"}


def test_name_collision_is_refused(api, local_hub, tmp_path):
    repo_id = "alice/collide"
    with Publisher(repo_id, hub=local_hub.url, spool_dir=tmp_path / "a") as pub:
        pub.publish(state_dict={"w": torch.ones(2)}, step=1)
    with pytest.raises(PublishFailedError, match="step-0000001.*RevisionCollisionError"):
        with Publisher(repo_id, hub=local_hub.url, spool_dir=tmp_path / "b") as pub:
            pub.publish(state_dict={"w": torch.zeros(2)}, step=1)
    assert len(_index(api, repo_id).revisions) == 1


def test_several_hubs_from_one_spool(tmp_path):
    from hubckpt.server import LocalHubServer

    with LocalHubServer(tmp_path / "h1") as h1, LocalHubServer(tmp_path / "h2") as h2:
        with Publisher("alice/mirror", hub=[h1.url, h2.url], spool_dir=tmp_path / "spool") as pub:
            result = pub.publish(state_dict={"w": torch.arange(4.0)}, step=5).result()
        assert set(result.commits) == {f"{h1.url}/alice/mirror", f"{h2.url}/alice/mirror"}
        from safetensors.torch import load_file

        for hub, other in ((h1, h2), (h2, h1)):
            hub_api = HfApi(endpoint=hub.url, token="x")
            cache = tmp_path / f"cache-{hub.url.rsplit(':', 1)[-1]}"
            heads = {b.name: b.target_commit for b in hub_api.list_repo_refs("alice/mirror").branches}
            index = RevisionIndex.from_json(
                open(hub_api.hf_hub_download("alice/mirror", "revisions.json", cache_dir=cache), "rb").read()
            )
            assert [(r.name, r.commit) for r in index.revisions] == [("step-0000005", heads["step-0000005"])]
            assert result.commits[f"{hub.url}/alice/mirror"] == heads["step-0000005"]
            weights = load_file(
                hub_api.hf_hub_download("alice/mirror", "model.safetensors", revision="step-0000005", cache_dir=cache)
            )
            assert torch.equal(weights["w"], torch.arange(4.0))
            card = open(
                hub_api.hf_hub_download("alice/mirror", "README.md", revision="step-0000005", cache_dir=cache)
            ).read()
            assert hub.url in card and other.url not in card  # each hub's card links to that hub


def test_ls_is_one_request_and_show_tag_reindex(api, local_hub, tmp_path):
    repo_id = "alice/browse"
    with Publisher(repo_id, hub=local_hub.url, spool_dir=tmp_path / "spool") as pub:
        for step in (1, 2, 3):
            pub.publish(state_dict={"w": torch.full((2,), float(step))}, step=step, metrics={"loss": 1.0 / step})
    from hubckpt.hub.select import resolve_hub
    from hubckpt.hub.writer import HubTarget

    target = HubTarget(resolve_hub(local_hub.url), repo_id)
    before = local_hub.ctx.stats["requests"]
    index, _ = target.read_index()
    assert local_hub.ctx.stats["requests"] - before == 1 and len(index.revisions) == 3

    as_json = json.loads(run_cli("ls", repo_id, "--hub", local_hub.url, "--json").stdout)
    assert [r["step"] for r in as_json["revisions"]] == [1, 2, 3]
    shown = run_cli("show", f"{repo_id}@step-0000002", "--hub", local_hub.url)
    assert shown.returncode == 0 and "@step-0000002  (step 2" in shown.stdout
    missing = run_cli("show", f"{repo_id}@nope", "--hub", local_hub.url)
    assert missing.returncode == 1 and "has no revision 'nope'" in missing.stderr
    assert run_cli("tag", repo_id, "step-0000002", "paper", "--hub", local_hub.url).returncode == 0
    assert "paper" in {t.name for t in api.list_repo_refs(repo_id).tags}
    reserved = run_cli("tag", repo_id, "step-0000002", "best", "--hub", local_hub.url)
    assert reserved.returncode == 1 and "managed by hubckpt" in reserved.stderr

    # Reindex rebuilds the same index from the branches (e.g. after revisions.json was damaged).
    api.upload_file(
        path_or_fileobj=b'{"format_version": 1, "revisions": []}', path_in_repo="revisions.json", repo_id=repo_id
    )
    assert run_cli("reindex", repo_id, "--hub", local_hub.url).returncode == 0
    assert [r.step for r in _index(api, repo_id).revisions] == [1, 2, 3]


def test_watch_once_publishes_complete_checkpoints(api, local_hub, trainer_run, tmp_path):
    import shutil

    run = tmp_path / "run"
    shutil.copytree(trainer_run, run)
    (run / "checkpoint-8").mkdir()  # still being written: no trainer_state.json yet
    shutil.copy(trainer_run / "checkpoint-2" / "model.safetensors", run / "checkpoint-8")
    out = run_cli(
        "watch",
        str(run),
        "--repo",
        "alice/watched",
        "--hub",
        local_hub.url,
        "--once",
        "--spool",
        str(tmp_path / "spool"),
    )
    assert out.returncode == 0, out.stderr
    branches = {b.name for b in api.list_repo_refs("alice/watched").branches}
    assert branches == {"main", "step-0000002", "step-0000004", "step-0000006"}


def test_unreachable_hub_fails_clearly_and_keeps_the_spool(tmp_path):
    from hubckpt.errors import HubUnavailableError

    torch.save({"w": torch.ones(2)}, tmp_path / "w.pt")
    pub = Publisher("alice/offline", hub="http://127.0.0.1:9", spool_dir=tmp_path / "spool")
    pub.publish(tmp_path / "w.pt", step=3)
    with pytest.raises(PublishFailedError) as raised:
        pub.close()
    assert isinstance(raised.value.__cause__, (HubUnavailableError, ConnectionError))
    assert list((tmp_path / "spool" / "jobs").glob("*/revision/model.safetensors"))
    assert Publisher(
        "alice/offline", hub="http://127.0.0.1:9", spool_dir=tmp_path / "spool", resume=False
    ).pending() == ["step-0000003"]


# The ambiguous-commit test (a real server fault) is in tests/test_publish_commits.py.


def test_no_write_access_is_a_clear_error(tmp_path):
    from hubckpt.errors import ReadOnlyTokenError
    from hubckpt.server import LocalHubServer

    with LocalHubServer(tmp_path / "hub") as hub:
        hub.ctx.store.add_account("bob", "user")
        _, read_token = hub.ctx.store.create_token("bob", "read", "ro")
        _, write_token = hub.ctx.store.create_token("bob", "write", "rw")
        HfApi(endpoint=hub.url, token=write_token).create_repo("bob/ro")
        pub = Publisher("bob/ro", hub=hub.url, token=read_token, spool_dir=tmp_path / "spool")
        pub.publish(state_dict={"w": torch.ones(2)}, step=1)
        with pytest.raises(PublishFailedError) as raised:  # tests/test_hub_reach.py: more cases
            pub.close()
        cause = raised.value.__cause__
        assert isinstance(cause, ReadOnlyTokenError) and "is a read token" in str(cause)


def test_trainer_callback_publishes_while_training(api, local_hub, tmp_path):
    import transformers
    from transformers import GPT2LMHeadModel, Trainer, TrainingArguments

    from hubckpt.integrations.transformers import HubckptCallback

    from .factories import tiny_gpt2_config

    transformers.logging.set_verbosity_error()
    torch.manual_seed(0)
    gen = torch.Generator().manual_seed(0)
    data = [
        {"input_ids": torch.randint(0, 32, (8,), generator=gen), "labels": torch.randint(0, 32, (8,), generator=gen)}
        for _ in range(16)
    ]
    args = TrainingArguments(
        output_dir=str(tmp_path / "out"),
        max_steps=6,
        save_steps=2,
        save_total_limit=1,
        per_device_train_batch_size=4,
        report_to=[],
        use_cpu=True,
        disable_tqdm=True,
    )
    callback = HubckptCallback("alice/callback", hub=local_hub.url, spool_dir=tmp_path / "spool")
    Trainer(model=GPT2LMHeadModel(tiny_gpt2_config()), args=args, train_dataset=data, callbacks=[callback]).train()
    index = _index(api, "alice/callback")
    # save_total_limit=1 deleted the older folders right away; the hard-linked snapshots were published anyway.
    assert [r.name for r in index.revisions] == ["step-0000002", "step-0000004", "step-0000006"]
    assert index.final == "step-0000006"
    import pickle

    assert pickle.loads(pickle.dumps(callback)).repo_id == "alice/callback"


def test_uploads_pick_lfs_even_with_xet_enabled(api, local_hub, tmp_path, monkeypatch):
    """Users have hf_xet installed and Xet enabled; the local hub speaks LFS only."""
    from huggingface_hub import constants

    from hubckpt.hub.commits import commit_folder

    monkeypatch.setattr(constants, "HF_HUB_DISABLE_XET", False)
    with Publisher("alice/xet-on", hub=local_hub.url, spool_dir=tmp_path / "spool") as pub:
        pub.publish(state_dict={"w": torch.randn(64, 64)}, step=1).result()
    folder = tmp_path / "plain"
    folder.mkdir()
    (folder / "weights.safetensors").write_bytes(b"\0" * 2048)
    (folder / "notes.txt").write_text("hi")
    api.create_repo("alice/xet-on-folder")
    commit_folder(api, "alice/xet-on-folder", folder, commit_message="files")
    assert set(api.list_repo_files("alice/xet-on-folder")) >= {"weights.safetensors", "notes.txt"}


def test_only_network_failures_are_retried():
    import errno

    import httpx2
    from huggingface_hub.errors import HfHubHTTPError

    from hubckpt.errors import DiskFullError
    from hubckpt.hub.retries import is_transient

    def http_error(status: int) -> HfHubHTTPError:
        request = httpx2.Request("GET", "http://127.0.0.1/x")
        return HfHubHTTPError("boom", response=httpx2.Response(status, request=request))

    assert is_transient(httpx2.ReadTimeout("slow")) and is_transient(httpx2.ConnectError("refused"))
    assert is_transient(ConnectionResetError()) and is_transient(http_error(503)) and is_transient(http_error(429))
    assert not is_transient(http_error(403)) and not is_transient(http_error(412))
    assert not is_transient(FileNotFoundError("spool file gone"))
    assert not is_transient(DiskFullError(errno.ENOSPC, "full"))
