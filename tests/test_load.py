"""The consumer side against the real local hub: list, resolve, load, lazy reads, integrity, one cache."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
import torch
from huggingface_hub.errors import RepositoryNotFoundError, RevisionNotFoundError

import hubckpt
from hubckpt.errors import AmbiguousRevisionError, HubckptError, IntegrityError, NoSafetensorsError, RevisionLookupError
from hubckpt.publishing import Publisher

from .factories import tiny_gpt2_config

STEPS = (10, 20, 30, 40)
LOSSES = (4.0, 2.0, 3.0, 2.5)  # best: step 20


def _model(step: int):
    from transformers import GPT2LMHeadModel

    torch.manual_seed(step)
    return GPT2LMHeadModel(tiny_gpt2_config(n_embd=64, architectures=["GPT2LMHeadModel"]))


@pytest.fixture(scope="module")
def published(local_hub, tmp_path_factory):
    """A GPT-2 published at 4 steps (sharded, so shard selection is visible); state dicts by step."""
    tmp = tmp_path_factory.mktemp("load")
    repo_id = "alice/load-run"
    companions = tmp / "companions"
    _model(0).config.save_pretrained(companions)
    states = {}
    with Publisher(
        repo_id, hub=local_hub.url, spool_dir=tmp / "spool", monitor="eval_loss", mode="min", max_shard_size="64KB"
    ) as pub:
        for step, loss in zip(STEPS, LOSSES):
            model = _model(step)
            # a frozen embedding: identical bytes in every revision, so one blob in the cache
            with torch.no_grad():
                model.transformer.wpe.weight.fill_(0.5)
            states[step] = {k: v.clone() for k, v in model.state_dict().items()}
            pub.publish(
                state_dict=model.state_dict(),
                step=step,
                metrics={"eval_loss": loss},
                final=step == 40,
                companions=[companions / "config.json"],
            )
    return repo_id, states


@pytest.fixture
def hf_cache(tmp_path, monkeypatch):
    """A fresh default huggingface_hub cache (and hubckpt's verified markers / header cache under HF_HOME)."""
    from huggingface_hub import constants

    home = tmp_path / "hf_home"
    monkeypatch.setattr(constants, "HF_HOME", str(home))
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(home / "hub"))
    return home / "hub"


def test_list_revisions_one_request_sorted(published, local_hub):
    repo_id, _ = published
    revisions = hubckpt.list_revisions(repo_id, hub=local_hub.url)
    assert [r.step for r in revisions] == list(STEPS)
    assert [r.metrics["eval_loss"] for r in revisions] == list(LOSSES)
    assert all(len(r.commit) == 40 and r.size > 0 and r.date for r in revisions)
    assert revisions[1].tags == ["best"] and revisions[3].tags == ["final"]


def test_resolve_words_steps_and_match(published, local_hub, api):
    repo_id, _ = published
    heads = {b.name: b.target_commit for b in api.list_repo_refs(repo_id).branches}
    best = hubckpt.resolve_revision(repo_id, "best", hub=local_hub.url)
    assert best.step == 20 and best.commit == heads["step-0000020"]
    assert hubckpt.resolve_revision(repo_id, "latest", hub=local_hub.url).step == 40
    assert hubckpt.resolve_revision(repo_id, hub=local_hub.url).step == 40
    assert hubckpt.resolve_revision(repo_id, "final", hub=local_hub.url).step == 40
    assert hubckpt.resolve_revision(repo_id, step=30, hub=local_hub.url).name == "step-0000030"
    assert hubckpt.resolve_revision(repo_id, step=26, match="nearest", hub=local_hub.url).step == 30
    assert hubckpt.resolve_revision(repo_id, step=29, match="at_or_before", hub=local_hub.url).step == 20
    by_commit = hubckpt.resolve_revision(repo_id, heads["step-0000010"], hub=local_hub.url)
    assert by_commit.step == 10 and by_commit.name == "step-0000010"
    short = hubckpt.resolve_revision(repo_id, heads["step-0000010"][:10], hub=local_hub.url)
    assert short.commit == heads["step-0000010"]
    assert hubckpt.resolve_revision(repo_id, "step-0000040", hub=local_hub.url).tags == ["final"]


