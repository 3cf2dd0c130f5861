"""Finding and reaching the hub: a closed port fails fast in one line, a dead local hub is restarted by the
publisher, a read-only token is named as such, and `hubckpt env` prints the lines that point the shell at a hub."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
import torch
from huggingface_hub import HfApi

from hubckpt.errors import PublishFailedError
from hubckpt.publishing import Publisher

from .conftest import free_port
from .helpers import run_cli

pytestmark = pytest.mark.timeout(180)


# -- a closed port ----------------------------------------------------------------------------------------


def _closed_url() -> str:
    return f"http://127.0.0.1:{free_port()}"  # bound, then closed: nothing listens there


@pytest.mark.parametrize("command", ["ls", "show", "pull", "publish", "tag", "jobs --retry"])
def test_a_closed_port_fails_fast_in_one_line(command, tmp_path):
    url = _closed_url()
    (tmp_path / "w.pt").write_bytes(b"")
    torch.save({"w": torch.ones(2)}, tmp_path / "w.pt")
    args = {
        "ls": ["ls", "bob/x"],
        "show": ["show", "bob/x@main"],
        "pull": ["pull", "bob/x@main", str(tmp_path / "dest")],
        "publish": ["publish", str(tmp_path / "w.pt"), "--step", "1", "--repo", "bob/x"],
        "tag": ["tag", "bob/x", "main", "paper"],
    }.get(command)
    if args is None:  # a job left in a spool, retried against a hub that is not there
        spool = tmp_path / "spool"
        pub = Publisher("bob/x", hub=url, spool_dir=spool)
        pub.publish(tmp_path / "w.pt", step=1)
        with pytest.raises(PublishFailedError) as raised:
            pub.close()
        assert isinstance(raised.value.__cause__, ConnectionError)
        args = ["jobs", "bob/x", "--spool", str(spool), "--retry", "1"]
    elif command == "publish":
        args += ["--spool", str(tmp_path / "spool")]
    started = time.monotonic()
    out = run_cli(*args, "--hub", url)
    elapsed = time.monotonic() - started
    assert out.returncode != 0, out.stdout
    assert f"The hub at {url} is not reachable" in out.stderr, out.stderr
    assert "hubckpt serve" in out.stderr and "--hub" in out.stderr
    assert "Traceback" not in out.stderr and "WARNING" not in out.stderr, out.stderr
    assert [line for line in out.stderr.splitlines() if line.startswith("Error:")] == [
        next(line for line in out.stderr.splitlines() if "not reachable" in line)
    ]
    assert elapsed < 5, f"{elapsed:.1f}s"


def test_the_python_api_raises_hub_unavailable_at_once():
    import hubckpt
    from hubckpt.errors import HubUnavailableError

    url = _closed_url()
    for call in (
        lambda: hubckpt.list_revisions("bob/x", hub=url),
        lambda: hubckpt.load_model("bob/x", "best", hub=url),
        lambda: hubckpt.restore("bob/x", model=torch.nn.Linear(2, 2), hub=url),
    ):
        started = time.monotonic()
        with pytest.raises(HubUnavailableError, match=f"hub at {url} is not reachable"):
            call()
        assert time.monotonic() - started < 3


def test_refused_is_not_retried_but_a_503_is(monkeypatch):
    """Only the refused connection changed: server errors, timeouts and resets are still retried."""
    import httpx2
    from huggingface_hub.errors import HfHubHTTPError

    from hubckpt.errors import HubUnavailableError
    from hubckpt.hub import retries

    monkeypatch.setattr(retries.time, "sleep", lambda s: None)
    calls = []

    def refused():
        calls.append(1)
        raise httpx2.ConnectError("[Errno 111] Connection refused") from ConnectionRefusedError(111, "refused")

    with pytest.raises(HubUnavailableError, match="hub at http://h:1 is not reachable"):
        retries.with_retries(refused, what="x", endpoint="http://h:1")
    assert len(calls) == 1
    revived: list = []
    with pytest.raises(HubUnavailableError):  # revived once; refused again: reported, not restarted in a loop
        retries.with_retries(refused, what="x", endpoint="http://h:1", revive=lambda: revived.append(1) or True)
    assert len(calls) == 3 and len(revived) == 1
    retries.answered("http://h:2")  # a hub that answered before and now refuses is restarting: retried
    with pytest.raises(HubUnavailableError, match="hub at http://h:2 is not reachable"):
        retries.with_retries(refused, what="x", endpoint="http://h:2")
    assert len(calls) == 8

    response = httpx2.Response(503, request=httpx2.Request("GET", "http://h:1/x"))
    replies = [HfHubHTTPError("busy", response=response), httpx2.ReadError("reset"), "ok"]

    def flaky():
        reply = replies.pop(0)
        if isinstance(reply, Exception):
            raise reply
        return reply

    assert retries.with_retries(flaky, what="x") == "ok"


@pytest.mark.slow
def test_a_local_hub_killed_mid_run_is_restarted_by_the_publisher(tmp_path):
    from hubckpt.hub.local import running_local_hub, stop_local_hub

    root = tmp_path / "hub"
    try:
        with Publisher("local/revived", hub="local", root=root, spool_dir=tmp_path / "spool") as pub:
            pub.publish(state_dict={"w": torch.ones(3)}, step=1).result(timeout=60)
            first = json.loads((root / "server.json").read_text())
            os.kill(first["pid"], signal.SIGKILL)  # the hub dies while the publisher runs
            deadline = time.monotonic() + 10
            while running_local_hub(root) and time.monotonic() < deadline:
                time.sleep(0.05)
            assert running_local_hub(root) is None
            pub.publish(state_dict={"w": torch.full((3,), 2.0)}, step=2).result(timeout=60)
        url = running_local_hub(root)
        assert url is not None and json.loads((root / "server.json").read_text())["pid"] != first["pid"]
        api = HfApi(endpoint=url, token=False)
        assert {b.name for b in api.list_repo_refs("local/revived").branches} >= {"step-0000001", "step-0000002"}
        index = json.loads(
            Path(api.hf_hub_download("local/revived", "revisions.json", cache_dir=tmp_path / "c")).read_bytes()
        )
        assert [r["name"] for r in index["revisions"]] == ["step-0000001", "step-0000002"]
    finally:
        stop_local_hub(root)


# -- a read-only token ------------------------------------------------------------------------------------


@pytest.fixture
def token_hub(tmp_path):
    """A hub with tokens: bob's read token and write token, and an existing repo bob/existing."""
    from hubckpt.server import LocalHubServer

    with LocalHubServer(tmp_path / "token-hub") as hub:
        hub.ctx.store.add_account("bob", "user")
        _, read_token = hub.ctx.store.create_token("bob", "read", "ro")
        _, write_token = hub.ctx.store.create_token("bob", "write", "rw")
        HfApi(endpoint=hub.url, token=write_token).create_repo("bob/existing")
        yield hub, read_token, write_token


