"""Loading from strangers: a hostile hub and hostile repos (tests/hostile_hub.py) can neither write outside
the cache, take the token, feed wrong tensors, exhaust memory or time, nor crash the CLI with a traceback."""

from __future__ import annotations

import hashlib
import json
import socket
import struct
import time
from pathlib import Path

import pytest
import torch

import hubckpt
from hubckpt.errors import HubckptError, HubContentError, HubUnavailableError, IntegrityError

from .helpers import run_cli
from .hostile_hub import COMMIT, HostileHub

REPO = "eve/run"
OUTSIDE = "../../../../../../OUTSIDE/evil-ref"


@pytest.fixture(autouse=True)
def _own_repo(monkeypatch):
    """A repo name per test: the hostile hub serves every repo at one commit, and the cache is shared."""
    import sys
    import uuid

    monkeypatch.setattr(sys.modules[__name__], "REPO", f"eve/run-{uuid.uuid4().hex[:8]}")


def safetensors_bytes(entries: dict[str, tuple[str, list[int], list[int]]], data: bytes) -> bytes:
    """A safetensors file with a hand-written header: name -> (dtype, shape, [start, end])."""
    header = json.dumps({k: {"dtype": d, "shape": s, "data_offsets": o} for k, (d, s, o) in entries.items()})
    raw = header.encode()
    return struct.pack("<Q", len(raw)) + raw + data


def plain_weights() -> bytes:
    w = torch.tensor([1.0, 2.0, 3.0])
    v = torch.tensor([4.0, 5.0, 6.0])
    return safetensors_bytes(
        {"w": ("F32", [3], [0, 12]), "v": ("F32", [3], [12, 24])}, w.numpy().tobytes() + v.numpy().tobytes()
    )


def repo_files(
    weights: bytes | None = None,
    *,
    manifest: dict | None = None,
    index: dict | bytes | None = None,
    extra: dict[str, bytes] | None = None,
) -> dict[str, bytes]:
    """A revision `step-1` at COMMIT: model.safetensors, checkpoint.json and revisions.json (on main)."""
    files = {"model.safetensors": weights if weights is not None else plain_weights(), **(extra or {})}
    listed = [{"path": p, "sha256": hashlib.sha256(b).hexdigest(), "size": len(b)} for p, b in sorted(files.items())]
    doc = {"format_version": 1, "step": 1, "metrics": {"loss": 1.5}, "files": listed, **(manifest or {})}
    files["checkpoint.json"] = json.dumps(doc).encode()
    if index is None:
        index = {"format_version": 1, "revisions": [{"name": "step-1", "step": 1, "commit": COMMIT, "size": 24}]}
    files["revisions.json"] = index if isinstance(index, bytes) else json.dumps(index).encode()
    return files


def hostile(**kwargs) -> HostileHub:
    kwargs.setdefault("branches", {"main": COMMIT, "step-1": COMMIT})
    return HostileHub(repo_id=REPO, **kwargs)


def files_under(root: Path) -> set[Path]:
    return {p for p in root.rglob("*") if p.is_file()} if root.exists() else set()


# -- writes outside the cache ---------------------------------------------------------------------------


def test_an_index_commit_that_is_a_path_is_refused_before_any_download(tmp_path):
    cache = tmp_path / "a" / "b" / "c" / "d" / "cache"
    index = {"format_version": 1, "revisions": [{"name": "step-1", "step": 1, "commit": OUTSIDE}]}
    with hostile(files=repo_files(index=index)) as hub:
        with pytest.raises(HubContentError, match="not a 40-hex commit id") as info:
            hubckpt.load_state_dict(REPO, step=1, hub=hub.url, cache_dir=cache)
    assert info.value.repo_id == REPO and info.value.path == "revisions.json (revision step-1)"
    assert files_under(tmp_path) == files_under(cache)  # nothing outside the cache (nothing at all, here)