def test_missing_step_names_the_nearest(published, local_hub):
    repo_id, _ = published
    with pytest.raises(RevisionLookupError) as caught:
        hubckpt.resolve_revision(repo_id, step=25, hub=local_hub.url)
    assert isinstance(caught.value, LookupError) and isinstance(caught.value, HubckptError)
    assert caught.value.nearest == ["step-0000020", "step-0000030"]
    assert "step-0000020 (step 20)" in str(caught.value) and "step-0000030 (step 30)" in str(caught.value)
    with pytest.raises(RevisionLookupError, match="nearest: step-0000010"):
        hubckpt.resolve_revision(repo_id, step=5, match="at_or_before", hub=local_hub.url)


def test_unknown_repo_revision_and_ambiguous_name(published, local_hub, api, cli):
    repo_id, _ = published
    with pytest.raises(RepositoryNotFoundError):
        hubckpt.list_revisions("alice/does-not-exist", hub=local_hub.url)
    with pytest.raises(RevisionNotFoundError) as caught:
        hubckpt.resolve_revision(repo_id, "nope", hub=local_hub.url)
    assert isinstance(caught.value, HubckptError) and "has no revision 'nope'" in str(caught.value)
    api.create_tag(repo_id, tag="step-0000030", revision="step-0000010")
    try:
        with pytest.raises(AmbiguousRevisionError, match="both a branch"):
            hubckpt.resolve_revision(repo_id, "step-0000030", hub=local_hub.url)
        shown = cli("show", f"{repo_id}@step-0000030", "--hub", local_hub.url)
        assert shown.returncode == 1 and "is both a branch" in shown.stderr
        # a step still resolves: it names the published revision, not a ref
        assert hubckpt.resolve_revision(repo_id, step=30, hub=local_hub.url).name == "step-0000030"
    finally:
        api.delete_tag(repo_id, tag="step-0000030")


def test_load_state_dict_values_and_only_needed_shards(published, local_hub, hf_cache):
    repo_id, states = published
    full = hubckpt.load_state_dict(repo_id, step=30, hub=local_hub.url)
    expected = states[30]
    assert set(full) == set(expected)  # lm_head.weight, tied to wte and stored once, comes back as an alias
    assert all(torch.equal(full[k], expected[k]) for k in expected)
    assert full["lm_head.weight"].data_ptr() == full["transformer.wte.weight"].data_ptr()
    # one key from a fresh cache: only its shard is downloaded
    import shutil

    shutil.rmtree(hf_cache)
    key = "transformer.h.0.mlp.c_fc.weight"
    one = hubckpt.load_state_dict(repo_id, "best", keys=[key], dtype=torch.float16, hub=local_hub.url)
    assert list(one) == [key] and one[key].dtype == torch.float16
    assert torch.equal(one[key], states[20][key].half())
    snapshot = next((hf_cache / f"models--{repo_id.replace('/', '--')}" / "snapshots").iterdir())
    shards = sorted(p.name for p in snapshot.glob("model-*.safetensors"))
    index = json.loads((snapshot / "model.safetensors.index.json").read_text())
    assert shards == [index["weight_map"][key]]
    with pytest.raises(KeyError, match="no tensor"):
        hubckpt.load_state_dict(repo_id, "best", keys=["nope"], hub=local_hub.url)
    prefixed = hubckpt.load_state_dict(repo_id, "best", prefix="transformer.h.0.attn.", hub=local_hub.url)
    assert set(prefixed) == {k for k in states[20] if k.startswith("transformer.h.0.attn.")}
    head = hubckpt.load_state_dict(repo_id, "best", keys=["lm_head.weight"], hub=local_hub.url)
    assert torch.equal(head["lm_head.weight"], states[20]["lm_head.weight"])


