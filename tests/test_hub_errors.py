"""Every error the client must see as its own typed exception, and bad input refused with nothing stored."""

from __future__ import annotations

import hashlib
import io
import os
import threading

import httpx2
import pytest
from huggingface_hub import CommitOperationAdd, CommitOperationDelete, HfApi, hf_hub_download
from huggingface_hub.errors import (
    BadRequestError,
    EntryNotFoundError,
    HfHubHTTPError,
    RemoteEntryNotFoundError,
    RepositoryNotFoundError,
    RevisionNotFoundError,
)


def test_missing_repo_revision_and_file(api: HfApi, repo_id, cache_dir):
    with pytest.raises(RepositoryNotFoundError):
        api.model_info("alice/does-not-exist")
    with pytest.raises(RepositoryNotFoundError):
        api.model_info("canonical-single-segment")
    with pytest.raises(RepositoryNotFoundError):
        hf_hub_download("alice/does-not-exist", "config.json", cache_dir=cache_dir)
    with pytest.raises(RepositoryNotFoundError):
        api.repo_info("alice/x", repo_type="dataset")
    assert not api.repo_exists("alice/does-not-exist")
    with pytest.raises(RevisionNotFoundError):
        api.model_info(repo_id, revision="nope")
    assert not api.revision_exists(repo_id, "nope")
    with pytest.raises(RevisionNotFoundError):
        hf_hub_download(repo_id, ".gitattributes", revision="nope", cache_dir=cache_dir)
    with pytest.raises(RemoteEntryNotFoundError):
        hf_hub_download(repo_id, "missing.json", cache_dir=cache_dir)
    assert not api.file_exists(repo_id, "missing.json")
    with pytest.raises(EntryNotFoundError):
        api.list_repo_tree(repo_id, path_in_repo="no/such/dir").__iter__().__next__()
    with pytest.raises(RevisionNotFoundError):
        api.create_branch(repo_id, branch="b", revision="nope")
    with pytest.raises(RevisionNotFoundError):
        api.create_tag(repo_id, tag="t", revision="nope")
    with pytest.raises(RevisionNotFoundError):
        api.delete_branch(repo_id, branch="nope")
    with pytest.raises(RevisionNotFoundError):
        api.delete_tag(repo_id, tag="nope")
    with pytest.raises(RevisionNotFoundError):
        api.upload_file(path_or_fileobj=b"x", path_in_repo="x", repo_id=repo_id, revision="nope")
    with pytest.raises(RepositoryNotFoundError):
        api.upload_file(path_or_fileobj=b"x", path_in_repo="x", repo_id="alice/does-not-exist")
    with pytest.raises(EntryNotFoundError, match="doesn't exist"):
        api.create_commit(repo_id, [CommitOperationDelete("missing.txt")], commit_message="rm")


@pytest.mark.parametrize("branch", ["a b", "a..b", "refs/pr/1", "x.lock", "-/", "a~1", "-x", "HEAD"])
def test_invalid_ref_names_are_refused(api: HfApi, repo_id, branch):
    with pytest.raises((BadRequestError, HfHubHTTPError)) as info:
        api.create_branch(repo_id, branch=branch)
    assert info.value.response.status_code == 400
    with pytest.raises(HfHubHTTPError) as info:
        api.create_tag(repo_id, tag=branch)
    assert info.value.response.status_code == 400


def test_main_cannot_be_deleted(api: HfApi, repo_id):
    with pytest.raises(HfHubHTTPError, match="Cannot delete refs/heads/main"):
        api.delete_branch(repo_id, branch="main")


@pytest.mark.parametrize("path", ["..\\ddd", "a/\x00b"])
def test_paths_escaping_the_repo_are_refused(api: HfApi, repo_id, path):
    with pytest.raises(HfHubHTTPError) as info:
        api.create_commit(repo_id, [CommitOperationAdd(path, b"evil")], commit_message="escape")
    assert info.value.response.status_code in (400, 422)
    assert api.list_repo_files(repo_id) == [".gitattributes"]


@pytest.mark.parametrize("path", ["/etc/passwd", "a/../../x", "../x", ".git/config"])
def test_raw_commits_escaping_the_repo_are_refused(api: HfApi, repo_id, path):
    # The client refuses these itself; a hostile client must meet the same refusal at the server.
    import base64
    import json

    body = (
        json.dumps({"key": "header", "value": {"summary": "x", "description": ""}})
        + "\n"
        + json.dumps(
            {
                "key": "file",
                "value": {"path": path, "content": base64.b64encode(b"evil").decode(), "encoding": "base64"},
            }
        )
        + "\n"
    )
    r = httpx2.post(
        f"{api.endpoint}/api/models/{repo_id}/commit/main",
        content=body.encode(),
        headers={"content-type": "application/x-ndjson"},
    )
    assert r.status_code == 422 and "path" in r.json()["error"]
    assert api.list_repo_files(repo_id) == [".gitattributes"]


