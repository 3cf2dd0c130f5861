"""One commit from files another process uploaded (`hub/uploaded.py`): the private fields of huggingface_hub's
`CommitOperationAdd` multi-rank publishing relies on. Fails when huggingface_hub changes them."""

from __future__ import annotations

import dataclasses
import hashlib

import pytest


def test_commit_operation_add_still_has_the_fields_we_set():
    from huggingface_hub import CommitOperationAdd

    from hubckpt.hub.uploaded import PRIVATE_FIELDS, check_private_fields

    names = {f.name for f in dataclasses.fields(CommitOperationAdd)}
    assert set(PRIVATE_FIELDS) <= names
    check_private_fields()


def test_a_missing_field_is_a_clear_error(monkeypatch):
    from hubckpt.errors import PublishError
    from hubckpt.hub import uploaded

    monkeypatch.setattr(uploaded, "PRIVATE_FIELDS", (*uploaded.PRIVATE_FIELDS, "_gone_in_a_new_version"))
    with pytest.raises(PublishError, match="_gone_in_a_new_version"):
        uploaded.check_private_fields()


def test_a_file_uploaded_by_one_client_is_committed_by_another(tmp_path, local_hub, repo_id):
    from huggingface_hub import HfApi

    from hubckpt.hub.select import resolve_hub
    from hubckpt.hub.uploaded import operation, upload_files
    from hubckpt.hub.writer import HubTarget

    data = b"\x00safetensors-like\x00" * 4096
    (tmp_path / "shard.safetensors").write_bytes(data)
    uploader = HubTarget(resolve_hub(local_hub.url), repo_id, token="unused")
    (up,) = upload_files(uploader, {"model-00002-of-00002.safetensors": tmp_path / "shard.safetensors"})
    assert up.content is None and up.size == len(data) and up.sha256 == hashlib.sha256(data).hexdigest()
    # The committer never sees the bytes: only (path, sha256, size).
    committer = HfApi(endpoint=local_hub.url, token="unused")
    committer.create_commit(repo_id, [operation(up)], commit_message="shards from elsewhere")
    path = committer.hf_hub_download(repo_id, "model-00002-of-00002.safetensors", cache_dir=tmp_path / "c")
    assert open(path, "rb").read() == data