def test_load_model_pins_commit_and_picks_architecture(published, local_hub, hf_cache, api):
    from transformers import GPT2LMHeadModel

    repo_id, states = published
    model = hubckpt.load_model(repo_id, step=20, hub=local_hub.url)
    assert type(model) is GPT2LMHeadModel
    heads = {b.name: b.target_commit for b in api.list_repo_refs(repo_id).branches}
    assert model.config._commit_hash == heads["step-0000020"]
    got = model.state_dict()
    assert all(torch.equal(got[k], v) for k, v in states[20].items() if k in got)


def test_open_revision_reads_one_tensor_by_range(published, local_hub, hf_cache):
    repo_id, states = published
    key = "transformer.h.0.attn.c_attn.weight"
    with hubckpt.open_revision(repo_id, step=40, hub=local_hub.url) as rev:
        assert key in rev.keys() and len(rev) == len(states[40]) - 1  # lm_head tied
        assert rev.shape(key) == tuple(states[40][key].shape) and rev.dtype(key) == torch.float32
        before = rev.bytes_received
        tensor = rev.get_tensor(key)
        moved = rev.bytes_received - before
        assert "lm_head.weight" in rev and "lm_head.weight" not in rev.keys()
        assert torch.equal(tensor, states[40][key])
        assert torch.equal(rev.get_tensor("lm_head.weight"), states[40]["lm_head.weight"])  # tied alias
        assert moved == states[40][key].numel() * 4  # exactly the tensor's bytes
        assert rev.bytes_received < sum(t.numel() * 4 for t in states[40].values())
    assert not list(hf_cache.glob("**/*.safetensors"))  # nothing downloaded


def test_one_cache_same_etag_on_every_branch(local_hub, hf_cache, api, tmp_path):
    """Identical files across revisions: same ETag on every branch, so one blob in the cache."""
    from huggingface_hub import get_hf_file_metadata, hf_hub_url

    repo_id = "alice/one-cache"
    frozen = {"w": torch.arange(1000.0)}
    with Publisher(repo_id, hub=local_hub.url, spool_dir=tmp_path / "spool") as pub:
        for step in (1, 2, 3):
            pub.publish(state_dict=frozen, step=step, metrics={"loss": 1.0 / step})
    names = [r.name for r in hubckpt.list_revisions(repo_id, hub=local_hub.url)]
    etags = {
        get_hf_file_metadata(hf_hub_url(repo_id, "model.safetensors", revision=n, endpoint=local_hub.url)).etag
        for n in names
    }
    assert len(etags) == 1 and len(names) == 3
    for name in names:
        assert torch.equal(hubckpt.load_state_dict(repo_id, name, hub=local_hub.url)["w"], frozen["w"])
    repo_cache = hf_cache / f"models--{repo_id.replace('/', '--')}"
    links = list((repo_cache / "snapshots").glob("*/model.safetensors"))
    assert len(links) == 3 and len({p.resolve() for p in links}) == 1
    assert {p.resolve().name for p in links} == {etags.pop()}


def _server_blob(local_hub, sha256: str) -> Path:
    return local_hub.ctx.blobs.path(sha256)


def test_corrupt_download_is_refused_and_removed(published, local_hub, hf_cache, cli, tmp_path):
    repo_id, states = published
    rev = hubckpt.resolve_revision(repo_id, step=10, hub=local_hub.url)
    from hubckpt.hub.reader import HubReader

    manifest = HubReader(local_hub.url, repo_id).manifest(rev.commit)
    key = "transformer.h.0.ln_1.weight"
    index = json.loads(HubReader(local_hub.url, repo_id).get("model.safetensors.index.json", rev.commit)[0])
    shard = index["weight_map"][key]
    sha = next(f["sha256"] for f in manifest["files"] if f["path"] == shard)
    blob = _server_blob(local_hub, sha)
    original = blob.read_bytes()
    blob.chmod(0o644)
    corrupted = bytearray(original)
    corrupted[-1] ^= 0xFF  # bit rot in the hub's copy: same size, same ETag
    blob.write_bytes(bytes(corrupted))
    try:
        with pytest.raises(IntegrityError, match=shard):
            hubckpt.load_state_dict(repo_id, step=10, keys=[key], hub=local_hub.url)
        assert not list(hf_cache.glob(f"**/{shard}")) and not list(hf_cache.glob(f"**/blobs/{sha}"))
        pulled = cli("pull", f"{repo_id}@step-0000010", str(tmp_path / "out"), "--hub", local_hub.url)
        assert pulled.returncode == 1 and f"{shard} is corrupt" in pulled.stderr
        assert not (tmp_path / "out").exists()
    finally:
        blob.write_bytes(original)
    loaded = hubckpt.load_state_dict(repo_id, step=10, keys=[key], hub=local_hub.url)
    assert torch.equal(loaded[key], states[10][key])


