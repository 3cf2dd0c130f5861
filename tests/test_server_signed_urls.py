"""Signed data-plane URLs: every signed part (expiry, oid, size, repo) is bound, and expired URLs are refused."""

from __future__ import annotations

import hashlib
import io
import os
import time
from urllib.parse import parse_qs, urlsplit

import httpx2
import pytest
from huggingface_hub import HfApi


def _upload_href(api: HfApi, repo_id: str, oid: str, size: int) -> str:
    r = httpx2.post(
        f"{api.endpoint}/{repo_id}.git/info/lfs/objects/batch",
        json={
            "operation": "upload",
            "transfers": ["basic"],
            "objects": [{"oid": oid, "size": size}],
            "hash_algo": "sha256",
        },
    )
    r.raise_for_status()
    return r.json()["objects"][0]["actions"]["upload"]["href"]


def _parts(href: str) -> tuple[str, list[str], dict[str, str]]:
    url = urlsplit(href)
    query = {k: v[0] for k, v in parse_qs(url.query).items()}
    return f"{url.scheme}://{url.netloc}", url.path.strip("/").split("/"), query


def _build(base: str, segments: list[str], query: dict[str, str]) -> str:
    return f"{base}/{'/'.join(segments)}?expires={query['expires']}&sig={query['sig']}"


@pytest.fixture
def other_repo(api: HfApi) -> str:
    rid = f"alice/other-{os.urandom(4).hex()}"
    api.create_repo(rid)
    return rid


def test_tampered_upload_urls_are_refused(api: HfApi, repo_id, other_repo, local_hub):
    data = os.urandom(5000)
    oid = hashlib.sha256(data).hexdigest()
    href = _upload_href(api, repo_id, oid, len(data))
    base, segments, query = _parts(href)
    assert segments[0] == "lfs" and segments[2:] == [oid, str(len(data))]
    other_id = _parts(_upload_href(api, other_repo, oid, len(data)))[1][1]
    other_data = os.urandom(5000)
    other_oid = hashlib.sha256(other_data).hexdigest()
    forged = {
        "expiry pushed later": _build(base, segments, {**query, "expires": str(int(query["expires"]) + 3600)}),
        "another oid": _build(base, [segments[0], segments[1], other_oid, segments[3]], query),
        "another size": _build(base, [*segments[:3], str(len(data) + 1)], query),
        "another repo": _build(base, [segments[0], other_id, *segments[2:]], query),
        "signature not ASCII": _build(base, segments, {**query, "sig": "%C3%A9"}),
    }
    for what, url in forged.items():
        body = other_data if "oid" in what else data + b"x" if "size" in what else data
        r = httpx2.put(url, content=body)
        assert r.status_code == 403, what
    assert not local_hub.ctx.blobs.has(oid) and not local_hub.ctx.blobs.has(other_oid)
    # Expired: a URL signed by the hub itself, but with an expiry in the past.
    past = int(time.time()) - 1
    sig = local_hub.ctx.sign(int(segments[1]), oid, len(data), past)
    r = httpx2.put(_build(base, segments, {"expires": str(past), "sig": sig}), content=data)
    assert r.status_code == 403 and "expired" in r.json()["error"]
    assert not local_hub.ctx.blobs.has(oid)
    assert httpx2.put(href, content=data).status_code == 200  # the genuine URL still works
    assert local_hub.ctx.blobs.has(oid, len(data))


def test_tampered_and_expired_download_urls_are_refused(api: HfApi, repo_id, local_hub):
    data = os.urandom(3000)
    secret = os.urandom(3000)
    api.upload_file(path_or_fileobj=io.BytesIO(data), path_in_repo="w.bin", repo_id=repo_id)
    api.upload_file(path_or_fileobj=io.BytesIO(secret), path_in_repo="s.bin", repo_id=repo_id)
    location = httpx2.head(f"{api.endpoint}/{repo_id}/resolve/main/w.bin").headers["location"]
    base, segments, query = _parts(location)
    assert httpx2.get(location).content == data
    other = hashlib.sha256(secret).hexdigest()
    for what, url in {
        "expiry pushed later": _build(base, segments, {**query, "expires": str(int(query["expires"]) + 3600)}),
        "another object": _build(base, [segments[0], other], query),
        "expiry not a number": f"{base}/{'/'.join(segments)}?expires=soon&sig={query['sig']}",
        "signature not ASCII": f"{base}/{'/'.join(segments)}?expires={query['expires']}&sig=%C3%A9",
    }.items():
        r = httpx2.get(url)
        assert r.status_code == 403 and r.content != secret, what
    past = int(time.time()) - 1
    r = httpx2.get(_build(base, segments, {"expires": str(past), "sig": local_hub.ctx.sign("blob", segments[1], past)}))
    assert r.status_code == 403 and "expired" in r.json()["error"]


def test_short_range_reads_on_a_kept_alive_connection_do_not_wait_for_delayed_acks(api: HfApi, repo_id):
    """Headers and a sendfile'd body are two writes: with Nagle's algorithm on, a short body waited for the
    client's delayed ACK (~40 ms each: a safetensors header read of every cold load paid it)."""
    import http.client

    data = os.urandom(64 * 1024)
    api.upload_file(path_or_fileobj=io.BytesIO(data), path_in_repo="h.bin", repo_id=repo_id)
    location = urlsplit(httpx2.head(f"{api.endpoint}/{repo_id}/resolve/main/h.bin").headers["location"])
    conn = http.client.HTTPConnection(location.hostname, location.port, timeout=10)
    try:
        started = time.monotonic()
        for i in range(20):
            conn.request("GET", f"{location.path}?{location.query}", headers={"Range": f"bytes={i}-{i + 16383}"})
            response = conn.getresponse()
            assert response.status == 206 and response.read() == data[i : i + 16384]
        assert time.monotonic() - started < 0.5  # 20 x 40 ms with Nagle on
    finally:
        conn.close()
