"""A local hub killed in the middle of a commit restarts with every repo consistent."""

from __future__ import annotations

import io
import os
import signal
import sqlite3

import pytest
from huggingface_hub import HfApi

from .conftest import free_port
from .helpers import start_server


@pytest.mark.slow
def test_server_killed_during_commit_restarts_consistent(tmp_path):
    root = tmp_path / "hub"
    port = free_port()
    proc, url = start_server(root, port)
    try:
        api = HfApi(endpoint=url, token="x")
        api.create_repo("alice/crash")
        before = api.upload_file(path_or_fileobj=b"v1", path_in_repo="a.txt", repo_id="alice/crash").oid
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=10)

    proc, url = start_server(root, port, {"HUBCKPT_FAULT": "server.commit.before_ref_update:kill"})
    try:
        api = HfApi(endpoint=url, token="x")
        with pytest.raises(Exception):  # noqa: B017 - the server dies mid-request; any transport error will do
            api.create_commit(
                "alice/crash",
                [
                    __import__("huggingface_hub").CommitOperationAdd("a.txt", b"v2"),
                    __import__("huggingface_hub").CommitOperationAdd("w.bin", io.BytesIO(os.urandom(10_000))),
                ],
                commit_message="never lands",
            )
        assert proc.wait(timeout=10) == -signal.SIGKILL
    finally:
        if proc.poll() is None:
            proc.kill()

    with sqlite3.connect(root / "hub.sqlite3") as db:
        assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    proc, url = start_server(root, port)
    try:
        api = HfApi(endpoint=url, token="x")
        assert api.model_info("alice/crash").sha == before
        assert api.list_repo_files("alice/crash") == [".gitattributes", "a.txt"]
        assert [c.title for c in api.list_repo_commits("alice/crash")][0] != "never lands"
        after = api.upload_file(
            path_or_fileobj=b"v3", path_in_repo="a.txt", repo_id="alice/crash", parent_commit=before
        )
        assert api.list_repo_commits("alice/crash")[0].commit_id == after.oid
        assert list((root / "tmp").glob("*.part")) == []
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=10)
    assert not (root / "server.json").exists()