def test_repo_without_index_falls_back_to_refs(local_hub, api, tmp_path, caplog, cli):
    from safetensors.torch import save_file

    repo_id = "alice/plain-repo"
    api.create_repo(repo_id, exist_ok=True)
    save_file({"w": torch.arange(6.0)}, tmp_path / "model.safetensors")
    api.upload_file(path_or_fileobj=tmp_path / "model.safetensors", path_in_repo="model.safetensors", repo_id=repo_id)
    api.create_branch(repo_id, branch="v1")
    api.create_tag(repo_id, tag="paper", revision="v1")
    with caplog.at_level(logging.INFO, logger="hubckpt"):
        revisions = hubckpt.list_revisions(repo_id, hub=local_hub.url)
    assert "no revisions.json" in caplog.text
    assert {r.name for r in revisions} == {"main", "v1"}
    assert next(r for r in revisions if r.name == "v1").tags == ["paper"]
    assert all(r.metrics == {} and r.step is None for r in revisions)
    assert hubckpt.resolve_revision(repo_id, hub=local_hub.url).name == "main"
    sd = hubckpt.load_state_dict(repo_id, "paper", hub=local_hub.url)  # verified against the LFS sha256
    assert torch.equal(sd["w"], torch.arange(6.0))
    with pytest.raises(RevisionLookupError, match="no stepped revisions"):
        hubckpt.resolve_revision(repo_id, step=1, hub=local_hub.url)
    with pytest.raises(RevisionLookupError, match="no best"):
        hubckpt.resolve_revision(repo_id, "best", hub=local_hub.url)
    listing = cli("ls", repo_id, "--hub", local_hub.url)
    assert listing.returncode == 0 and "listed from its branches and tags" in listing.stdout
    assert [line.split()[0] for line in listing.stdout.splitlines()[1:3]] == ["main", "v1"]
    shown = cli("show", f"{repo_id}@paper", "--hub", local_hub.url)
    assert (
        shown.returncode == 0
        and "w     F32    6      model.safetensors" in shown.stdout
        and "tags: paper" in shown.stdout
    )


def test_repo_without_safetensors(local_hub, api, tmp_path):
    repo_id = "alice/pickles-only"
    api.create_repo(repo_id, exist_ok=True)
    torch.save({"w": torch.ones(2)}, tmp_path / "pytorch_model.bin")
    api.upload_file(path_or_fileobj=tmp_path / "pytorch_model.bin", path_in_repo="pytorch_model.bin", repo_id=repo_id)
    from huggingface_hub.errors import NotASafetensorsRepoError

    with pytest.raises(NoSafetensorsError, match="pytorch_model.bin") as caught:
        hubckpt.load_state_dict(repo_id, hub=local_hub.url)
    assert isinstance(caught.value, NotASafetensorsRepoError)
    with pytest.raises(NoSafetensorsError):
        hubckpt.open_revision(repo_id, hub=local_hub.url).keys()