def test_backslashes_are_not_separators(api: HfApi, repo_id):
    api.create_commit(repo_id, [CommitOperationAdd("folder/..\\..\\file", b"ok")], commit_message="weird but legal")
    assert "folder/..\\..\\file" in api.list_repo_files(repo_id)


def test_awful_filenames_round_trip(api: HfApi, repo_id, cache_dir):
    name = "subfolder/to?/awful?filename%you:should,never.give"
    api.upload_file(path_or_fileobj=b"awful", path_in_repo=name, repo_id=repo_id)
    assert open(hf_hub_download(repo_id, name, cache_dir=cache_dir), "rb").read() == b"awful"


def test_stale_parent_commit_is_refused(api: HfApi, repo_id):
    parent = api.model_info(repo_id).sha
    api.upload_file(path_or_fileobj=b"1", path_in_repo="a.txt", repo_id=repo_id, parent_commit=parent[:7])
    with pytest.raises(HfHubHTTPError) as info:
        api.upload_file(path_or_fileobj=b"2", path_in_repo="b.txt", repo_id=repo_id, parent_commit=parent)
    assert info.value.response.status_code == 412
    assert "b.txt" not in api.list_repo_files(repo_id)


def _lfs_upload_action(api: HfApi, repo_id: str, oid: str, size: int) -> dict:
    r = httpx2.post(
        f"{api.endpoint}/{repo_id}.git/info/lfs/objects/batch",
        json={
            "operation": "upload",
            "transfers": ["basic"],
            "objects": [{"oid": oid, "size": size}],
            "hash_algo": "sha256",
            "ref": {"name": "main"},
        },
    )
    r.raise_for_status()
    return r.json()["objects"][0]


def test_lfs_upload_with_wrong_content_is_rejected_and_not_stored(api: HfApi, repo_id, local_hub):
    good = os.urandom(4096)
    oid = hashlib.sha256(good).hexdigest()
    action = _lfs_upload_action(api, repo_id, oid, len(good))
    href = action["actions"]["upload"]["href"]
    bad = bytearray(good)
    bad[100] ^= 0xFF
    assert httpx2.put(href, content=bytes(bad)).status_code == 400  # same size, one byte flipped
    assert httpx2.put(href, content=good[:-1]).status_code == 400  # truncated
    assert not local_hub.ctx.blobs.has(oid)
    assert list((local_hub.ctx.root / "tmp").glob("*.part")) == []
    # Forged and tampered URLs are refused before reading the body.
    assert httpx2.put(href.replace("sig=", "sig=0"), content=good).status_code == 403
    # A commit referencing a never-uploaded object is refused.
    with pytest.raises(HfHubHTTPError) as info:
        httpx2_commit = (
            '{"key":"header","value":{"summary":"x","description":""}}\n'
            f'{{"key":"lfsFile","value":{{"path":"w.bin","algo":"sha256","oid":"{oid}","size":{len(good)}}}}}\n'
        )
        r = httpx2.post(
            f"{api.endpoint}/api/models/{repo_id}/commit/main",
            content=httpx2_commit.encode(),
            headers={"content-type": "application/x-ndjson"},
        )
        from huggingface_hub.utils import hf_raise_for_status

        hf_raise_for_status(r)
    assert info.value.response.status_code == 422
    assert httpx2.put(href, content=good).status_code == 200
    assert local_hub.ctx.blobs.has(oid, len(good))


def test_error_bodies_are_json_with_request_id(api: HfApi):
    r = httpx2.get(f"{api.endpoint}/api/models/alice/nothing-here", headers={"x-request-id": "abc"})
    assert r.status_code == 404
    assert r.headers["x-error-code"] == "RepoNotFound"
    assert r.headers["x-request-id"] == "abc"
    assert r.json() == {"error": "Repository not found"}
    r = httpx2.post(f"{api.endpoint}/api/validate-yaml", content=b"not json")
    assert r.headers["content-type"].startswith("application/json")