def test_a_ref_whose_target_commit_is_a_path_is_refused(tmp_path):
    files = repo_files()
    del files["revisions.json"]
    with hostile(files=files, branches={"main": COMMIT, "step-1": OUTSIDE}) as hub:
        with pytest.raises(HubContentError, match="targetCommit of step-1"):
            hubckpt.list_revisions(REPO, hub=hub.url)


def test_an_x_repo_commit_header_that_is_a_path_is_refused(tmp_path):
    cache = tmp_path / "x" / "y" / "z" / "cache"
    files = repo_files()
    del files["revisions.json"]
    with hostile(files=files, x_repo_commit=OUTSIDE) as hub:
        with pytest.raises(HubContentError, match="X-Repo-Commit"):
            hubckpt.load_state_dict(REPO, COMMIT, hub=hub.url, cache_dir=cache)
    assert files_under(tmp_path) == files_under(cache)


def test_a_sha256_that_is_a_path_never_becomes_a_cache_key(tmp_path):
    files = repo_files()
    doc = json.loads(files["checkpoint.json"])
    doc["files"][0]["sha256"] = "../../../OUTSIDE/header-cache"
    files["checkpoint.json"] = json.dumps(doc).encode()
    with hostile(files=files) as hub:
        with pytest.raises(HubContentError, match="is not a sha256"):
            with hubckpt.open_revision(REPO, step=1, hub=hub.url) as rev:
                rev.keys()


def test_a_repo_claiming_another_files_sha256_cannot_plant_its_header(tmp_path):
    """The header cache is shared: a repo whose checkpoint.json claims the sha256 of someone else's file
    (and serves another header) must not change what a later lazy open of the real file reads."""
    import uuid

    w = torch.tensor([1.0, 2.0, float(uuid.uuid4().int % 1000)])  # a file no other test has
    real = safetensors_bytes({"w": ("F32", [3], [0, 12])}, w.numpy().tobytes())
    planted = safetensors_bytes({"w": ("F32", [1], [0, 4]), "pad": ("U8", [8], [4, 12])}, w.numpy().tobytes())
    evil_files = repo_files(planted)
    doc = json.loads(evil_files["checkpoint.json"])
    doc["files"][0]["sha256"] = hashlib.sha256(real).hexdigest()  # claims the real file's hash
    evil_files["checkpoint.json"] = json.dumps(doc).encode()
    evil_repo = f"{REPO}-evil"
    with HostileHub(repo_id=evil_repo, files=evil_files, branches={"main": COMMIT, "step-1": COMMIT}) as evil:
        with hubckpt.open_revision(evil_repo, step=1, hub=evil.url) as rev:
            assert set(rev.keys()) == {"w", "pad"}  # its own file, read as it is
    with hostile(files=repo_files(real)) as hub:
        with hubckpt.open_revision(REPO, step=1, hub=hub.url) as rev:
            assert set(rev.keys()) == {"w"}
            assert rev.get_tensor("w").tolist() == w.tolist()


def test_a_tampered_header_cache_entry_is_checked_again_not_trusted():
    from hubckpt.load.lazy import _header_cache_dir

    before = set(_header_cache_dir().glob("*.json")) if _header_cache_dir().exists() else set()
    with hostile(files=repo_files()) as hub:
        with hubckpt.open_revision(REPO, step=1, hub=hub.url) as rev:
            assert set(rev.keys()) == {"w", "v"}
        added = set(_header_cache_dir().glob("*.json")) - before
        assert added
        overlapping = {"w": {"dtype": "F32", "shape": [3], "data_offsets": [0, 12]}}
        overlapping["v"] = overlapping["w"]
        for entry in added:  # v aliasing w's bytes: refused when read back, the header is read again
            doc = json.loads(entry.read_text())
            entry.write_text(json.dumps({**doc, "raw": json.dumps(overlapping), "header": overlapping}))
        with hubckpt.open_revision(REPO, step=1, hub=hub.url) as rev:
            assert rev.get_tensor("v").tolist() == [4.0, 5.0, 6.0]


