"""The stock huggingface_hub client against the local hub: repos, commits, branches, tags, history, downloads."""

from __future__ import annotations

import io
import os

import pytest
from huggingface_hub import (
    CommitOperationAdd,
    CommitOperationDelete,
    HfApi,
    HfFileSystem,
    hf_hub_download,
    snapshot_download,
)
from huggingface_hub.errors import HfHubHTTPError


def test_whoami_and_repo_lifecycle(api: HfApi, local_hub):
    assert api.whoami()["name"] == "local"
    url = api.create_repo("alice/lifecycle")
    assert str(url) == f"{local_hub.url}/alice/lifecycle"
    assert api.create_repo("alice/lifecycle", exist_ok=True).repo_id == "alice/lifecycle"
    with pytest.raises(HfHubHTTPError) as info:
        api.create_repo("alice/lifecycle")
    assert info.value.response.status_code == 409
    assert api.repo_exists("alice/lifecycle")
    assert api.repo_exists("ALICE/LifeCycle")  # ids are case-insensitive
    info = api.model_info("alice/lifecycle")
    assert info.id == "alice/lifecycle" and len(info.sha) == 40
    assert [s.rfilename for s in info.siblings] == [".gitattributes"]
    commits = api.list_repo_commits("alice/lifecycle")
    assert [c.title for c in commits] == ["initial commit"]
    api.delete_repo("alice/lifecycle")
    assert not api.repo_exists("alice/lifecycle")
    api.delete_repo("alice/lifecycle", missing_ok=True)


def test_regular_and_lfs_files_on_main_and_branches(api: HfApi, repo_id, cache_dir):
    weights = os.urandom(200_000)
    api.create_commit(
        repo_id,
        [
            CommitOperationAdd("config.json", b'{"a": 1}'),
            CommitOperationAdd("model.safetensors", io.BytesIO(weights)),  # *.safetensors is LFS by .gitattributes
            CommitOperationAdd("nested/dir/notes.txt", b"hello"),
        ],
        commit_message="first files",
    )
    by_path = {e.path: e for e in api.list_repo_tree(repo_id, recursive=True)}
    assert by_path["model.safetensors"].lfs.size == len(weights)
    assert by_path["config.json"].lfs is None
    assert by_path["nested"].__class__.__name__ == "RepoFolder"
    assert "nested/dir" in by_path

    api.create_branch(repo_id, branch="step-0000100")
    api.upload_file(path_or_fileobj=b"branch only", path_in_repo="branch.txt", repo_id=repo_id, revision="step-0000100")
    assert "branch.txt" in api.list_repo_files(repo_id, revision="step-0000100")
    assert "branch.txt" not in api.list_repo_files(repo_id)

    path = hf_hub_download(repo_id, "model.safetensors", cache_dir=cache_dir)
    assert open(path, "rb").read() == weights
    path = hf_hub_download(repo_id, "branch.txt", revision="step-0000100", cache_dir=cache_dir)
    assert open(path, "rb").read() == b"branch only"


def test_branch_from_starting_point_tags_and_refs(api: HfApi, repo_id, cache_dir):
    first = api.upload_file(path_or_fileobj=b"v1", path_in_repo="f.txt", repo_id=repo_id).oid
    api.upload_file(path_or_fileobj=b"v2", path_in_repo="f.txt", repo_id=repo_id)
    api.create_branch(repo_id, branch="feat/old", revision=first)
    api.create_branch(repo_id, branch="feat/old", exist_ok=True)
    with pytest.raises(HfHubHTTPError) as info:
        api.create_branch(repo_id, branch="feat/old")
    assert info.value.response.status_code == 409
    api.create_tag(repo_id, tag="v1.0", revision="feat/old", tag_message="first")
    api.create_tag(repo_id, tag="v1.0", exist_ok=True)
    refs = api.list_repo_refs(repo_id)
    assert {b.name: b.target_commit for b in refs.branches}["feat/old"] == first
    assert [(t.name, t.target_commit) for t in refs.tags] == [("v1.0", first)]
    assert refs.converts == []

    # Downloads by branch (with '/'), tag, full and short sha.
    for revision in ("feat/old", "v1.0", first, first[:7]):
        path = hf_hub_download(repo_id, "f.txt", revision=revision, cache_dir=cache_dir)
        assert open(path, "rb").read() == b"v1", revision
    assert open(hf_hub_download(repo_id, "f.txt", cache_dir=cache_dir), "rb").read() == b"v2"

    api.delete_tag(repo_id, tag="v1.0")
    api.delete_branch(repo_id, branch="feat/old")
    refs = api.list_repo_refs(repo_id)
    assert [b.name for b in refs.branches] == ["main"] and refs.tags == []


