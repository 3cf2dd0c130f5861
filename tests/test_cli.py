"""The `hubckpt` and `hf` command lines against real local hubs."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys

import pytest
from huggingface_hub import HfApi

from .conftest import free_port
from .helpers import run_cli, start_server

HF = shutil.which("hf", path=os.path.dirname(sys.executable))


def test_hf_cli_uploads_lists_and_downloads(api, repo_id, tmp_path):
    env = {**os.environ, "HF_ENDPOINT": api.endpoint, "HF_TOKEN": "unused"}
    src = tmp_path / "src"
    src.mkdir()
    (src / "config.json").write_text('{"x": 1}')
    (src / "weights.bin").write_bytes(os.urandom(5000))
    up = subprocess.run(
        [HF, "upload", repo_id, str(src), ".", "--revision", "main"],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert up.returncode == 0, up.stderr
    api.create_branch(repo_id, branch="feat/cli")
    out = tmp_path / "out"
    down = subprocess.run(
        [HF, "download", repo_id, "--revision", "feat/cli", "--local-dir", str(out)],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert down.returncode == 0, down.stderr
    assert (out / "weights.bin").read_bytes() == (src / "weights.bin").read_bytes()
    who = subprocess.run([HF, "auth", "whoami"], capture_output=True, text=True, env=env, timeout=60)
    assert "local" in who.stdout


def test_token_commands_create_register_list_revoke(tmp_path):
    root = str(tmp_path / "hub")
    assert run_cli("user", "add", "carol", "--org", "lab", "--root", root).returncode == 0
    created = run_cli("token", "create", "--user", "carol", "--role", "read", "--root", root)
    assert created.returncode == 0, created.stderr
    value = created.stdout.strip()
    assert value.startswith("hf_") and "shown once" in created.stderr
    registered = run_cli(
        "token",
        "create",
        "--user",
        "carol",
        "--name",
        "ci",
        "--value-env",
        "CI_SECRET",
        "--root",
        root,
        env={"CI_SECRET": "ci-secret-value-123"},
    )
    assert registered.returncode == 0 and "Registered token" in registered.stdout
    listing = run_cli("token", "list", "--root", root).stdout
    assert "carol" in listing and "ci" in listing and value not in listing and "ci-secret-value-123" not in listing
    assert run_cli("token", "revoke", "1", "--root", root).returncode == 0
    assert "read-1" not in run_cli("token", "list", "--root", root).stdout


def test_cli_errors_are_one_line_without_traceback(tmp_path):
    root = str(tmp_path / "hub")
    bad = run_cli("token", "create", "--user", "nobody", "--root", root)
    assert bad.returncode == 1
    assert bad.stderr.startswith("Error: Unknown user 'nobody'") and "Traceback" not in bad.stderr
    assert "--debug" in bad.stderr
    debug = run_cli("--debug", "token", "create", "--user", "nobody", "--root", root)
    assert "Traceback" in debug.stderr
    exposed = run_cli("serve", "--root", root, "--host", "0.0.0.0", "--port", "0")
    assert exposed.returncode == 1 and "Refusing to listen on 0.0.0.0" in exposed.stderr
    bad_user = run_cli("user", "add", "not/valid", "--root", root)
    assert bad_user.returncode == 1 and "Invalid user name" in bad_user.stderr


def test_serve_prints_its_url_and_stops_cleanly(tmp_path):
    port = free_port()
    proc, url = start_server(tmp_path / "hub", port)
    try:
        assert HfApi(endpoint=url, token="x").whoami()["name"] == "local"
    finally:
        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=15)
    assert proc.returncode == 0
    assert url in out and "HF_HUB_DISABLE_XET=1" in out and "stopped" in out


def test_serve_on_all_interfaces_prints_an_address_others_can_use(tmp_path):
    """`serve --host 0.0.0.0` told users to `export HF_ENDPOINT=http://0.0.0.0:PORT`, not an address to connect to."""
    import socket

    root = tmp_path / "hub"
    assert run_cli("user", "add", "ci", "--root", str(root)).returncode == 0
    assert run_cli("token", "create", "--user", "ci", "--root", str(root)).returncode == 0
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "hubckpt", "serve", "--root", str(root), "--host", "0.0.0.0", "--port", str(port)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        lines = [proc.stdout.readline() for _ in range(7)]
    finally:
        proc.send_signal(signal.SIGINT)
        proc.communicate(timeout=15)
    text = "".join(lines)
    assert f"export HF_ENDPOINT=http://{socket.gethostname()}:{port} " in text, text
    assert "HF_ENDPOINT=http://0.0.0.0" not in text


@pytest.mark.slow
def test_local_hub_starts_in_the_background_and_is_reused(tmp_path):
    from hubckpt.hub.local import ensure_local_hub, stop_local_hub
    from hubckpt.hub.reader import HubReader
    from hubckpt.hub.select import resolve_hub

    root = tmp_path / "auto"
    try:
        url = HubReader(resolve_hub("local", root=root), "local/auto").endpoint  # a reader reads: it starts one
        assert url and ensure_local_hub(root) == url  # reused, not restarted
        hub = resolve_hub("local", root=root)
        assert hub.endpoint == url and "local hub" in hub.describe()
        HfApi(endpoint=url, token="x").create_repo("local/auto")
        assert (root / "server.json").exists()
        assert stop_local_hub(root) and resolve_hub("local", root=root).endpoint == ""
        listing = run_cli("ls", "local/auto", "--hub", "local", "--root", str(root))  # the CLI starts it again
        assert listing.returncode == 0 and "Using local/auto on local hub http://" in listing.stderr, listing
    finally:
        assert stop_local_hub(root)
    assert not stop_local_hub(root)


def test_hub_selection(monkeypatch, tmp_path):
    from hubckpt.errors import HubConfigError
    from hubckpt.hub.select import resolve_hub

    local = resolve_hub("local", root=tmp_path / "idle")  # says which hub; starts nothing, writes nothing
    assert local.kind == "local" and local.endpoint == "" and "not started" in local.describe()
    assert not (tmp_path / "idle").exists()

    assert resolve_hub("hf").endpoint == "https://huggingface.co"
    assert resolve_hub("http://example.invalid:8900/").endpoint == "http://example.invalid:8900"
    monkeypatch.setenv("HUBCKPT_HUB", "http://127.0.0.1:1")
    assert resolve_hub().endpoint == "http://127.0.0.1:1"
    with pytest.raises(HubConfigError, match="Unknown hub"):
        resolve_hub("ftp://nope")


@pytest.mark.slow
def test_demo_runs_offline_end_to_end(tmp_path):
    root = tmp_path / "demo-hub"
    try:
        # As a user runs it: hf_xet installed and Xet *not* disabled; hubckpt must pick LFS by itself.
        env = {k: v for k, v in os.environ.items() if k != "HF_HUB_DISABLE_XET"}
        env.update({"HUBCKPT_HUB": "local", "HF_ENDPOINT": ""})
        result = subprocess.run(
            [sys.executable, "-m", "hubckpt", "demo", "--root", str(root), "--steps", "40", "--every", "20"],
            capture_output=True,
            text=True,
            env=env,
            timeout=300,
        )
        assert result.returncode == 0, result.stdout + result.stderr
        assert "step-0000020" in result.stdout and "step-0000040" in result.stdout
        assert "best,final" in result.stdout and "same as at publish time" in result.stdout
        # The demo repo is what a new user tries `hubckpt analyze --probe probe.txt` on: it needs a tokenizer.
        from transformers import AutoTokenizer

        from hubckpt.hub.select import resolve_hub
        from hubckpt.load import pull_revision

        hub = resolve_hub("local", root=root)
        pulled = pull_revision("local/hubckpt-demo", tmp_path / "pulled", "best", hub=hub, cache_dir=tmp_path / "cache")
        assert AutoTokenizer.from_pretrained(pulled.folder)("ab\n")["input_ids"] == [97, 98, 10]
        bad = run_cli("demo", "--root", str(root), "--steps", "1")
        assert bad.returncode == 2 and "Traceback" not in bad.stderr and "steps" in bad.stderr
    finally:
        run_cli("stop", "--root", str(root))


def test_demo_reads_lazily_from_a_revision_it_has_not_downloaded():
    """The demo reports the bytes a remote lazy read moves: the revision must not be one it loaded (e.g.
    a `best` in the middle of the run), whose cached copy would be read from disk instead."""
    from hubckpt.cli.demo import not_downloaded
    from hubckpt.formats.index import RevisionInfo

    revisions = [RevisionInfo(name=f"step-{s}", step=s, commit=f"{s:040d}") for s in (10, 20, 30, 40, 50)]
    loaded = {revisions[0].commit, revisions[2].commit}  # step 10 and a best at step 30
    picked = not_downloaded(revisions, loaded)
    assert picked.commit not in loaded and picked.step == 40