@pytest.mark.parametrize("repo", ["bob/new", "bob/existing"])  # create_repo refused / the commit refused
def test_a_read_token_is_named_by_the_publisher(token_hub, tmp_path, repo):
    from hubckpt.errors import ReadOnlyTokenError

    hub, read_token, _ = token_hub
    pub = Publisher(repo, hub=hub.url, token=read_token, spool_dir=tmp_path / "spool")
    pub.publish(state_dict={"w": torch.ones(2)}, step=1)
    with pytest.raises(Exception) as closed:  # noqa: PT011 - ReadOnlyTokenError, or an error caused by it
        pub.close()
    chain = [closed.value]
    while chain[-1].__cause__ is not None:
        chain.append(chain[-1].__cause__)
    error = next(e for e in chain if isinstance(e, ReadOnlyTokenError))
    assert error.role == "read"
    for text in (str(error), str(closed.value)):
        assert "read token" in text and "hubckpt token create" in text and "--role write" in text, text
        assert "You don't have the rights" not in text
    assert [b.name for b in HfApi(endpoint=hub.url, token=read_token).list_repo_refs("bob/existing").branches] == [
        "main"
    ]


def test_a_read_token_is_named_by_cli_publish(token_hub, tmp_path):
    hub, read_token, _ = token_hub
    torch.save({"w": torch.ones(2)}, tmp_path / "w.pt")
    out = run_cli(
        "publish", str(tmp_path / "w.pt"), "--step", "1", "--repo", "bob/new", "--hub", hub.url,
        "--token", read_token, "--spool", str(tmp_path / "spool"),
    )  # fmt: skip
    assert out.returncode == 1
    assert "is a read token" in out.stderr and "hubckpt token create --user NAME --role write" in out.stderr
    assert "You don't have the rights" not in out.stderr and "Traceback" not in out.stderr, out.stderr


