"""Faults the local hub must survive: a locked database, slow transactions, stalled clients, failing fsync."""

from __future__ import annotations

import errno
import hashlib
import io
import os
import socket
import sqlite3
import threading
import time

import httpx2
import pytest
from huggingface_hub import HfApi

from hubckpt.server import LocalHubServer


def _commit_body(path: str, content: bytes) -> bytes:
    import base64
    import json

    return (
        json.dumps({"key": "header", "value": {"summary": "c", "description": ""}})
        + "\n"
        + json.dumps(
            {
                "key": "file",
                "value": {"path": path, "content": base64.b64encode(content).decode(), "encoding": "base64"},
            }
        )
        + "\n"
    ).encode()


def _in_thread(fn, timeout: float):
    """Run fn in a thread; (finished, result or exception) after at most `timeout` seconds."""
    out: list = []

    def run():
        try:
            out.append(fn())
        except BaseException as e:  # reported to the caller
            out.append(e)

    t = threading.Thread(target=run, daemon=True)
    t.start()
    t.join(timeout)
    return (not t.is_alive()), (out[0] if out else None)


@pytest.mark.timeout(60)
def test_a_locked_database_answers_503_and_never_deadlocks(tmp_path):
    with LocalHubServer(tmp_path / "hub", busy_timeout_s=0.3) as hub:
        api = HfApi(endpoint=hub.url, token="x")
        api.create_repo("alice/locked")
        # Another process writing the same database: a second connection holding the write lock.
        other = sqlite3.connect(hub.ctx.root / "hub.sqlite3", isolation_level=None)
        other.execute("BEGIN IMMEDIATE")
        try:
            r = httpx2.post(
                f"{hub.url}/api/models/alice/locked/commit/main",
                content=_commit_body("a.txt", b"1"),
                headers={"content-type": "application/x-ndjson"},
                timeout=30,
            )
            assert r.status_code == 503 and r.headers["retry-after"] == "1"
            assert "busy" in r.json()["error"]
            r = httpx2.post(f"{hub.url}/api/models/alice/locked/branch/b2", json={}, timeout=30)
            assert r.status_code == 503
        finally:
            other.execute("ROLLBACK")
            other.close()
        # The failed BEGINs released the hub's own lock: writes go through again, promptly.
        done, result = _in_thread(
            lambda: api.upload_file(path_or_fileobj=b"2", path_in_repo="a.txt", repo_id="alice/locked"), timeout=20
        )
        assert done and not isinstance(result, BaseException), result
        assert api.list_repo_files("alice/locked") == [".gitattributes", "a.txt"]


@pytest.mark.timeout(60)
def test_a_slow_transaction_does_not_stall_other_requests(tmp_path):
    with LocalHubServer(tmp_path / "hub", busy_timeout_s=4) as hub:
        api = HfApi(endpoint=hub.url, token="x")
        api.create_repo("alice/slow")
        other = sqlite3.connect(hub.ctx.root / "hub.sqlite3", isolation_level=None)
        other.execute("BEGIN IMMEDIATE")
        try:
            # A write that waits up to the busy timeout for the database...
            writer = threading.Thread(
                target=lambda: httpx2.post(f"{hub.url}/api/models/alice/slow/branch/b", json={}, timeout=30),
                daemon=True,
            )
            writer.start()
            time.sleep(0.3)
            # ... while reads of every kind still answer at once.
            start = time.monotonic()
            assert api.model_info("alice/slow").id == "alice/slow"
            assert api.list_repo_files("alice/slow") == [".gitattributes"]
            assert httpx2.get(f"{hub.url}/api/hubckpt/health").status_code == 200
            assert time.monotonic() - start < 2.0
            assert writer.is_alive()  # the write is still waiting: the reads did not wait for it
        finally:
            other.execute("ROLLBACK")
            other.close()
        writer.join(10)


def _blob_url(api: HfApi, repo_id: str) -> tuple[str, bytes]:
    data = os.urandom(1000)
    api.upload_file(path_or_fileobj=io.BytesIO(data), path_in_repo="w.bin", repo_id=repo_id)
    return httpx2.head(f"{api.endpoint}/{repo_id}/resolve/main/w.bin").headers["location"], data