def test_commit_history_is_paginated_and_ordered(api: HfApi, repo_id, local_hub):
    for i in range(7):
        api.upload_file(
            path_or_fileobj=f"{i}".encode(), path_in_repo="counter.txt", repo_id=repo_id, commit_message=f"count {i}"
        )
    old = local_hub.ctx.commits_page_size
    local_hub.ctx.commits_page_size = 3
    try:
        commits = api.list_repo_commits(repo_id, formatted=True)
    finally:
        local_hub.ctx.commits_page_size = old
    assert [c.title for c in commits] == [f"count {i}" for i in reversed(range(7))] + ["initial commit"]
    assert commits[0].formatted_title == "count 6"
    assert all(c.created_at.tzinfo is not None for c in commits)


def test_tree_pagination_expand_and_paths_info(api: HfApi, repo_id, local_hub):
    api.create_commit(
        repo_id, [CommitOperationAdd(f"d/f{i}.txt", f"{i}".encode()) for i in range(5)], commit_message="five files"
    )
    last = api.upload_file(
        path_or_fileobj=b"changed", path_in_repo="d/f0.txt", repo_id=repo_id, commit_message="change f0"
    )
    old = local_hub.ctx.tree_page_size
    local_hub.ctx.tree_page_size = 2
    try:
        files = api.list_repo_files(repo_id)
    finally:
        local_hub.ctx.tree_page_size = old
    assert files == [".gitattributes"] + [f"d/f{i}.txt" for i in range(5)]
    entries = {e.path: e for e in api.list_repo_tree(repo_id, path_in_repo="d", expand=True)}
    assert entries["d/f0.txt"].last_commit.title == "change f0"
    assert entries["d/f1.txt"].last_commit.title == "five files"
    infos = api.get_paths_info(repo_id, ["d/f0.txt", "d", "missing.txt"])
    assert [(i.path, type(i).__name__) for i in infos] == [("d/f0.txt", "RepoFile"), ("d", "RepoFolder")]
    assert last.oid == api.model_info(repo_id).sha


def test_delete_operations_and_noop_commit(api: HfApi, repo_id):
    api.create_commit(
        repo_id,
        [
            CommitOperationAdd("keep.txt", b"k"),
            CommitOperationAdd("a/1.txt", b"1"),
            CommitOperationAdd("a/2.txt", b"2"),
            CommitOperationAdd("b/3.txt", b"3"),
        ],
        commit_message="add",
    )
    api.delete_file("keep.txt", repo_id)
    api.delete_folder("a", repo_id)
    api.create_commit(repo_id, [CommitOperationDelete("b")], commit_message="deletedFile on a folder")
    assert api.list_repo_files(repo_id) == [".gitattributes"]
    # Re-uploading identical content is a no-op: no commit is created.
    api.upload_file(path_or_fileobj=b"x", path_in_repo="x.txt", repo_id=repo_id)
    head = api.model_info(repo_id).sha
    info = api.upload_file(path_or_fileobj=b"x", path_in_repo="x.txt", repo_id=repo_id)
    assert info.oid == head


def test_identical_lfs_content_is_stored_once_and_not_reuploaded(api: HfApi, repo_id, local_hub):
    blob = os.urandom(50_000)
    api.upload_file(path_or_fileobj=io.BytesIO(blob), path_in_repo="w.bin", repo_id=repo_id)
    objects_before = sum(1 for p in (local_hub.ctx.root / "objects").rglob("*") if p.is_file())
    api.create_branch(repo_id, branch="copy")
    api.upload_file(path_or_fileobj=io.BytesIO(blob), path_in_repo="w2.bin", repo_id=repo_id, revision="copy")
    other = repo_id + "-other"
    api.create_repo(other)
    api.upload_file(path_or_fileobj=io.BytesIO(blob), path_in_repo="w.bin", repo_id=other)
    objects_after = sum(1 for p in (local_hub.ctx.root / "objects").rglob("*") if p.is_file())
    assert objects_after - objects_before <= 2  # the commits' small regular files at most, never the blob again


