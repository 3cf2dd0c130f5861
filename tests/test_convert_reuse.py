"""A checkpoint that already is safetensors is validated in one read and linked, not rewritten."""

from __future__ import annotations

import hashlib
import json
import struct

import pytest
import torch
from safetensors.torch import load_file, save_file

import hubckpt
from hubckpt.errors import CorruptCheckpointError


def _folder(tmp_path, tensors=None):
    src = tmp_path / "checkpoint-3"
    src.mkdir()
    save_file(
        tensors or {"a": torch.arange(6.0).reshape(2, 3), "b": torch.ones(4, dtype=torch.int64)},
        src / "model.safetensors",
    )
    (src / "config.json").write_text("{}")
    return src


def test_safetensors_checkpoint_is_linked_and_described(tmp_path):
    src = _folder(tmp_path)
    from hubckpt.conversion import convert_checkpoint
    from hubckpt.readers import read_checkpoint

    [copied] = hubckpt.convert(src, tmp_path / "copy")  # the user's folder: a copy (made in the validating read)
    assert (copied.dest / "model.safetensors").stat().st_ino != (src / "model.safetensors").stat().st_ino
    assert (copied.dest / "model.safetensors").read_bytes() == (src / "model.safetensors").read_bytes()
    result = convert_checkpoint(read_checkpoint(src), tmp_path / "out", link=True)  # the publisher's spool
    out = result.dest / "model.safetensors"
    assert out.stat().st_ino == (src / "model.safetensors").stat().st_ino  # reused, not rewritten
    manifest = json.loads((result.dest / "checkpoint.json").read_text())
    entry = next(f for f in manifest["files"] if f["path"] == "model.safetensors")
    assert entry["sha256"] == hashlib.sha256(out.read_bytes()).hexdigest()
    assert manifest["weights"]["tensors"] == 2 and manifest["weights"]["parameters"] == 10
    assert manifest["weights"]["dtypes"] == {"float32": 1, "int64": 1}
    assert torch.equal(load_file(out)["a"], torch.arange(6.0).reshape(2, 3))


def _rewrite_header(path, mutate, extra: bytes = b""):
    raw = path.read_bytes()
    n = struct.unpack("<Q", raw[:8])[0]
    header = json.loads(raw[8 : 8 + n])
    text = mutate(header) if callable(mutate) else mutate
    data = text.encode() if isinstance(text, str) else json.dumps(header).encode()
    data += b" " * (-len(data) % 8)
    path.write_bytes(struct.pack("<Q", len(data)) + data + raw[8 + n :] + extra)


@pytest.mark.parametrize("case", ["overlap", "trailing", "shape", "duplicate", "dtype", "metadata"])
def test_malformed_safetensors_is_refused_on_the_reuse_path(tmp_path, case):
    src = _folder(tmp_path)
    path = src / "model.safetensors"
    if case == "overlap":
        _rewrite_header(path, lambda h: h["a"].update(data_offsets=[0, 24]))
    elif case == "trailing":
        _rewrite_header(path, lambda h: None, extra=b"polyglot")
    elif case == "shape":
        _rewrite_header(path, lambda h: h["a"].update(shape=[3, 3]))
    elif case == "dtype":
        _rewrite_header(path, lambda h: h["a"].update(dtype="F99"))
    elif case == "metadata":
        _rewrite_header(path, lambda h: h.update(__metadata__={"x": 1}))
    else:
        raw = path.read_bytes()
        n = struct.unpack("<Q", raw[:8])[0]
        header = raw[8 : 8 + n].decode().rstrip()
        first = header[1 : header.index("}") + 1]  # the first entry, repeated
        _rewrite_header(path, "{" + first + "," + header[1:])
    with pytest.raises(CorruptCheckpointError):
        hubckpt.convert(src, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_dtype_cast_and_compile_prefix_still_rewrite(tmp_path):
    src = _folder(tmp_path, {"_orig_mod.w": torch.ones(3)})
    [result] = hubckpt.convert(src, tmp_path / "out")
    assert list(load_file(result.dest / "model.safetensors")) == ["w"]
    src2 = _folder(tmp_path / "2", {"w": torch.ones(3)}) if (tmp_path / "2").mkdir() is None else None
    [cast] = hubckpt.convert(src2, tmp_path / "cast", dtype="bf16")
    assert load_file(cast.dest / "model.safetensors")["w"].dtype == torch.bfloat16
    assert (cast.dest / "model.safetensors").stat().st_ino != (src2 / "model.safetensors").stat().st_ino