@pytest.mark.parametrize("name", ["../../escape.safetensors", "/etc/passwd", "a/\x1b[2Jb"])
def test_hostile_file_names_are_refused_as_errors(name):
    files = repo_files()
    doc = json.loads(files["checkpoint.json"])
    doc["files"].append({"path": name, "sha256": None, "size": 1})
    files["checkpoint.json"] = json.dumps(doc).encode()
    with hostile(files=files) as hub:
        with pytest.raises(HubContentError, match="not a valid repo path"):
            hubckpt.load_state_dict(REPO, step=1, hub=hub.url)


def test_a_training_state_naming_a_local_file_reads_nothing_of_the_user(tmp_path):
    from safetensors.torch import save_file

    secret = tmp_path / "secret.safetensors"
    save_file({"x": torch.tensor([42.0])}, secret)
    loop = {"format_version": 1, "state": {"step": 1}, "tensors_file": str(secret)}
    files = repo_files(extra={"training_state/loop.json": json.dumps(loop).encode()})
    model = torch.nn.Module()
    model.register_parameter("w", torch.nn.Parameter(torch.zeros(3)))
    model.register_parameter("v", torch.nn.Parameter(torch.zeros(3)))
    with hostile(files=files) as hub:
        with pytest.raises(HubContentError, match="tensors file") as info:
            hubckpt.restore(REPO, model=model, step=1, hub=hub.url)
    assert model.w.detach().tolist() == [0.0, 0.0, 0.0]
    assert (info.value.repo_id, info.value.path) == (REPO, "training_state/loop.json")


def _hostile_tensors_file(tmp_path: Path, tensors_file: str) -> dict[str, bytes]:
    """A revision whose optimizer state names `tensors_file` (a local secret of the user's) as its tensors."""
    from safetensors.torch import save_file

    save_file({"x": torch.tensor([42.0])}, tmp_path / "secret.safetensors")
    part = {"format_version": 1, "state": {"x": {"__tensor__": "x"}}, "tensors_file": tensors_file}
    return repo_files(extra={"training_state/optimizer.json": json.dumps(part).encode()})


@pytest.mark.parametrize("kind", ["absolute", "relative"])
def test_pull_trainer_checkpoint_reads_no_local_file_a_repo_names(tmp_path, kind):
    secret = tmp_path / "secret.safetensors"
    named = str(secret) if kind == "absolute" else "../../../../../../../../.." + str(secret)
    dest = tmp_path / "dest"
    with hostile(files=_hostile_tensors_file(tmp_path, named)) as hub:
        out = run_cli("pull", REPO, str(dest), "--step", "1", "--trainer-checkpoint", "--hub", hub.url)
    assert out.returncode == 1, out.stdout + out.stderr
    assert "Traceback" not in out.stderr and "tensors file" in out.stderr, out.stderr
    assert not (dest / "optimizer.pt").exists()


def test_load_training_state_reads_no_file_outside_its_folder(tmp_path):
    from hubckpt.conversion.training_state import load_training_state

    folder = tmp_path / "training_state"
    folder.mkdir()
    files = _hostile_tensors_file(tmp_path, str(tmp_path / "secret.safetensors"))
    (folder / "optimizer.json").write_bytes(files["training_state/optimizer.json"])
    with pytest.raises(HubContentError, match="tensors file"):
        load_training_state(folder)
    (folder / "optimizer.json").write_bytes(b"[" * 200_000 + b"]" * 200_000)
    with pytest.raises(HubContentError, match="nested deeper"):
        load_training_state(folder)


@pytest.mark.parametrize("tied", [["lm_head.weight"], {"lm_head.weight": 3}, "w"])
def test_a_tied_map_that_is_not_names_to_names_is_a_typed_error(tied):
    files = repo_files(manifest={"weights": {"tied": tied}})
    del files["revisions.json"]
    with hostile(files=files) as hub:
        with pytest.raises(HubContentError, match="tied"):
            hubckpt.load_state_dict(REPO, COMMIT, hub=hub.url)