def test_snapshot_download_and_hffilesystem(api: HfApi, repo_id, cache_dir):
    api.create_branch(repo_id, branch="feat/x")
    api.create_commit(
        repo_id,
        [CommitOperationAdd("a.txt", b"A"), CommitOperationAdd("sub/b.bin", io.BytesIO(b"\0B" * 100))],
        commit_message="files",
        revision="feat/x",
    )
    folder = snapshot_download(repo_id, revision="feat/x", cache_dir=cache_dir)
    assert open(os.path.join(folder, "sub", "b.bin"), "rb").read() == b"\0B" * 100

    fs = HfFileSystem(endpoint=api.endpoint, skip_instance_cache=True)
    root = f"{repo_id}@feat%2Fx"
    assert sorted(fs.ls(root, detail=False)) == sorted(f"{root}/{p}" for p in (".gitattributes", "a.txt", "sub"))
    assert fs.cat_file(f"{root}/sub/b.bin", start=1, end=5) == b"B\0B\0"
    with fs.open(f"{root}/a.txt", "rb") as f:
        assert f.read() == b"A"
    assert fs.info(f"{root}/sub/b.bin")["size"] == 200


def test_range_reads_of_a_safetensors_header(api: HfApi, repo_id, tmp_path):
    import torch
    from safetensors.torch import save_file

    save_file(
        {"w": torch.arange(1000, dtype=torch.float32), "b": torch.zeros(3, dtype=torch.bfloat16)},
        tmp_path / "model.safetensors",
        metadata={"step": "100"},
    )
    api.upload_file(
        path_or_fileobj=str(tmp_path / "model.safetensors"), path_in_repo="model.safetensors", repo_id=repo_id
    )
    meta = api.get_safetensors_metadata(repo_id)
    file_meta = meta.files_metadata["model.safetensors"]
    assert file_meta.metadata == {"step": "100"}
    assert file_meta.tensors["w"].shape == [1000] and file_meta.tensors["b"].dtype == "BF16"


def test_super_squash_history(api: HfApi, repo_id):
    for i in range(3):
        api.upload_file(path_or_fileobj=f"{i}".encode(), path_in_repo="f.txt", repo_id=repo_id)
    api.super_squash_history(repo_id, commit_message="squashed")
    commits = api.list_repo_commits(repo_id)
    assert [c.title for c in commits] == ["squashed"]
    assert api.list_repo_files(repo_id) == [".gitattributes", "f.txt"]


def test_readme_metadata_is_validated(api: HfApi, repo_id):
    api.upload_file(
        path_or_fileobj=b"---\nlibrary_name: transformers\ntags: [hubckpt]\n---\n# Card\n",
        path_in_repo="README.md",
        repo_id=repo_id,
    )
    info = api.model_info(repo_id)
    assert info.library_name == "transformers" and info.tags == ["hubckpt"]
    with pytest.raises(ValueError, match="model-index"):
        api.upload_file(path_or_fileobj=b"---\nmodel-index: foo\n---\n", path_in_repo="README.md", repo_id=repo_id)


def test_gitignore_and_size_decide_preupload(api: HfApi, repo_id):
    api.upload_file(path_or_fileobj=b"nested/*\n", path_in_repo=".gitignore", repo_id=repo_id)
    api.create_commit(
        repo_id,
        [CommitOperationAdd("nested/file.bin", b"\0ignored"), CommitOperationAdd("kept.txt", b"kept")],
        commit_message="with ignores",
    )
    files = api.list_repo_files(repo_id)
    assert "kept.txt" in files and "nested/file.bin" not in files
    import httpx2

    r = httpx2.post(
        f"{api.endpoint}/api/models/{repo_id}/preupload/main",
        json={
            "files": [
                {"path": "big.txt", "sample": "", "size": 11 * 1024 * 1024},
                {"path": "small.txt", "sample": "aGVsbG8=", "size": 5},
                {"path": "bin.dat", "sample": "AAEC", "size": 3},
                {"path": "kept.txt", "sample": "", "size": 4},
            ]
        },
    )
    answer = {f["path"]: f for f in r.json()["files"]}
    assert answer["big.txt"]["uploadMode"] == "lfs" and answer["bin.dat"]["uploadMode"] == "lfs"
    assert answer["small.txt"]["uploadMode"] == "regular" and answer["small.txt"]["shouldIgnore"] is False
    assert answer["kept.txt"]["oid"] is not None


def test_preupload_refuses_a_malformed_size_with_400(api: HfApi, repo_id):
    import httpx2

    for size in ("abc", -1, 1.5):
        r = httpx2.post(
            f"{api.endpoint}/api/models/{repo_id}/preupload/main",
            json={"files": [{"path": "a.txt", "sample": "", "size": size}]},
        )
        assert r.status_code == 400 and "integer 'size'" in r.json()["error"], (size, r.status_code, r.text)
