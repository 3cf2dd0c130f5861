"""The hub client's own failure paths: a local hub that moves mid-listing, a commit that keeps failing, a 403
explained while whoami fails too, a `server.json` that is not a record, timeouts that make no sense."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
import types

import pytest
from huggingface_hub import CommitOperationAdd, HfApi

from hubckpt.errors import HubUnavailableError

pytestmark = pytest.mark.timeout(120)


# -- a local hub that moved to another port while a listing was under way --------------------------------


def test_a_listing_follows_a_local_hub_revived_on_another_port(tmp_path, caplog):
    from hubckpt.hub.local import record_server
    from hubckpt.hub.reader import HubReader
    from hubckpt.hub.select import Hub
    from hubckpt.server import LocalHubServer

    root = (tmp_path / "hub").resolve()
    first = LocalHubServer(root, tree_page_size=2).start()
    names = [f"f{i}.txt" for i in range(5)]
    api = HfApi(endpoint=first.url, token=False)
    api.create_repo("local/moved")
    api.create_commit("local/moved", [CommitOperationAdd(n, n.encode()) for n in names], commit_message="five files")
    record_server(root, first.url)
    reader = HubReader(Hub(first.url, "local", root), "local/moved")
    moved: list[LocalHubServer] = []
    request = reader._request

    def first_page_then_the_hub_dies(url, **kwargs):
        response = request(url, **kwargs)
        if "/tree/" in url and not moved:  # page 1 read: the hub dies; another one serves the folder elsewhere
            first.stop()
            moved.append(LocalHubServer(root, tree_page_size=2).start())
            record_server(root, moved[0].url)
        return response

    reader._request = first_page_then_the_hub_dies  # type: ignore[method-assign]
    try:
        with caplog.at_level(logging.INFO, logger="hubckpt"):
            files = reader.list_files("main")
        assert {n: files.get(n) for n in names} == {n: len(n) for n in names}
        assert reader.hub.endpoint == moved[0].url != first.url
        # it found the hub running elsewhere: it did not start one, so it does not say it did
        assert "had stopped" not in caplog.text and moved[0].url in caplog.text
    finally:
        for server in moved:
            server.stop()


def test_with_retries_names_the_endpoint_as_it_is_after_a_revive(monkeypatch):
    """`endpoint` is read when needed: a hub revived elsewhere that refuses too is reported at its new address."""
    import httpx2

    from hubckpt.hub import retries

    monkeypatch.setattr(retries.time, "sleep", lambda s: None)
    where = {"url": "http://127.0.0.1:1"}

    def refused():
        raise httpx2.ConnectError("[Errno 111] Connection refused") from ConnectionRefusedError(111, "refused")

    def revive() -> bool:
        where["url"] = "http://127.0.0.1:3"
        return True

    with pytest.raises(HubUnavailableError, match="hub at http://127.0.0.1:3 is not reachable"):
        retries.with_retries(refused, what="x", endpoint=lambda: where["url"], revive=revive)


# -- a commit that keeps failing transiently ------------------------------------------------------------


def test_a_commit_that_keeps_failing_transiently_ends_in_hub_unavailable(local_hub, tmp_path, monkeypatch):
    import httpx2
    from huggingface_hub.errors import HfHubHTTPError

    from hubckpt.formats.manifest import dumps, manifest_digest
    from hubckpt.hub import retries, writer
    from hubckpt.hub.select import resolve_hub

    no_sleep = types.SimpleNamespace(sleep=lambda s: None)
    monkeypatch.setattr(retries, "time", no_sleep)
    monkeypatch.setattr(writer, "time", no_sleep, raising=False)
    sent: list[str] = []

    def busy(self, repo_id, operations, **kwargs):
        sent.append(kwargs["revision"])
        response = httpx2.Response(503, request=httpx2.Request("POST", f"{local_hub.url}/api/models/x/commit"))
        raise HfHubHTTPError("503 Service Unavailable: the hub is busy", response=response)

    folder = tmp_path / "rev"
    folder.mkdir()
    manifest = {"format_version": 1, "step": 1, "files": []}
    (folder / "checkpoint.json").write_bytes(dumps(manifest))
    target = writer.HubTarget(resolve_hub(local_hub.url), "alice/always-busy")
    target.ensure_repo()
    monkeypatch.setattr(HfApi, "create_commit", busy)
    with pytest.raises(HubUnavailableError, match="failed 5 times.*503") as raised:
        target.commit_revision(
            "step-0000001", folder, start_from="main", message="m", manifest_sha256=manifest_digest(manifest)
        )
    assert isinstance(raised.value.__cause__, HfHubHTTPError)
    assert len(sent) == 5 and set(sent) == {writer.staging_branch("step-0000001")}
    assert "step-0000001" not in target.branches()


# -- a 403 explained while whoami fails too ------------------------------------------------------------------


def test_a_failing_whoami_does_not_hide_the_403(tmp_path, monkeypatch):
    from huggingface_hub.errors import HfHubHTTPError

    from hubckpt.hub.select import Hub
    from hubckpt.hub.writer import HubTarget
    from hubckpt.server import LocalHubServer

    def whoami(self, token=None, **kwargs):
        if "cache" in kwargs:  # as a huggingface_hub without whoami(cache=)
            raise TypeError("whoami() got an unexpected keyword argument 'cache'")
        raise ConnectionError("whoami is down too")

    with LocalHubServer(tmp_path / "token-hub") as hub:
        hub.ctx.store.add_account("bob", "user")
        _, read_token = hub.ctx.store.create_token("bob", "read", "ro")
        monkeypatch.setattr(HfApi, "whoami", whoami)
        target = HubTarget(Hub(hub.url, "remote"), "bob/new", token=read_token)
        assert target.token_role() is None
        with pytest.raises(HfHubHTTPError) as raised:
            target.ensure_repo()
    assert raised.value.response.status_code == 403


# -- server.json that is not a server's record ----------------------------------------------------------------


@pytest.mark.parametrize("content", ["[1, 2]", '"a string"', "7", "null", '{"url": 5, "pid": "x"}'])
def test_a_server_json_that_is_json_but_not_a_record(tmp_path, content):
    from hubckpt.hub.local import SERVER_FILE, running_local_hub, stop_local_hub

    (tmp_path / SERVER_FILE).write_text(content)
    assert running_local_hub(tmp_path) is None
    assert stop_local_hub(tmp_path) is False


def test_stop_when_the_recorded_process_is_gone(tmp_path):
    """The record names a process that has exited while a server answers for the folder: nothing to kill, no
    ProcessLookupError, and a pid that is not a positive number is never signalled (0 and -1 mean groups)."""
    from hubckpt.hub.local import SERVER_FILE, stop_local_hub
    from hubckpt.server import LocalHubServer

    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    root = (tmp_path / "hub").resolve()
    with LocalHubServer(root) as hub:
        for pid in (gone.pid, 0, -1, True):
            (root / SERVER_FILE).write_text(json.dumps({"pid": pid, "url": hub.url, "root": str(root)}))
            assert stop_local_hub(root) is False
        assert HfApi(endpoint=hub.url, token=False).list_models() is not None  # still serving


# -- timeouts ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("value", ["-5", "0", "nan", "inf", "-inf", "abc", ""])
def test_a_timeout_that_makes_no_sense_falls_back(monkeypatch, value):
    from hubckpt import environment

    monkeypatch.setenv("HUBCKPT_HTTP_TIMEOUT", value)
    monkeypatch.setenv("HUBCKPT_CONNECT_TIMEOUT", value)
    assert environment.http_timeout() == 120.0
    assert environment.connect_timeout() == 10.0
    monkeypatch.setenv("HUBCKPT_HTTP_TIMEOUT", "2.5")
    assert environment.http_timeout() == 2.5


# -- the folder's own checkpoint.json, read by the one parser ----------------------------------------------------


def test_known_hashes_come_from_a_checkpoint_json_that_parses(tmp_path):
    from hubckpt.formats.manifest import dumps
    from hubckpt.hub.commits import known_hashes

    sha = "ab" * 32
    (tmp_path / "checkpoint.json").write_bytes(
        dumps({"files": [{"path": "model.safetensors", "sha256": sha, "size": 8}, {"path": "x.json", "size": 3}]})
    )
    assert known_hashes(tmp_path) == {"model.safetensors": (sha, 8)}
    # a sha256 that is no sha256 (json.loads took it): the client hashes the files itself
    (tmp_path / "checkpoint.json").write_text(json.dumps({"files": [{"path": "a", "sha256": 5, "size": 1}]}))
    assert known_hashes(tmp_path) == {}
    (tmp_path / "checkpoint.json").write_text(json.dumps({"files": [{"path": "../../etc/passwd", "sha256": sha}]}))
    assert known_hashes(tmp_path) == {}