# -- hubckpt env ------------------------------------------------------------------------------------------


def _health(url: str) -> dict:
    with urllib.request.urlopen(f"{url}/api/hubckpt/health", timeout=5) as r:  # noqa: S310 - loopback
        return json.loads(r.read())


@pytest.mark.slow
def test_env_points_the_shell_at_the_hub_of_a_data_folder(tmp_path):
    """What the docs say to run: `eval "$(hubckpt env --root DIR)"`, then the stock client and hubckpt find that hub."""
    from hubckpt.hub.local import stop_local_hub

    root = tmp_path / "my hub"  # a space: the lines must be quoted for the shell
    script = (
        f"eval \"$({sys.executable} -m hubckpt env --root '{root}')\" && "
        f"{sys.executable} -c 'import os, json; print(json.dumps(dict(os.environ)))'"
    )
    env = {k: v for k, v in os.environ.items() if k not in ("HUBCKPT_HUB", "HUBCKPT_HUB_ROOT")}
    env["HF_ENDPOINT"] = "http://127.0.0.1:1"  # a stale recipe in the shell: replaced
    try:
        out = subprocess.run(["bash", "-c", script], capture_output=True, text=True, env=env, timeout=120)
        assert out.returncode == 0, out.stderr
        shell = json.loads(out.stdout)
        url = shell["HF_ENDPOINT"]
        assert _health(url)["root"] == str(root.resolve())  # the hub serving that folder, started for us
        assert shell["HUBCKPT_HUB"] == "local" and shell["HUBCKPT_HUB_ROOT"] == str(root.resolve())
        assert shell["HF_HUB_DISABLE_XET"] == "1"
        assert "HUBCKPT_TOKEN" not in shell and "HF_TOKEN" not in shell
        assert shell["HF_HUB_DISABLE_IMPLICIT_TOKEN"] == "1"  # nor the saved huggingface.co login
        # hubckpt itself, in that shell, uses the same hub
        listing = run_cli("ls", "local/nothing-yet", env={k: shell[k] for k in ("HUBCKPT_HUB", "HUBCKPT_HUB_ROOT")})
        assert f"local hub {url}" in listing.stderr, listing.stderr
    finally:
        stop_local_hub(root)


def test_env_for_a_hub_url_with_a_token(local_hub):
    out = run_cli("env", "--hub", local_hub.url + "/", "--token", "secret value")
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines() == [
        f"export HF_ENDPOINT={local_hub.url}",
        f"export HUBCKPT_HUB={local_hub.url}",
        "export HF_HUB_DISABLE_XET=1",
        "export HUBCKPT_TOKEN='secret value'",
        "export HF_TOKEN='secret value'",
        "unset HF_HUB_DISABLE_IMPLICIT_TOKEN",
    ]
    assert "replaces your huggingface.co token" in out.stderr
    closed = run_cli("env", "--hub", _closed_url())
    assert closed.returncode == 1 and "not reachable" in closed.stderr
    hf = run_cli("env", "--hub", "hf")
    assert hf.stdout.splitlines() == [
        "export HF_ENDPOINT=https://huggingface.co",
        "export HUBCKPT_HUB=hf",
        "unset HF_HUB_DISABLE_XET",
        "unset HF_HUB_DISABLE_IMPLICIT_TOKEN",
    ]