@pytest.mark.timeout(60)
def test_stalled_clients_cannot_exhaust_the_data_plane(tmp_path):
    with LocalHubServer(tmp_path / "hub", data_plane_max_connections=3, data_plane_timeout_s=1.0) as hub:
        api = HfApi(endpoint=hub.url, token="x")
        api.create_repo("alice/stall")
        url, data = _blob_url(api, "alice/stall")
        port = hub.data_plane.port
        idle = [socket.create_connection(("127.0.0.1", port)) for _ in range(3)]
        half = idle[0]
        half.sendall(b"GET /blob/")  # a request that never finishes (slowloris)
        time.sleep(0.2)
        try:
            start = time.monotonic()
            r = httpx2.get(url, timeout=5)
            assert r.status_code == 503 and r.headers["retry-after"] == "1", r.status_code
            assert "connection limit" in r.json()["error"]
            assert time.monotonic() - start < 1.0  # answered at once, not queued
            # The idle and stalled sockets time out and give their threads back.
            for s in idle:
                s.settimeout(5)
                assert s.recv(1024) in (b"",) or s.recv(1024) == b""
            time.sleep(0.1)
            r = httpx2.get(url, timeout=5)
            assert r.status_code == 200 and r.content == data
            assert hub.data_plane.httpd.refused >= 1
        finally:
            for s in idle:
                s.close()


def _fd_count() -> int:
    return len(os.listdir("/proc/self/fd"))


@pytest.mark.timeout(60)
@pytest.mark.parametrize("code,status", [(errno.EIO, 500), (errno.ENOSPC, 507)])
def test_failed_fsync_leaks_neither_descriptor_nor_temp_file(tmp_path, monkeypatch, code, status):
    import hubckpt.server.blobs as blobs

    with LocalHubServer(tmp_path / "hub") as hub:
        api = HfApi(endpoint=hub.url, token="x")
        api.create_repo("alice/fsync")
        payloads = [os.urandom(4096) for _ in range(10)]
        hrefs = []
        for p in payloads:
            r = httpx2.post(
                f"{hub.url}/alice/fsync.git/info/lfs/objects/batch",
                json={"operation": "upload", "objects": [{"oid": hashlib.sha256(p).hexdigest(), "size": len(p)}]},
            )
            hrefs.append(r.json()["objects"][0]["actions"]["upload"]["href"])
        real_fsync = os.fsync

        def failing_fsync(fd):
            raise OSError(code, os.strerror(code))

        before = _fd_count()
        monkeypatch.setattr(blobs.os, "fsync", failing_fsync)
        with httpx2.Client() as client:
            for href, p in zip(hrefs, payloads):
                r = client.put(href, content=p)
                assert r.status_code == status, r.text
            r = client.post(
                f"{hub.url}/api/models/alice/fsync/commit/main",
                content=_commit_body("a.txt", b"x"),
                headers={"content-type": "application/x-ndjson"},
            )
            assert r.status_code == status
        monkeypatch.setattr(blobs.os, "fsync", real_fsync)
        assert list((hub.ctx.root / "tmp").iterdir()) == []
        assert not any(hub.ctx.blobs.has(hashlib.sha256(p).hexdigest()) for p in payloads)
        assert _fd_count() <= before + 2  # client sockets aside, nothing per failed upload
        # And the hub stores the next upload normally.
        api.upload_file(path_or_fileobj=b"fine", path_in_repo="a.txt", repo_id="alice/fsync")
        assert api.list_repo_files("alice/fsync") == [".gitattributes", "a.txt"]


