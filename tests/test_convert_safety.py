"""Hostile and broken inputs: refused with a typed error naming the file; nothing runs, nothing is left behind."""

from __future__ import annotations

import io
import json
import os
import pickle
import struct
import subprocess
import sys
import tarfile
import textwrap
from pathlib import Path

import pytest
import torch

import hubckpt
from hubckpt.errors import CorruptCheckpointError, UnsafeCheckpointError, UnsupportedCheckpointError

from .helpers import run_cli


class _Canary:
    """Unpickling this would create the canary file (it never must)."""

    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self):
        return (os.system, (f"touch {self.path}",))


def _assert_clean(tmp_path: Path, dest: Path) -> None:
    assert not dest.exists()
    assert not list(dest.parent.glob(f".{dest.name}.tmp-*"))


def test_pickle_that_would_run_code_is_refused_and_never_runs(tmp_path):
    canary = tmp_path / "canary"
    torch.save({"w": torch.ones(2), "evil": _Canary(str(canary))}, tmp_path / "evil.pt")
    with pytest.raises(UnsafeCheckpointError) as info:
        hubckpt.convert(tmp_path / "evil.pt", tmp_path / "out")
    message = str(info.value)
    assert "system" in message and "--allow-global" in message and str(tmp_path / "evil.pt") in message
    assert any("system" in g for g in info.value.globals)
    assert not canary.exists()
    _assert_clean(tmp_path, tmp_path / "out")


def test_plain_pickle_with_reduce_in_a_trainer_folder_is_refused(tmp_path):
    canary = tmp_path / "canary"
    folder = tmp_path / "checkpoint-10"
    folder.mkdir()
    torch.save({"w": torch.ones(2)}, folder / "pytorch_model.bin")
    with open(folder / "optimizer.pt", "wb") as f:  # a non-zip (legacy stream) pickle
        pickle.dump(_Canary(str(canary)), f, protocol=2)
    with pytest.raises((UnsafeCheckpointError, CorruptCheckpointError)):
        hubckpt.convert(folder, tmp_path / "out")
    assert not canary.exists()
    _assert_clean(tmp_path, tmp_path / "out")


def test_allow_global_is_an_explicit_opt_in(tmp_path):
    from argparse import Namespace  # fairseq-style checkpoints pickle their args

    torch.save({"w": torch.ones(2), "args": Namespace(lr=0.1)}, tmp_path / "args.pt")
    with pytest.raises(UnsafeCheckpointError, match="argparse.Namespace"):
        hubckpt.convert(tmp_path / "args.pt", tmp_path / "out")
    [result] = hubckpt.convert(tmp_path / "args.pt", tmp_path / "out", allow_globals=["argparse.Namespace"])
    assert (result.dest / "model.safetensors").exists()
    assert ("args.pt:args", "entry of a type hubckpt does not carry over") in result.skipped


def test_legacy_tar_torch_files_are_refused(tmp_path):
    path = tmp_path / "old.tar"
    with tarfile.open(path, "w") as tar:
        for name in ("sys_info", "pickle", "storages", "tensors"):
            data = pickle.dumps({"x": 1})
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    with pytest.raises(UnsupportedCheckpointError, match="legacy tar"):
        hubckpt.convert(path, tmp_path / "out")


def _safetensors_bytes(header: dict, data: bytes) -> bytes:
    raw = json.dumps(header).encode()
    return struct.pack("<Q", len(raw)) + raw + data


@pytest.mark.parametrize(
    "name,content",
    [
        ("huge-header", struct.pack("<Q", 10**12) + b"{}"),
        ("header-past-end", struct.pack("<Q", 500) + b'{"a": 1}'),
        (
            "overlapping",
            _safetensors_bytes(
                {
                    "a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]},
                    "b": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]},
                },
                b"\0" * 8,
            ),
        ),
        ("out-of-range", _safetensors_bytes({"a": {"dtype": "F32", "shape": [4], "data_offsets": [0, 16]}}, b"\0" * 8)),
        ("bad-shape", _safetensors_bytes({"a": {"dtype": "F32", "shape": [3], "data_offsets": [0, 8]}}, b"\0" * 8)),
        (
            "trailing-polyglot",
            _safetensors_bytes({"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}}, b"\0" * 12),
        ),
        ("not-json", struct.pack("<Q", 5) + b"{abcd" + b"\0" * 8),
    ],
)
def test_malformed_safetensors_are_refused(tmp_path, name, content):
    path = tmp_path / f"{name}.safetensors"
    path.write_bytes(content)
    with pytest.raises(CorruptCheckpointError) as info:
        hubckpt.convert(path, tmp_path / "out")
    assert str(path) in str(info.value)
    _assert_clean(tmp_path, tmp_path / "out")