def test_a_config_json_that_is_a_bomb_is_a_typed_error():
    """A missing output head is looked up in config.json (tie_word_embeddings): it is read capped too."""
    files = repo_files(extra={"config.json": b"[" * 200_000 + b"]" * 200_000})
    with hostile(files=files) as hub:
        with pytest.raises(HubContentError, match="config.json"):
            hubckpt.load_state_dict(REPO, step=1, keys=["lm_head.weight"], hub=hub.url)


def test_a_log_history_that_is_a_bomb_is_a_typed_error(tmp_path):
    part = {"format_version": 1, "state": {"step": 1}, "tensors_file": None}
    files = repo_files(
        extra={
            "training_state/loop.json": json.dumps(part).encode(),
            "log_history.json": b'{"log_history": ' + b"[" * 200_000 + b"]" * 200_000 + b"}",
        }
    )
    with hostile(files=files) as hub:
        out = run_cli("pull", REPO, str(tmp_path / "d"), "--step", "1", "--trainer-checkpoint", "--hub", hub.url)
    assert out.returncode == 1 and "Traceback" not in out.stderr, out.stderr
    assert "log_history.json" in out.stderr and "nested deeper" in out.stderr, out.stderr


# -- the token reaches no other origin -------------------------------------------------------------------


def _port_pair() -> tuple[int, int]:
    """A free port P and a free port whose digits start with P's (`http://h:P` is a prefix of `http://h:P7`)."""
    for port in range(2100, 6500):
        socks = []
        try:
            for p in (port, port * 10 + 7):
                s = socket.socket()
                s.bind(("127.0.0.1", p))
                socks.append(s)
            return port, port * 10 + 7
        except OSError:
            continue
        finally:
            for s in socks:
                s.close()
    pytest.skip("no free port pair")


def test_the_token_does_not_follow_a_range_redirect_to_another_port():
    hub_port, evil_port = _port_pair()
    with HostileHub(repo_id=REPO, files=repo_files(), port=evil_port) as evil:
        evil.branches = {"main": COMMIT, "step-1": COMMIT}
        target = f"{evil.url}/{REPO}/resolve/{COMMIT}/model.safetensors"
        with hostile(files=repo_files(), redirect={"model.safetensors": target}, port=hub_port) as hub:
            assert target.startswith(hub.url)  # what the old check trusted
            with hubckpt.open_revision(REPO, step=1, hub=hub.url, token="hf_secret") as rev:
                assert rev.get_tensor("v").tolist() == [4.0, 5.0, 6.0]
            assert hub.authorized()  # the hub itself got the token
        assert evil.requests and not evil.authorized()


def test_the_token_does_not_follow_a_pagination_link_to_another_origin():
    with hostile(files=repo_files()) as evil:
        with hostile(files=repo_files(), tree_next=f"{evil.url}/api/models/{REPO}/tree/main?page=1") as hub:
            from hubckpt.hub.reader import HubReader

            listed = HubReader(hub.url, REPO, token="hf_secret").list_files(COMMIT)
            assert "model.safetensors" in listed and hub.authorized()
        assert evil.requests and not evil.authorized()


def test_hubckpt_env_leaves_no_huggingface_co_token_for_the_stock_client(tmp_path):
    """`eval "$(hubckpt env --hub URL)"` in a shell holding an HF_TOKEN and a saved login: the stock client
    then talks to URL, and sends it neither."""
    import os
    import subprocess
    import sys

    hf_home = tmp_path / "hf"
    hf_home.mkdir()
    (hf_home / "token").write_text("hf_saved_login")
    stock = f"from huggingface_hub import list_repo_refs; list_repo_refs({REPO!r})"
    with hostile(files=repo_files()) as hub:
        script = f'eval "$({sys.executable} -m hubckpt env --hub {hub.url})" && {sys.executable} -c "{stock}"'
        env = {**os.environ, "HF_TOKEN": "hf_secret", "HF_HOME": str(hf_home)}
        out = subprocess.run(["bash", "-c", script], capture_output=True, text=True, env=env, timeout=120)
        assert out.returncode == 0, out.stderr
        assert any("/refs" in r.path for r in hub.requests)  # the stock client did talk to that hub
        assert not hub.authorized(), [r.headers.get("authorization") for r in hub.authorized()]