def test_private_repo_needs_a_token(tmp_path, hf_cache):
    from huggingface_hub import HfApi

    from hubckpt.server import LocalHubServer

    with LocalHubServer(tmp_path / "hub") as hub:
        hub.ctx.store.add_account("carol", "user")
        token = hub.ctx.store.create_token("carol", "write", "ci")[1]
        carol = HfApi(endpoint=hub.url, token=token)
        carol.create_repo("carol/secret", private=True)
        with Publisher("carol/secret", hub=hub.url, token=token, spool_dir=tmp_path / "spool") as pub:
            pub.publish(state_dict={"w": torch.ones(3)}, step=1)
        with pytest.raises(RepositoryNotFoundError):
            hubckpt.list_revisions("carol/secret", hub=hub.url, token=False)
        with pytest.raises(RepositoryNotFoundError):
            hubckpt.load_state_dict("carol/secret", step=1, hub=hub.url, token=False)
        assert torch.equal(
            hubckpt.load_state_dict("carol/secret", step=1, hub=hub.url, token=token)["w"], torch.ones(3)
        )
        with hubckpt.open_revision("carol/secret", step=1, hub=hub.url, token=token) as rev:
            assert torch.equal(rev.get_tensor("w"), torch.ones(3))


def test_index_verbs():
    from hubckpt.formats.index import RevisionIndex, RevisionInfo

    index = RevisionIndex([RevisionInfo(f"s{s}", s, tokens=s * 100) for s in (1, 5, 9)], best="s5", final="s9")
    assert index.latest().name == "s9" and index.best_info().name == "s5" and index.final_info().name == "s9"
    assert index.at_step(5).name == "s5" and index.at_step(4) is None
    assert index.at_step(4, match="nearest").name == "s5" and index.at_step(3, match="nearest").name == "s1"
    assert index.at_step(8, match="at_or_before").name == "s5" and index.at_step(0, match="at_or_before") is None
    assert index.at_tokens(900).name == "s9"


def _repo_cache_bytes(hf_cache: Path, repo_id: str) -> int:
    folder = hf_cache / f"models--{repo_id.replace('/', '--')}" / "blobs"
    return sum(p.stat().st_size for p in folder.iterdir()) if folder.exists() else 0


@pytest.fixture(scope="module")
def many(local_hub, tmp_path_factory):
    """Eight revisions of ~40 KB each, all different."""
    repo_id = "alice/many"
    with Publisher(repo_id, hub=local_hub.url, spool_dir=tmp_path_factory.mktemp("many") / "spool") as pub:
        for step in range(1, 9):
            pub.publish(
                state_dict={"w": torch.full((10_000,), float(step))}, step=step * 100, metrics={"loss": 1.0 / step}
            )
    return repo_id


def test_iter_revisions_bounded_cache_stays_under_the_bound(many, local_hub, hf_cache):
    bound = 100_000  # two revisions' weights fit, three do not
    seen, peak = [], 0
    for rev in hubckpt.iter_revisions(many, hub=local_hub.url, cache="bounded", max_cache_bytes=bound):
        w = rev.state_dict()["w"]
        assert torch.all(w == rev.info.step / 100)
        seen.append(rev.info.step)
        peak = max(peak, _repo_cache_bytes(hf_cache, many))
    assert seen == [100 * s for s in range(1, 9)]
    assert 80_000 < peak <= bound  # measured on disk: it did hold two, never three


def test_iter_revisions_policies_and_selection(many, local_hub, hf_cache):
    from huggingface_hub import scan_cache_dir

    def cached_commits():
        repos = [r for r in scan_cache_dir(hf_cache).repos if r.repo_id == many]
        return {r.commit_hash for r in repos[0].revisions} if repos else set()

    items = []
    for rev in hubckpt.iter_revisions(many, every=200, hub=local_hub.url, cache="previous"):
        rev.state_dict()
        items.append(rev)
        assert cached_commits() == {rev.commit}  # the previous one is gone once the next is asked for
    assert [r.info.step for r in items] == [200, 400, 600, 800]
    kept = [rev.info.step for rev in hubckpt.iter_revisions(many, steps=[300, 450], match="nearest", hub=local_hub.url)]
    assert kept == [300, 400]  # 450 is equally near 400 and 500: the earlier wins
    with pytest.raises(RevisionLookupError, match="step 250"):
        hubckpt.iter_revisions(many, steps=[250], hub=local_hub.url)
    with pytest.raises(hubckpt.HubConfigError, match="max_cache_bytes"):
        hubckpt.iter_revisions(many, cache="bounded", hub=local_hub.url)
    # lazy reads of an iterated revision use the cached copy when there is one
    with items[-1].open() as lazy:
        assert torch.all(lazy.get_tensor("w") == 8.0) and lazy.bytes_received == 0