@pytest.mark.timeout(60)
@pytest.mark.parametrize("direct", ["1", "0"], ids=["o_direct", "buffered"])
def test_an_upload_that_stalls_mid_body_is_dropped_quietly_and_leaks_nothing(tmp_path, monkeypatch, caplog, direct):
    """The body arrives straight in the blob writer's buffer: a client that stalls past the timeout is the
    client's problem (its socket is closed, no 500, no error logged), and no temp file or descriptor stays."""
    monkeypatch.setenv("HUBCKPT_DIRECT_IO", direct)
    size = 20 * 1024 * 1024
    payload = os.urandom(size)
    with LocalHubServer(tmp_path / "hub", data_plane_timeout_s=1.0) as hub:
        api = HfApi(endpoint=hub.url, token="x")
        api.create_repo("alice/stalled-put")
        r = httpx2.post(
            f"{hub.url}/alice/stalled-put.git/info/lfs/objects/batch",
            json={"operation": "upload", "objects": [{"oid": hashlib.sha256(payload).hexdigest(), "size": size}]},
        )
        href = r.json()["objects"][0]["actions"]["upload"]["href"]
        target = httpx2.URL(href)
        before = _fd_count()
        for _ in range(3):
            with socket.create_connection((target.host, target.port)) as s:
                s.sendall(
                    f"PUT {target.raw_path.decode()} HTTP/1.1\r\nHost: {target.host}\r\n"
                    f"Content-Length: {size}\r\n\r\n".encode()
                    + payload[: 9 * 1024 * 1024]
                )
                s.settimeout(10)
                assert s.recv(1024) == b""  # closed by the hub after its timeout, without an answer
        time.sleep(0.2)
        assert not [r for r in caplog.records if r.levelname == "ERROR"]
        assert list((hub.ctx.root / "tmp").iterdir()) == []
        assert _fd_count() <= before + 1
        with httpx2.Client() as client:  # the same upload, sent whole, is stored
            assert client.put(href, content=payload).status_code == 200
        assert hub.ctx.blobs.has(hashlib.sha256(payload).hexdigest(), size)


def test_data_plane_keeps_its_port_across_restarts(tmp_path):
    # URLs signed before a restart (an upload the client is retrying) must still reach the data plane.
    with LocalHubServer(tmp_path / "hub") as hub:
        port = hub.data_plane.port
    with LocalHubServer(tmp_path / "hub") as hub:
        assert hub.data_plane.port == port


def test_read_connections_end_with_their_threads(tmp_path):
    from hubckpt.server.storage import open_data_folder

    store = open_data_folder(tmp_path / "hub")
    before = _fd_count()
    for _ in range(30):  # worker threads come and go (anyio retires idle ones)
        t = threading.Thread(target=store.list_repos)
        t.start()
        t.join()
    import gc

    gc.collect()
    assert len(store._reader_list) <= 1 and _fd_count() <= before + 3  # one connection, reused
    store.close()


@pytest.mark.timeout(60)
def test_request_bodies_are_capped_before_anyone_is_authenticated(tmp_path):
    # An anonymous caller must not make the hub buffer an unbounded body (whole bodies are read into
    # memory before the handler, hence before authentication).
    with LocalHubServer(tmp_path / "hub", max_body_bytes=4096) as hub:
        HfApi(endpoint=hub.url, token="x").create_repo("alice/cap")
        url = f"{hub.url}/api/models/alice/cap/commit/main"
        r = httpx2.post(
            url,
            content=_commit_body("big.txt", b"x" * 8000),
            headers={"content-type": "application/x-ndjson"},
            timeout=10,
        )
        assert r.status_code == 413 and "larger than this hub accepts (4096 bytes)" in r.json()["error"]
        assert r.headers["connection"] == "close"

        def chunks():  # no Content-Length: counted while it streams
            for _ in range(20):
                yield b"y" * 1000

        r = httpx2.post(f"{hub.url}/api/validate-yaml", content=chunks(), timeout=10)
        assert r.status_code == 413
        # Under the cap, the same route works and the commit lands.
        r = httpx2.post(
            url, content=_commit_body("small.txt", b"ok"), headers={"content-type": "application/x-ndjson"}, timeout=10
        )
        assert r.status_code == 200, r.text
        assert HfApi(endpoint=hub.url, token="x").list_repo_files("alice/cap") == [".gitattributes", "small.txt"]