def test_hubckpt_env_with_a_token_says_it_replaces_the_huggingface_co_token(tmp_path):
    with hostile(files=repo_files()) as hub:
        out = run_cli("env", "--hub", hub.url, "--token", "local-secret")
    assert out.returncode == 0, out.stderr
    assert "export HF_TOKEN=local-secret" in out.stdout.splitlines()
    assert "replaces" in out.stderr and "huggingface.co" in out.stderr, out.stderr


# -- wrong tensors -------------------------------------------------------------------------------------------


def test_overlapping_tensors_are_refused_not_aliased():
    data = torch.tensor([1.0, 2.0, 3.0]).numpy().tobytes() * 2
    weights = safetensors_bytes(
        {"w": ("F32", [3], [0, 12]), "v": ("F32", [3], [0, 12]), "pad": ("U8", [12], [12, 24])}, data
    )
    with hostile(files=repo_files(weights)) as hub:
        with pytest.raises(IntegrityError, match="overlaps"):
            with hubckpt.open_revision(REPO, step=1, hub=hub.url) as rev:
                rev.get_tensor("v")


def test_negative_shapes_are_refused():
    weights = safetensors_bytes({"w": ("F32", [-1, -2], [0, 8])}, b"\0" * 8)
    with hostile(files=repo_files(weights)) as hub:
        with pytest.raises(IntegrityError, match="negative dimension"):
            with hubckpt.open_revision(REPO, step=1, hub=hub.url) as rev:
                rev.keys()


def test_a_206_of_another_range_is_refused():
    with hostile(files=repo_files(), range_mode="shifted") as hub:
        with pytest.raises(IntegrityError, match="exactly that range"):
            with hubckpt.open_revision(REPO, step=1, hub=hub.url) as rev:
                rev.get_tensor("w")


def test_a_200_with_the_whole_body_to_a_range_read_is_never_buffered():
    data = torch.zeros(1 << 20).numpy().tobytes()  # 4 MiB
    big = safetensors_bytes(
        {"w": ("F32", [3], [0, 12]), "big": ("F32", [1 << 20], [12, 12 + len(data)])}, b"\1" * 12 + data
    )
    with hostile(files=repo_files(big)) as hub:
        with hubckpt.open_revision(REPO, step=1, hub=hub.url) as rev:
            rev.keys()
            hub.range_mode = "whole"
            before = rev.bytes_received
            with pytest.raises(HubckptError):
                rev.get_tensor("w")
            assert rev.bytes_received - before < 512 * 1024


# -- exhaustion and hangs ---------------------------------------------------------------------------------


def test_a_listing_that_never_ends_is_cut_at_the_page_bound(monkeypatch):
    from hubckpt.hub import reader

    monkeypatch.setattr(reader, "MAX_LISTING_PAGES", 5, raising=False)
    with hostile(files=repo_files(), tree_next="forever") as hub:
        with pytest.raises(HubContentError, match="past 5 pages"):
            reader.HubReader(hub.url, REPO).list_files(COMMIT)
        assert len([r for r in hub.requests if "/tree/" in r.path]) <= 5


def test_a_gzip_bomb_index_is_refused_at_the_cap():
    bomb = b'{"revisions": [], "pad": "' + b"a" * (40 << 20) + b'"}'  # 40 MiB, over the 32 MiB cap
    with hostile(files=repo_files(index=bomb), gzip_files={"revisions.json"}) as hub:
        with pytest.raises(HubContentError, match="more than"):
            hubckpt.list_revisions(REPO, hub=hub.url)