# -- the command line (in-process: a subprocess per call would cost seconds of imports) ---------------------


@pytest.fixture
def cli(capsys):
    """Run `hubckpt ARGS` in this process; (exit code, stdout, stderr)."""
    from types import SimpleNamespace

    from hubckpt.cli import main

    def run(*args: str, env: dict | None = None):
        capsys.readouterr()
        try:
            main(list(args))
        except SystemExit as e:
            code = e.code or 0
        out = capsys.readouterr()
        return SimpleNamespace(returncode=code, stdout=out.out, stderr=out.err)

    return run


def test_cli_ls_show(published, local_hub, cli):
    run_cli = cli

    repo_id, states = published
    listing = run_cli("ls", repo_id, "--hub", local_hub.url)
    assert listing.returncode == 0, listing.stderr
    lines = listing.stdout.splitlines()
    assert lines[0].split()[:3] == ["revision", "step", "tokens"] and "eval_loss" in lines[0]
    assert [line.split()[0] for line in lines[1:-1]] == [f"step-{s:07d}" for s in STEPS]
    assert lines[-1] == f"page: {local_hub.url}/{repo_id}"  # the model page on the local hub's web pages
    assert lines[2].rstrip().endswith("best") and lines[4].rstrip().endswith("final")
    as_json = json.loads(run_cli("ls", repo_id, "--hub", local_hub.url, "--json").stdout)
    assert [r["step"] for r in as_json["revisions"]] == list(STEPS) and as_json["best"] == "step-0000020"

    shown = run_cli("show", f"{repo_id}@best", "--hub", local_hub.url)
    assert shown.returncode == 0, shown.stderr
    out = shown.stdout
    assert f"{repo_id}@step-0000020  (step 20)" in out and "tags: best" in out
    assert "This is revision step-0000020" in out  # the card's summary, markdown stripped
    assert "eval_loss  2" in out and "checkpoint.json" not in out.split("Files")[0]
    assert "transformer.h.0.attn.c_attn.weight  F32    64x192" in out
    detail = json.loads(run_cli("show", f"{repo_id}@step-0000010", "--hub", local_hub.url, "--json").stdout)
    assert detail["revision"]["step"] == 10 and detail["manifest"]["step"] == 10
    assert detail["tensors"]["transformer.wte.weight"]["shape"] == [32, 64]


def test_cli_pull_loads_with_from_pretrained(published, local_hub, tmp_path, hf_cache, cli):
    from transformers import AutoModelForCausalLM

    run_cli = cli

    repo_id, states = published
    dest = tmp_path / "pulled"
    done = run_cli("pull", repo_id, str(dest), "--step", "30", "--hub", local_hub.url)
    assert done.returncode == 0, done.stderr
    assert "Pulled step-0000030 (step 30" in done.stdout
    manifest = json.loads((dest / "checkpoint.json").read_text())
    assert manifest["step"] == 30 and not (dest / "training_state").exists()
    assert "revision `step-0000030`" in (dest / "README.md").read_text()
    model = AutoModelForCausalLM.from_pretrained(dest)
    assert torch.equal(
        model.state_dict()["transformer.h.0.mlp.c_fc.weight"], states[30]["transformer.h.0.mlp.c_fc.weight"]
    )
    again = run_cli("pull", f"{repo_id}@best", str(dest), "--hub", local_hub.url)
    assert again.returncode == 1 and "exists and is not empty" in again.stderr