def test_resolve_headers_and_ranges(api: HfApi, repo_id):
    data = bytes(range(256)) * 10
    api.upload_file(path_or_fileobj=io.BytesIO(data), path_in_repo="w.bin", repo_id=repo_id)
    api.upload_file(path_or_fileobj=b"0123456789", path_in_repo="small.txt", repo_id=repo_id)
    head_sha = api.model_info(repo_id).sha
    # LFS files: a cross-origin 302 to the signed data-plane URL, carrying every metadata header.
    url = f"{api.endpoint}/{repo_id}/resolve/main/w.bin"
    r = httpx2.head(url)
    assert r.status_code == 302 and r.headers["location"].startswith("http://127.0.0.1:")
    assert r.headers["x-repo-commit"] == head_sha
    assert r.headers["x-linked-etag"].strip('"') == hashlib.sha256(data).hexdigest()
    assert r.headers["x-linked-size"] == str(len(data))
    assert "x-xet-hash" not in r.headers and "xet" not in r.headers.get("link", "")
    r = httpx2.get(url, headers={"range": "bytes=10-19"}, follow_redirects=True)
    assert r.status_code == 206 and r.content == data[10:20]
    assert r.headers["content-range"] == f"bytes 10-19/{len(data)}"
    r = httpx2.get(url, headers={"range": "bytes=-5"}, follow_redirects=True)
    assert r.status_code == 206 and r.content == data[-5:]
    r = httpx2.get(url, headers={"range": f"bytes={len(data)}-"}, follow_redirects=True)
    assert r.status_code == 416 and r.headers["content-range"] == f"bytes */{len(data)}"
    assert httpx2.get(url, follow_redirects=True).content == data
    location = httpx2.head(url).headers["location"]
    assert httpx2.get(location.replace("sig=", "sig=0")).status_code == 403
    # Regular files: served inline with the same headers.
    small = f"{api.endpoint}/{repo_id}/resolve/main/small.txt"
    r = httpx2.head(small)
    assert r.status_code == 200 and r.headers["content-length"] == "10" and r.headers["x-repo-commit"] == head_sha
    r = httpx2.get(small, headers={"range": "bytes=2-4"})
    assert r.status_code == 206 and r.content == b"234"
    r = httpx2.get(small, headers={"range": "bytes=10-"})
    assert r.status_code == 416 and r.headers["content-range"] == "bytes */10"


def test_api_only_hub_serves_lfs_inline(tmp_path, cache_dir):
    from hubckpt.server import LocalHubServer

    with LocalHubServer(tmp_path / "hub", data_plane=False) as hub:
        api = HfApi(endpoint=hub.url, token="x")
        api.create_repo("alice/inline")
        blob = os.urandom(3000)
        api.upload_file(path_or_fileobj=io.BytesIO(blob), path_in_repo="w.bin", repo_id="alice/inline")
        r = httpx2.head(f"{hub.url}/alice/inline/resolve/main/w.bin")
        assert r.status_code == 200 and r.headers["x-linked-size"] == r.headers["content-length"] == "3000"
        path = hf_hub_download("alice/inline", "w.bin", cache_dir=cache_dir, endpoint=hub.url)
        assert open(path, "rb").read() == blob
        r = httpx2.get(f"{hub.url}/alice/inline/resolve/main/w.bin", headers={"range": "bytes=0-9"})
        assert r.status_code == 206 and r.content == blob[:10]


def test_concurrent_commits_lose_nothing_and_refuse_stale_parents(api: HfApi, repo_id):
    n = 8
    barrier = threading.Barrier(n)
    errors: list[BaseException] = []

    def writer(i: int) -> None:
        try:
            barrier.wait()
            api.upload_file(path_or_fileobj=f"{i}".encode(), path_in_repo=f"w/{i}.txt", repo_id=repo_id)
        except BaseException as e:  # collected and asserted below
            errors.append(e)

    threads = [threading.Thread(target=writer, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert sorted(api.list_repo_files(repo_id)) == sorted([".gitattributes"] + [f"w/{i}.txt" for i in range(n)])
    assert len(api.list_repo_commits(repo_id)) == n + 1  # linear history, nothing lost

    parent = api.model_info(repo_id).sha
    outcomes: list[int] = []
    barrier = threading.Barrier(n)

    def cas_writer(i: int) -> None:
        barrier.wait()
        try:
            api.upload_file(
                path_or_fileobj=f"cas{i}".encode(), path_in_repo="cas.txt", repo_id=repo_id, parent_commit=parent
            )
            outcomes.append(200)
        except HfHubHTTPError as e:
            outcomes.append(e.response.status_code)

    threads = [threading.Thread(target=cas_writer, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(outcomes) == [200] + [412] * (n - 1)


@pytest.mark.parametrize(
    "what, path, body",
    [
        ("LFS batch body a list", "{repo}.git/info/lfs/objects/batch", b"[1]"),
        ("LFS batch objects not a list", "{repo}.git/info/lfs/objects/batch", b'{"operation": "upload", "objects": 5}'),
        (
            "LFS batch object not an object",
            "{repo}.git/info/lfs/objects/batch",
            b'{"operation": "upload", "objects": [1]}',
        ),
        ("commit header not an object", "api/models/{repo}/commit/main", b'{"key": "header", "value": 3}\n'),
        (
            "commit file not an object",
            "api/models/{repo}/commit/main",
            b'{"key": "header", "value": {"summary": "x"}}\n{"key": "file", "value": 3}\n',
        ),
        ("organization not a string", "api/repos/create", b'{"name": "x", "organization": 5}'),
        ("paths-info paths a string", "api/models/{repo}/paths-info/main", b'{"paths": ".gitattributes"}'),
    ],
)
def test_malformed_bodies_are_400_not_500(api: HfApi, repo_id, what, path, body):
    head = api.model_info(repo_id).sha
    r = httpx2.post(
        f"{api.endpoint}/{path.format(repo=repo_id)}", content=body, headers={"content-type": "application/json"}
    )
    assert r.status_code == 400, (what, r.status_code, r.text)
    assert api.model_info(repo_id).sha == head  # and nothing was committed