def test_a_stalled_read_fails_within_the_documented_bound(monkeypatch):
    monkeypatch.setenv("HUBCKPT_HTTP_TIMEOUT", "0.5")  # bound: 2 x 0.5 s without progress, all tries together
    with hostile(files=repo_files(), stall_s=20) as hub:
        started = time.monotonic()
        with pytest.raises(HubUnavailableError, match="stalled read"):
            hubckpt.list_revisions(REPO, hub=hub.url)
        assert time.monotonic() - started < 4


def test_a_retry_after_longer_than_the_bound_fails_the_read_within_it(monkeypatch):
    monkeypatch.setenv("HUBCKPT_HTTP_TIMEOUT", "0.5")  # bound: 2 x 0.5 s without progress, all tries together
    with hostile(files=repo_files(), answer=(503, {"Retry-After": "300"}, {"error": "busy"})) as hub:
        started = time.monotonic()
        with pytest.raises(HubUnavailableError, match="Retry-After|wait"):
            hubckpt.list_revisions(REPO, hub=hub.url)
        assert time.monotonic() - started < 4


# -- malformed metadata: typed errors, one line in the CLI --------------------------------------------------

MALFORMED = {
    "not-json": b"{not json",
    "wrong-types": b'{"revisions": {"a": 1}}',
    "record-types": b'{"revisions": [{"name": "step-1", "step": "one"}]}',
    "deep": b"[" * 200_000 + b"]" * 200_000,
    "huge-size": b'{"revisions": [{"name": "step-1", "step": 1, "size": 1e400}]}',
}


@pytest.mark.parametrize("case", sorted(MALFORMED))
def test_a_malformed_index_is_a_typed_error(case):
    with hostile(files=repo_files(index=MALFORMED[case])) as hub:
        with pytest.raises(HubContentError) as info:
            hubckpt.list_revisions(REPO, hub=hub.url)
    assert info.value.path == "revisions.json" or info.value.path.startswith("revisions.json")


@pytest.mark.parametrize("case", ["not-json", "deep", "huge-size"])
def test_a_malformed_manifest_is_a_typed_error(case):
    bad = {
        "not-json": b"{not",
        "deep": b"[" * 200_000 + b"]" * 200_000,
        "huge-size": b'{"files": [{"path": "a", "size": 1e400}]}',
    }
    files = repo_files()
    del files["revisions.json"]
    files["checkpoint.json"] = bad[case]
    with hostile(files=files) as hub:
        with pytest.raises(HubContentError, match="checkpoint.json"):
            hubckpt.list_revisions(REPO, hub=hub.url)