def test_cli_diff_reports_changed_tensors(published, local_hub, cli):
    run_cli = cli

    repo_id, states = published
    out = run_cli("diff", f"{repo_id}@step-0000010", "@step-0000020", "--hub", local_hub.url, "--json")
    assert out.returncode == 0, out.stderr
    doc = json.loads(out.stdout)
    rows = {t["name"]: t for t in doc["tensors"]}
    a, b = states[10], states[20]
    name = "transformer.h.0.mlp.c_fc.weight"
    assert rows[name]["diff_norm"] == pytest.approx(float((b[name].double() - a[name].double()).norm()), rel=1e-9)
    assert rows[name]["relative"] == pytest.approx(float((b[name] - a[name]).norm() / a[name].norm()), rel=1e-5)
    assert rows["transformer.wpe.weight"]["diff_norm"] == 0  # frozen
    table = run_cli("diff", f"{repo_id}@step-0000010", f"{repo_id}@step-0000020", "--hub", local_hub.url)
    assert "shared tensors changed" in table.stdout and "transformer.wpe.weight" not in table.stdout


@pytest.mark.parametrize(
    "args, message",
    [
        (("ls", "alice/nope-nope"), "Repository not found"),
        (("ls", "alice/load-run@best"), "for one revision use `hubckpt show alice/load-run@best`"),
        (("show", "alice/load-run@nope"), "has no revision 'nope'"),
        (("pull", "alice/load-run", "{tmp}/x", "--step", "25"), "no revision at step 25; nearest: step-0000020"),
        (("show", "alice/load-run"), "Expected REPO@REVISION"),
        (("diff", "alice/load-run@step-0000010", "@missing"), "has no revision 'missing'"),
        # asked for explicitly, a training state the revision lacks was silently left out
        (("pull", "alice/load-run@step-0000010", "{tmp}/x", "--training-state"), "has no training_state/"),
    ],
)
def test_cli_bad_input_is_one_line(published, local_hub, tmp_path, args, message, cli):
    done = cli(*[a.replace("{tmp}", str(tmp_path)) for a in args], "--hub", local_hub.url)
    assert done.returncode == 1 and message in done.stderr, done.stderr
    assert "Traceback (most recent call last)" not in done.stderr
    assert len([line for line in done.stderr.splitlines() if not line.startswith(("Using ", "(run with"))]) == 1


@pytest.mark.slow
def test_console_script_error_has_no_traceback(published, local_hub):
    from .helpers import run_cli

    done = run_cli(
        "pull", "alice/load-run@step-0000010", "/nonexistent-parent/x", "--step", "10", "--hub", local_hub.url
    )
    assert done.returncode == 1 and "Pass one of revision, step and tokens" in done.stderr
    assert "Traceback (most recent call last)" not in done.stderr


def test_reads_stay_pinned_when_the_branch_moves(local_hub, api, tmp_path, hf_cache):
    from safetensors.torch import save_file

    repo_id = "alice/moving"
    with Publisher(repo_id, hub=local_hub.url, spool_dir=tmp_path / "spool") as pub:
        pub.publish(state_dict={"w": torch.zeros(64), "v": torch.ones(4)}, step=1)
    with hubckpt.open_revision(repo_id, step=1, hub=local_hub.url) as rev:
        assert rev.shape("w") == (64,)
        pinned = rev.commit
        # someone pushes other weights onto the branch meanwhile
        save_file({"w": torch.full((64,), 7.0), "v": torch.ones(4)}, tmp_path / "model.safetensors")
        api.upload_file(
            path_or_fileobj=tmp_path / "model.safetensors",
            path_in_repo="model.safetensors",
            repo_id=repo_id,
            revision="step-0000001",
        )
        assert torch.equal(rev.get_tensor("w"), torch.zeros(64))
    assert torch.equal(hubckpt.load_state_dict(repo_id, pinned, hub=local_hub.url)["w"], torch.zeros(64))
    # once cached, a commit loads with no request at all (commits never change)
    before = local_hub.ctx.stats["requests"]
    assert torch.equal(hubckpt.load_state_dict(repo_id, pinned, hub=local_hub.url)["w"], torch.zeros(64))
    assert local_hub.ctx.stats["requests"] == before
    moved = hubckpt.resolve_revision(repo_id, "step-0000001", hub=local_hub.url)
    assert moved.commit != pinned  # by name: the branch head, described from its checkpoint.json