@pytest.mark.timeout(60)
def test_a_storage_failure_answers_500_without_the_data_folder_path(tmp_path):
    # A real fault: the object's fan-out folder is a file, so storing the object fails with an OS error
    # whose text names the absolute path of the data folder. Remote callers must not see it.
    content = b"no room for me"
    sha = hashlib.sha256(content).hexdigest()
    with LocalHubServer(tmp_path / "hub") as hub:
        HfApi(endpoint=hub.url, token="x").create_repo("alice/broken")
        (hub.ctx.root / "objects" / sha[:2]).write_bytes(b"not a folder")
        r = httpx2.post(
            f"{hub.url}/api/models/alice/broken/commit/main",
            content=_commit_body("a.txt", content),
            headers={"content-type": "application/x-ndjson", "x-request-id": "req-42"},
            timeout=10,
        )
        assert r.status_code == 500
        assert r.headers["x-request-id"] == "req-42"
        message = r.json()["error"]
        assert "request req-42" in message and "server log" in message
        assert str(tmp_path) not in message and str(tmp_path) not in r.headers["x-error-message"]
        assert os.listdir(hub.ctx.root / "tmp") == []  # and the temp file did not stay behind


@pytest.mark.timeout(60)
def test_writers_queued_behind_a_locked_database_all_give_up_within_the_busy_timeout(tmp_path):
    # Each queued writer used to wait for the hub's lock without limit, then for the database: the n-th
    # of n concurrent commits answered after n busy timeouts.
    busy_s, writers = 1.0, 5
    with LocalHubServer(tmp_path / "hub", busy_timeout_s=busy_s) as hub:
        HfApi(endpoint=hub.url, token="x").create_repo("alice/queue")
        other = sqlite3.connect(hub.ctx.root / "hub.sqlite3", isolation_level=None)
        other.execute("BEGIN IMMEDIATE")
        answers: list[tuple[int, float]] = []

        def write(i: int) -> None:
            start = time.monotonic()
            r = httpx2.post(f"{hub.url}/api/models/alice/queue/branch/b{i}", json={}, timeout=30)
            answers.append((r.status_code, time.monotonic() - start))

        threads = [threading.Thread(target=write, args=(i,), daemon=True) for i in range(writers)]
        try:
            for t in threads:
                t.start()
            for t in threads:
                t.join(30)
        finally:
            other.execute("ROLLBACK")
            other.close()
        assert [status for status, _ in answers] == [503] * writers
        assert max(elapsed for _, elapsed in answers) < 2 * busy_s, answers


def test_health_names_the_data_folder_only_to_this_machine(tmp_path):
    import asyncio

    from hubckpt.server import HubContext, create_app

    ctx = HubContext.open(tmp_path / "hub")

    async def health(client: tuple[str, int], server_host: str) -> dict:
        transport = httpx2.ASGITransport(app=create_app(ctx), client=client)
        async with httpx2.AsyncClient(transport=transport, base_url=f"http://{server_host}:8900") as http:
            r = await http.get("/api/hubckpt/health")
            assert r.status_code == 200
            return r.json()

    try:
        assert asyncio.run(health(("127.0.0.1", 5000), "127.0.0.1"))["root"] == str(ctx.root)
        assert asyncio.run(health(("10.1.2.3", 5000), "10.1.2.3"))["root"] == str(ctx.root)  # itself, by its own IP
        remote = asyncio.run(health(("10.9.9.9", 5000), "10.1.2.3"))
        assert remote == {"status": "ok", "service": "hubckpt-local-hub"}
    finally:
        ctx.store.close()


def test_range_reads_on_a_kept_alive_connection_are_not_held_back_by_delayed_acks(local_hub, api, repo_id):
    """The data plane sends a response's headers and body in separate writes: without TCP_NODELAY the body
    waited for the client's delayed ACK (~40 ms on Linux loopback) on every request of a kept-alive
    connection, so a multi-rank restore (one Range read per tensor part) took ~45 ms a tensor."""
    from hubckpt.hub.reader import HubReader

    api.upload_file(path_or_fileobj=os.urandom(4096), path_in_repo="w.safetensors", repo_id=repo_id)
    commit = api.repo_info(repo_id).sha
    reader = HubReader(local_hub.url, repo_id)
    reader.read_range("w.safetensors", commit, 0, 16)  # (the connections are open)
    started = time.perf_counter()
    for k in range(20):
        raw, _ = reader.read_range("w.safetensors", commit, k, k + 100)
        assert len(raw) == 100
    assert time.perf_counter() - started < 0.4  # 20 x 40 ms = 0.8 s when each body waits for an ACK