def test_the_cli_prints_one_line_and_escapes_terminal_controls():
    title = "\x1b]0;pwned\x07"  # an OSC sequence (retitles the terminal): click's ANSI stripping leaves it
    index = {
        "format_version": 1,
        "revisions": [{"name": "step-1", "step": 1, "commit": COMMIT, "tags": [f"{title}red"]}],
    }
    with hostile(files=repo_files(index=index)) as hub:
        ok = run_cli("ls", REPO, "--hub", hub.url)
        hub.files["revisions.json"] = b"[" * 200_000
        bad = run_cli("ls", REPO, "--hub", hub.url)
    assert ok.returncode == 0, ok.stderr
    assert "\x1b" not in ok.stdout and "\x07" not in ok.stdout
    assert "\\x1b]0;pwned\\x07red" in ok.stdout
    assert bad.returncode == 1 and "Traceback" not in bad.stderr, bad.stderr
    errors = [line for line in bad.stderr.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1 and "revisions.json" in errors[0]


def test_server_text_the_cli_logs_on_stderr_comes_out_escaped():
    """A hub's error message is logged (retrying ...) and reported: on stderr too, no control character
    reaches the terminal."""
    hostile_text = "\x1b]0;pwned\x07 \x1b[2J busy"
    with hostile(files=repo_files(), answer=(503, {}, {"error": hostile_text})) as hub:
        out = run_cli("ls", REPO, "--hub", hub.url, env={"HUBCKPT_HTTP_TIMEOUT": "1"})
    assert out.returncode == 1, out.stderr
    assert "\\x1b]0;pwned\\x07" in out.stderr, out.stderr  # shown as text, in the retry warnings
    assert "\x1b" not in out.stderr and "\x07" not in out.stderr, out.stderr


def test_stderr_keeps_only_the_progress_bars_carriage_return(capsys):
    import logging
    import sys

    from hubckpt.cli._terminal import EscapingFormatter, escaped_output

    with escaped_output():
        sys.stderr.write("\r 50%|#####     | a\x1b[2Jb\n")  # what tqdm writes, with a hub's text in it
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(EscapingFormatter("%(message)s"))
        handler.emit(logging.makeLogRecord({"msg": "server said %s", "args": ("\rfake line\x07",)}))
    err = capsys.readouterr().err
    assert err == "\r 50%|#####     | a\\x1b[2Jb\nserver said \\rfake line\\x07\n"


def test_load_model_never_runs_a_repos_custom_code_unless_asked(tmp_path):
    from types import SimpleNamespace

    from hubckpt.load.loaders import rev_model

    seen: list[dict] = []

    class Model:
        config = SimpleNamespace()

        @classmethod
        def from_pretrained(cls, folder, **kwargs):
            seen.append(kwargs)
            return cls()

    rev = SimpleNamespace(snapshot_dir=lambda: tmp_path, repo_id=REPO, commit=COMMIT, info=None)
    rev_model(rev, model_class=Model)
    rev_model(rev, model_class=Model, trust_remote_code=True)
    assert [kw["trust_remote_code"] for kw in seen] == [False, True]


# -- huggingface_hub's downloads (hub/guard.py) -------------------------------------------------------------


def test_a_download_that_drips_fails_within_the_documented_bound(monkeypatch):
    """checkpoint.json goes through hf_hub_download, whose retries resume a body as long as any byte came:
    a hub sending 4 bytes per try would hold it forever; the guard holds it to the read bound."""
    monkeypatch.setenv("HUBCKPT_HTTP_TIMEOUT", "0.5")  # bound: 2 x 0.5 s without 64 KiB, all tries together
    with hostile(files=repo_files(), drip_files={"checkpoint.json"}) as hub:
        started = time.monotonic()
        with pytest.raises(HubUnavailableError, match="stalled read"):
            hubckpt.load_state_dict(REPO, step=1, hub=hub.url)
        assert time.monotonic() - started < 4
        assert sum(r.path.endswith("/checkpoint.json") and r.method == "GET" for r in hub.requests) >= 1


def test_pull_of_a_dripping_download_prints_one_line_within_the_bound(tmp_path):
    with hostile(files=repo_files(), drip_files={"checkpoint.json"}) as hub:
        started = time.monotonic()
        out = run_cli(
            "pull", REPO, str(tmp_path / "dest"), "--step", "1", "--hub", hub.url, env={"HUBCKPT_HTTP_TIMEOUT": "0.5"}
        )
        assert time.monotonic() - started < 15  # the CLI's own start included
    assert out.returncode != 0 and "Traceback" not in out.stderr, out.stderr
    errors = [line for line in out.stderr.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1 and "stalled read" in errors[0], out.stderr


def test_a_download_whose_hub_asks_to_wait_past_the_bound_fails_at_once(monkeypatch):
    """huggingface_hub sleeps whatever Retry-After a hub names before its next try (here 300 s)."""
    monkeypatch.setenv("HUBCKPT_HTTP_TIMEOUT", "0.5")
    with hostile(files=repo_files(), busy_files={"checkpoint.json"}) as hub:
        started = time.monotonic()
        with pytest.raises(HubUnavailableError, match="asking to wait 300 s"):
            hubckpt.load_state_dict(REPO, step=1, hub=hub.url)
        assert time.monotonic() - started < 4


def test_the_token_does_not_follow_a_download_redirect_to_huggingface_hubs_own_origins(monkeypatch):
    """huggingface_hub forwards the token on a redirect to its own hub origins (huggingface.co, hf.co,
    HF_ENDPOINT): a self-hosted hub redirecting a download there must not hand them its token. The evil
    server stands in for huggingface.co (added to those origins: the real one is not reachable here)."""
    from huggingface_hub.utils import _http

    files = repo_files()
    with hostile(files=files) as evil:
        monkeypatch.setattr(_http, "_HUB_ORIGINS", _http._HUB_ORIGINS | {_http._url_origin(evil.url)})
        target = f"{evil.url}/{REPO}/resolve/{COMMIT}/checkpoint.json"
        with hostile(files=files, redirect={"checkpoint.json": target}) as hub:
            state = hubckpt.load_state_dict(REPO, step=1, hub=hub.url, token="hf_secret")
            assert state["v"].tolist() == [4.0, 5.0, 6.0]
            assert hub.authorized()  # the hub itself got the token
        assert evil.requests and not evil.authorized(), [r.path for r in evil.authorized()]


def test_the_tokenizer_download_of_a_text_probe_keeps_the_token_on_the_hub(monkeypatch):
    """`analyze` with a text probe downloads the revision's tokenizer files the way hubckpt downloads
    everything else (it used `snapshot_download`, whose worker threads the guard does not see)."""
    pytest.importorskip("transformers")
    from huggingface_hub.utils import _http

    from hubckpt.analysis.pipeline import load_tokenizer
    from hubckpt.errors import AnalysisError
    from hubckpt.hub.select import resolve_hub

    files = repo_files(extra={"tokenizer_config.json": b"{}", "vocab.txt": b"[PAD]\n[UNK]\nthe\ncat\n"})
    with hostile(files=files) as evil:
        monkeypatch.setattr(_http, "_HUB_ORIGINS", _http._HUB_ORIGINS | {_http._url_origin(evil.url)})
        target = f"{evil.url}/{REPO}/resolve/{COMMIT}/vocab.txt"
        with hostile(files=files, redirect={"vocab.txt": target}) as hub:
            info = hubckpt.resolve_revision(REPO, step=1, hub=hub.url, token="hf_secret")
            try:
                load_tokenizer(REPO, info, hub=resolve_hub(hub.url), token="hf_secret")
            except AnalysisError:
                pass  # whether these two files make a tokenizer is transformers' business
            assert hub.authorized()
        assert [r for r in evil.requests if r.path.endswith("/vocab.txt")] and not evil.authorized()


def test_a_mirror_download_keeps_the_source_hubs_token_on_the_source(monkeypatch, tmp_path):
    """`hubckpt mirror` downloads the source's files with huggingface_hub too: held to the same rules (the
    source hub redirecting a download to one of huggingface_hub's own origins does not hand them its token)."""
    from huggingface_hub.utils import _http
    from huggingface_hub.utils.sha import git_hash

    from hubckpt.hub.reader import HubReader
    from hubckpt.publishing.mirror_io import Entry, MirrorIO

    files = repo_files()
    data = files["checkpoint.json"]
    with hostile(files=files) as evil:
        monkeypatch.setattr(_http, "_HUB_ORIGINS", _http._HUB_ORIGINS | {_http._url_origin(evil.url)})
        target = f"{evil.url}/{REPO}/resolve/{COMMIT}/checkpoint.json"
        with hostile(files=files, redirect={"checkpoint.json": target}) as hub:
            io = MirrorIO(HubReader(hub.url, REPO, token="hf_secret"), None)  # type: ignore[arg-type]
            dest = tmp_path / "out" / "checkpoint.json"
            dest.parent.mkdir()
            io.download(COMMIT, Entry("checkpoint.json", len(data), git_hash(data), None), dest, tmp_path / "cache")
            assert dest.read_bytes() == data
            assert hub.authorized()  # the source hub itself got the token
        assert evil.requests and not evil.authorized(), [r.path for r in evil.authorized()]
