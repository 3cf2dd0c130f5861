"""direct_io: files written and read past the page cache hold exactly the bytes given, whatever the sizes,
and the buffered fallback (no O_DIRECT, or O_DIRECT refused mid-file) gives the same files."""

from __future__ import annotations

import errno
import hashlib
import io
import os

import pytest

from hubckpt import direct_io
from hubckpt.direct_io import ALIGN, CHUNK, DirectReader, DirectWriter

SIZES = [0, 1, ALIGN - 1, ALIGN, ALIGN + 1, CHUNK - 7, CHUNK, CHUNK + ALIGN + 3, 2 * CHUNK + 12345]


def _payload(n: int) -> bytes:
    return (hashlib.sha256(str(n).encode()).digest() * (n // 32 + 1))[:n]


def _write(path, data: bytes, pieces: list[int]) -> None:
    with DirectWriter(path) as f:
        view, at = memoryview(data), 0
        for n in pieces:
            f.write(view[at : at + n])
            at += n
        f.write(view[at:])


@pytest.mark.parametrize("direct", [True, False], ids=["o_direct", "buffered"])
@pytest.mark.parametrize("size", SIZES)
def test_written_files_hold_exactly_the_bytes(tmp_path, monkeypatch, direct, size):
    monkeypatch.setenv("HUBCKPT_DIRECT_IO", "1" if direct else "0")
    data = _payload(size)
    path = tmp_path / "f.bin"
    _write(path, data, [3, ALIGN + 5, CHUNK // 2])  # writes that straddle blocks and buffer boundaries
    assert path.read_bytes() == data
    with DirectReader(path) as f:
        assert f.read() == data
        f.seek(0)
        pieces = iter(lambda: f.read(65536), b"")
        assert b"".join(pieces) == data


def test_reader_is_a_seekable_binary_stream(tmp_path):
    data = _payload(CHUNK + 5000)
    path = tmp_path / "f.bin"
    path.write_bytes(data)
    with DirectReader(path) as f:
        assert isinstance(f, io.BufferedIOBase) and f.seekable() and f.readable()
        assert f.seek(0, io.SEEK_END) == len(data) and f.read(10) == b""
        f.seek(CHUNK - 3)
        assert f.read(10) == data[CHUNK - 3 : CHUNK + 7]
        f.seek(-4, io.SEEK_CUR)
        buf = bytearray(8)
        assert f.readinto(buf) == 8 and bytes(buf) == data[CHUNK + 3 : CHUNK + 11]
        assert f.tell() == CHUNK + 11
        f.seek(100)
        assert bytes(f.readview(50)) == data[100:150]
        with pytest.raises(OSError):
            f.seek(-1)
    with pytest.raises(ValueError):
        f.read(1)


def test_a_refused_direct_write_continues_buffered(tmp_path, monkeypatch):
    """A filesystem that accepts O_DIRECT at open but refuses the writes: the file is still complete."""
    if not direct_io.direct_io_enabled():
        pytest.skip("no O_DIRECT on this platform")
    import fcntl

    real_write, refused = os.write, []

    def write(fd, data):
        if fcntl.fcntl(fd, fcntl.F_GETFL) & direct_io._O_DIRECT:
            refused.append(len(data))
            raise OSError(errno.EINVAL, "Invalid argument")
        return real_write(fd, data)

    monkeypatch.setattr(direct_io.os, "write", write)
    data = _payload(CHUNK + 999)
    path = tmp_path / "f.bin"
    _write(path, data, [CHUNK // 3])
    assert refused and path.read_bytes() == data


def test_abort_leaves_the_file_for_the_caller_and_releases_it(tmp_path):
    path = tmp_path / "f.bin"
    writer = DirectWriter(path)
    writer.write(b"x" * 10)
    writer.abort()
    writer.abort()  # twice is harmless
    path.unlink()  # closed: removable, nothing holds it
    with pytest.raises(ZeroDivisionError):
        with DirectWriter(path) as w:
            w.write(b"y" * (ALIGN + 1))
            raise ZeroDivisionError
    assert path.exists()


def test_limit_rate_paces_the_bytes_moved(tmp_path):
    import time

    data = _payload(4 * CHUNK)
    try:
        direct_io.limit_rate(100)  # MB/s: 33.5 MB written then read should take >= 0.6 s
        started = time.monotonic()
        _write(tmp_path / "f.bin", data, [])
        with DirectReader(tmp_path / "f.bin") as f:
            assert f.read() == data
        assert time.monotonic() - started >= 0.55
    finally:
        direct_io.limit_rate(None)
    started = time.monotonic()
    _write(tmp_path / "g.bin", data, [])
    assert (tmp_path / "g.bin").read_bytes() == data


@pytest.mark.parametrize("direct", [True, False], ids=["o_direct", "buffered"])
@pytest.mark.parametrize("size", [0, ALIGN + 1, CHUNK, 2 * CHUNK + 12345])
def test_the_writer_hashes_what_it_writes_and_receives_from_a_stream(tmp_path, monkeypatch, direct, size):
    monkeypatch.setenv("HUBCKPT_DIRECT_IO", "1" if direct else "0")
    data = _payload(size)
    with DirectWriter(tmp_path / "a.bin", sha256=True) as f:
        f.write(data[:5])
        f.write(data[5:])
    assert f.hexdigest() == hashlib.sha256(data).hexdigest()
    assert (tmp_path / "a.bin").read_bytes() == data

    stream = io.BufferedReader(io.BytesIO(data + b"trailing bytes stay unread"), buffer_size=ALIGN)
    with DirectWriter(tmp_path / "b.bin", sha256=True) as f:
        first = min(3, size)
        assert f.write_from(stream.readinto, first) == first
        assert f.write_from(stream.readinto, size - first) == size - first
    assert f.hexdigest() == hashlib.sha256(data).hexdigest()
    assert (tmp_path / "b.bin").read_bytes() == data
    with DirectWriter(tmp_path / "c.bin") as f:  # a stream that ends early: what arrived is counted
        assert f.write_from(io.BytesIO(data).readinto, size + 100) == size
    with pytest.raises(ValueError):
        f.hexdigest()  # made without sha256=True


def test_a_failed_write_behind_surfaces_and_releases_the_file(tmp_path, monkeypatch):
    """Full blocks go to the disk on a helper thread: its error reaches the writer's caller, and nothing leaks."""
    real_write, calls = os.write, []

    def write(fd, data):
        calls.append(len(data))
        if len(calls) == 2:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_write(fd, data)

    monkeypatch.setattr(direct_io.os, "write", write)
    path = tmp_path / "f.bin"
    with pytest.raises(OSError) as raised:
        with DirectWriter(path) as f:
            f.write(_payload(4 * CHUNK))
            f.close()
    assert raised.value.errno == errno.ENOSPC
    path.unlink()  # released: removable, nothing holds it open

    calls.clear()
    writer = DirectWriter(path)
    writer.write(_payload(2 * CHUNK))  # the second block fails on the helper thread ...
    with pytest.raises(OSError):
        writer.write(_payload(CHUNK))  # ... and surfaces here
    with pytest.raises(OSError):
        writer.write(b"x")  # it sticks: a file missing a block is never closed as if complete
    with pytest.raises(OSError):
        writer.close()
    path.unlink()
    monkeypatch.setattr(direct_io.os, "write", real_write)
    _write(path, _payload(CHUNK + 1), [])  # the pool's buffers are usable again
    assert path.read_bytes() == _payload(CHUNK + 1)


def test_writes_work_while_the_interpreter_shuts_down(tmp_path):
    """An atexit handler (a Checkpointer closed at exit, say) can still write files larger than a block."""
    import subprocess
    import sys

    path = tmp_path / "f.bin"
    script = (
        "import atexit\nfrom hubckpt.direct_io import DirectWriter\n"
        f"def last():\n    with DirectWriter({str(path)!r}) as f:\n        f.write(b'z' * (3 * {CHUNK} + 5))\n"
        "atexit.register(last)\n"
    )
    subprocess.run([sys.executable, "-c", script], check=True, timeout=60)
    assert path.read_bytes() == b"z" * (3 * CHUNK + 5)