def test_truncated_torch_file_is_refused(tmp_path):
    torch.save({"w": torch.randn(1000)}, tmp_path / "full.bin")
    data = (tmp_path / "full.bin").read_bytes()
    (tmp_path / "cut.bin").write_bytes(data[: len(data) // 2])
    with pytest.raises(CorruptCheckpointError, match="cut.bin"):
        hubckpt.convert(tmp_path / "cut.bin", tmp_path / "out")
    _assert_clean(tmp_path, tmp_path / "out")


def test_index_pointing_outside_the_folder_is_refused(tmp_path):
    folder = tmp_path / "ckpt"
    folder.mkdir()
    torch.save({"w": torch.ones(2)}, tmp_path / "outside.bin")
    (folder / "pytorch_model.bin.index.json").write_text(json.dumps({"weight_map": {"w": "../outside.bin"}}))
    with pytest.raises(CorruptCheckpointError, match="not a file inside"):
        hubckpt.convert(folder, tmp_path / "out")


def test_unknown_files_and_folders(tmp_path):
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(UnsupportedCheckpointError, match="not a checkpoint"):
        hubckpt.convert(tmp_path / "notes.txt", tmp_path / "out")
    (tmp_path / "empty").mkdir()
    with pytest.raises(UnsupportedCheckpointError, match="holds no checkpoint"):
        hubckpt.convert(tmp_path / "empty", tmp_path / "out")
    torch.save([1, 2, 3], tmp_path / "list.pt")
    with pytest.raises(UnsupportedCheckpointError, match="list"):
        hubckpt.convert(tmp_path / "list.pt", tmp_path / "out")


def test_hostile_dcp_metadata_never_runs(tmp_path):
    from .factories import make_dcp_folder

    folder = make_dcp_folder(tmp_path / "dcp")
    canary = tmp_path / "canary"
    with open(folder / ".metadata", "wb") as f:
        pickle.dump(_Canary(str(canary)), f)
    with pytest.raises(UnsafeCheckpointError, match="posix.system|os.system"):
        hubckpt.convert(folder, tmp_path / "out")
    assert not canary.exists()


def test_disk_full_leaves_nothing_behind(tmp_path):
    torch.save({"w": torch.randn(512, 512)}, tmp_path / "w.bin")  # 1 MiB of weights
    script = textwrap.dedent(f"""
        import resource, signal, sys
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)   # writes past the limit fail with EFBIG instead
        resource.setrlimit(resource.RLIMIT_FSIZE, (200_000, 200_000))
        import hubckpt
        from hubckpt.errors import DiskFullError
        try:
            hubckpt.convert({str(tmp_path / "w.bin")!r}, {str(tmp_path / "out")!r})
        except DiskFullError as e:
            print("DISKFULL", e)
            sys.exit(3)
    """)
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 3, proc.stdout + proc.stderr
    assert "No space left" in proc.stdout
    _assert_clean(tmp_path, tmp_path / "out")


def test_cli_summary_and_one_line_errors(tmp_path):
    from .factories import make_nanogpt_file

    path, _, _ = make_nanogpt_file(tmp_path / "ckpt.pt")
    ok = run_cli("convert", str(path), str(tmp_path / "out"), env={"HUBCKPT_DISABLE_PROGRESS_BARS": "1"})
    assert ok.returncode == 0, ok.stderr
    assert "3 tensors" in ok.stdout and "tied weights written once: lm_head.weight = wte.weight" in ok.stdout
    assert "training_state/: loop, optimizer" in ok.stdout and "bit-identical" in ok.stdout
    again = run_cli("convert", str(path), str(tmp_path / "out"))
    assert again.returncode == 1 and again.stderr.startswith("Error: ") and "--overwrite" in again.stderr
    assert "Traceback" not in again.stderr
    torch.save({"evil": _Canary(str(tmp_path / "canary"))}, tmp_path / "evil.pt")
    evil = run_cli("convert", str(tmp_path / "evil.pt"), str(tmp_path / "evil-out"))
    assert evil.returncode == 1 and "--allow-global" in evil.stderr and not (tmp_path / "canary").exists()
    bad = run_cli("convert", str(path), str(tmp_path / "x"), "--dtype", "int3")
    assert bad.returncode != 0 and "keep, bf16 or fp16" in bad.stderr