def test_bad_safetensors_header_is_an_error_not_a_wrong_tensor(local_hub, api, tmp_path, hf_cache):
    import struct

    repo_id = "alice/bad-header"
    api.create_repo(repo_id, exist_ok=True)
    header = json.dumps({"w": {"dtype": "F32", "shape": [1000], "data_offsets": [0, 4000]}}).encode()
    (tmp_path / "model.safetensors").write_bytes(struct.pack("<Q", len(header)) + header + b"\0" * 400)
    api.upload_file(path_or_fileobj=tmp_path / "model.safetensors", path_in_repo="model.safetensors", repo_id=repo_id)
    with hubckpt.open_revision(repo_id, hub=local_hub.url) as rev:
        with pytest.raises(IntegrityError, match="past the file's 400 data bytes"):
            rev.get_tensor("w")


def test_header_parser_checks_offsets_against_shape():
    from hubckpt.hub.reader import header_length, parse_header

    good = {"a": {"dtype": "BF16", "shape": [2, 3], "data_offsets": [0, 12]}, "__metadata__": {"format": "pt"}}
    assert parse_header(json.dumps(good).encode(), "f", data_size=12)["a"]["shape"] == [2, 3]
    for bad, why in [
        ({"a": {"dtype": "F32", "shape": [2, 3], "data_offsets": [0, 12]}}, "offsets"),
        ({"a": {"dtype": "Q4", "shape": [1], "data_offsets": [0, 1]}}, "unknown dtype"),
        ({"a": {"shape": [1]}}, "malformed"),
    ]:
        with pytest.raises(IntegrityError, match=why):
            parse_header(json.dumps(bad).encode(), "f")
    with pytest.raises(IntegrityError, match="not JSON"):
        parse_header(b"{nope", "f")
    with pytest.raises(IntegrityError, match="header length"):
        header_length((2**40).to_bytes(8, "little"), "f")


def test_download_folder_gets_training_state(local_hub, tmp_path, hf_cache):
    from hubckpt.load import Revision

    repo_id = "alice/with-state"
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.ones(3))], lr=0.1, momentum=0.9)
    with Publisher(repo_id, hub=local_hub.url, spool_dir=tmp_path / "spool") as pub:
        pub.publish(
            state_dict={"w": torch.ones(3)},
            step=5,
            training_state={"optimizer": optimizer.state_dict(), "loop": {"step": 5}},
        )
    rev = Revision(repo_id, step=5, hub=local_hub.url)
    folder = rev.download_folder("training_state")
    assert folder is not None and folder.name == "training_state" and (folder / "optimizer.json").exists()
    assert folder.parent.name == rev.commit
    assert rev.download_folder("nothing-here") is None
    state = hubckpt.load_training_state(folder)
    assert state["loop"]["step"] == 5


def test_sharded_index_naming_a_missing_tensor_is_refused(local_hub, api, tmp_path, hf_cache):
    from safetensors.torch import save_file

    repo_id = "alice/bad-index"
    api.create_repo(repo_id, exist_ok=True)
    save_file({"a": torch.ones(2)}, tmp_path / "model-00001-of-00001.safetensors")
    (tmp_path / "model.safetensors.index.json").write_text(
        json.dumps(
            {
                "metadata": {},
                "weight_map": {"a": "model-00001-of-00001.safetensors", "b": "model-00001-of-00001.safetensors"},
            }
        )
    )
    api.upload_folder(folder_path=tmp_path, repo_id=repo_id)
    with hubckpt.open_revision(repo_id, hub=local_hub.url) as rev:
        assert rev.keys() == ["a", "b"] and torch.equal(rev.get_tensor("a"), torch.ones(2))
        with pytest.raises(IntegrityError, match="whose header has no such tensor"):
            rev.get_tensor("b")
    with pytest.raises(KeyError):
        hubckpt.load_state_dict(repo_id, keys=["c"], hub=local_hub.url)
    with pytest.raises(IntegrityError, match="lacks b"):
        hubckpt.load_state_dict(repo_id, keys=["b"], hub=local_hub.url)
    with pytest.raises(IntegrityError, match="which no shard holds"):
        hubckpt.load_state_dict(repo_id, hub=local_hub.url)
