"""Checkpoint-sized sequential file I/O that bypasses the page cache (Linux `O_DIRECT`).

Why: writing a new file through the page cache makes the kernel find, zero and map a fresh page for
every 4 KiB, and reading an uncached one does the same. On the VMs this project is measured on that
costs ~4 CPU-seconds per GiB (free-page reporting hands freed guest memory back to the host, so a page
is faulted in again on reuse), more than hashing and sending the same bytes together; even on bare
metal it is the largest per-byte cost of a write. A checkpoint is written once and read once (to
verify and upload it) and gains nothing from being cached: caching only pushes the training job's own
pages out. With `O_DIRECT` the disk moves the bytes by DMA from reused, page-aligned buffers (two per
file being written: one fills while a helper thread writes the other): ~0.05 CPU-seconds per GiB
(`bench/README.md`, "Publishing from a child process").

Where `O_DIRECT` is missing (not Linux) or refused (tmpfs on older kernels, some FUSE and overlay
filesystems: `EINVAL` at open or at the first write), both classes fall back to ordinary buffered I/O
with the same results. `HUBCKPT_DIRECT_IO=0` turns direct I/O off.

`limit_rate(mb_per_s)` paces every block these classes move in this process (the publishing process
uses it for `Checkpointer(publish_mb_per_s=...)` while it uploads): on cores a training loop keeps
busy, whatever runs beside it slows it for as long as it runs, so the same work spread over more time
keeps training closer to full speed.
"""

from __future__ import annotations

import errno
import hashlib
import io
import logging
import mmap
import os
import queue
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from pathlib import Path

from hubckpt import environment

logger = logging.getLogger(__name__)

ALIGN = 4096  # file offsets, sizes and buffer addresses of O_DIRECT requests: a multiple of every block size in use
CHUNK = 8 * 1024 * 1024
_PIECE = 1024 * 1024  # copied then hashed at once: well inside a core's L2 cache
_O_DIRECT = getattr(os, "O_DIRECT", 0)
_O_BINARY = getattr(os, "O_BINARY", 0)  # Windows: no newline translation


def direct_io_enabled() -> bool:
    """Whether large files are read and written with O_DIRECT (Linux; unless HUBCKPT_DIRECT_IO=0)."""
    return bool(_O_DIRECT) and environment.direct_io()


class _BufferPool:
    """Page-aligned CHUNK-sized buffers (anonymous maps), reused so their pages are faulted in once."""

    def __init__(self, keep: int = 16) -> None:  # two per writer in flight
        self._free: list[mmap.mmap] = []
        self._keep = keep
        self._lock = threading.Lock()

    def take(self) -> mmap.mmap:
        with self._lock:
            if self._free:
                return self._free.pop()
        if hasattr(mmap, "MAP_PRIVATE"):  # private: a forked child writing into its copy must not write into ours
            return mmap.mmap(-1, CHUNK, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
        return mmap.mmap(-1, CHUNK)

    def forget(self) -> None:
        """Drop the pooled buffers (in a forked child: the parent's threads may have been using them)."""
        self._free = []
        self._lock = threading.Lock()

    def give(self, buffer: mmap.mmap) -> None:
        with self._lock:
            if len(self._free) < self._keep:
                self._free.append(buffer)
                return
        try:
            buffer.close()
        except BufferError:
            pass  # a caller still holds a view of it: unmapped when that goes


_POOL = _BufferPool()


class _Pacer:
    """Sleeps so that the bytes moved stay under a rate (process-wide; off by default).

    A sleeper wakes as soon as the rate changes (`limit_rate`), so lifting the cap takes effect at once.
    """

    def __init__(self) -> None:
        self.bytes_per_s = 0.0
        self._changed = threading.Condition()
        self._start = 0.0
        self._moved = 0

    def pace(self, nbytes: int) -> None:
        rate = self.bytes_per_s  # read once: limit_rate() may change it from another thread
        if not rate:
            return
        with self._changed:
            now = time.monotonic()
            if self._moved / rate < now - self._start - 1.0:  # idle for a while: no credit saved up
                self._start, self._moved = now, 0
            self._moved += nbytes
            delay = self._moved / rate - (now - self._start)
            if delay > 0:
                self._changed.wait_for(lambda: self.bytes_per_s != rate, timeout=delay)

    def set_rate(self, bytes_per_s: float) -> None:
        with self._changed:
            if bytes_per_s != self.bytes_per_s:
                self.bytes_per_s = bytes_per_s
                self._start, self._moved = time.monotonic(), 0
                self._changed.notify_all()


_PACER = _Pacer()


class _WriteBehind:
    """One daemon thread that writes one DirectWriter's full blocks, in order.

    Made by the writing thread, so it inherits that thread's nice value or idle class (Linux threads
    inherit their creator's); a daemon so that writes still work while the interpreter shuts down
    (atexit handlers, threads outliving the main one), unlike a `concurrent.futures` pool.
    """

    def __init__(self, write_block) -> None:
        self._write_block = write_block
        self._jobs: queue.SimpleQueue = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._run, name="hubckpt-direct-write", daemon=True)
        self._thread.start()

    def submit(self, buffer: mmap.mmap, length: int) -> Future:
        future: Future = Future()
        self._jobs.put((future, buffer, length))
        return future

    def stop(self) -> None:
        self._jobs.put(None)

    def _run(self) -> None:
        while (job := self._jobs.get()) is not None:
            future, buffer, length = job
            try:
                self._write_block(buffer, length)
            except BaseException as e:  # noqa: BLE001 - handed to the writing thread
                future.set_exception(e)
            else:
                future.set_result(None)


def limit_rate(mb_per_s: float | None) -> None:
    """Cap the bytes per second that DirectWriter/DirectReader move in this process (None or 0: no cap)."""
    _PACER.set_rate(float(mb_per_s or 0) * 1e6)


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_POOL.forget)


def _open(path: Path, flags: int, mode: int = 0o644) -> tuple[int, bool]:
    """(fd, opened with O_DIRECT)."""
    flags |= _O_BINARY
    if direct_io_enabled():
        try:
            return os.open(path, flags | _O_DIRECT, mode), True
        except OSError as e:
            if e.errno != errno.EINVAL:
                raise
            logger.debug("%s: the filesystem refuses O_DIRECT; using buffered I/O", path)
    return os.open(path, flags, mode), False


def _drop_direct(fd: int) -> None:
    import fcntl

    fcntl.fcntl(fd, fcntl.F_SETFL, fcntl.fcntl(fd, fcntl.F_GETFL) & ~_O_DIRECT)


def _pread_into(fd: int, buffer: mmap.mmap, offset: int) -> int:
    if hasattr(os, "preadv"):
        return os.preadv(fd, [buffer], offset)
    os.lseek(fd, offset, os.SEEK_SET)  # (Windows) the readers here never share an fd between threads
    return os.readv(fd, [buffer]) if hasattr(os, "readv") else _read_into(fd, buffer)


def _read_into(fd: int, buffer: mmap.mmap) -> int:
    data = os.read(fd, len(buffer))
    buffer[: len(data)] = data
    return len(data)


def _write_all(fd: int, view: memoryview) -> None:
    while view:
        view = view[os.write(fd, view) :]


class DirectWriter:
    """Write a new file front to back (truncating one that exists); `close()` makes it durable.

    Bytes are copied into an aligned buffer in pieces of at most 1 MiB and, with `sha256=True`, hashed
    from that buffer right after the copy, while they are still in this core's cache: one pass over
    the source instead of two (`hexdigest()` after `close()`). Each full CHUNK goes to the disk on a
    helper thread while the next one fills a second buffer. `write_from()` receives bytes straight into
    the buffer (a socket's `readinto`), so a received upload is never copied in memory. `close()`
    writes the last, padded block, truncates the file to its real size and fsyncs. After a failed
    write every later call raises that error again. Use as a context manager: leaving the block with
    an exception closes the file without fsync (the caller removes it).
    """

    def __init__(self, path: str | Path, *, fsync: bool = True, sha256: bool = False) -> None:
        self.path = Path(path)
        self.size = 0
        self._fsync = fsync
        self._hasher = hashlib.sha256() if sha256 else None
        self._fd, self._direct = _open(self.path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
        try:
            self._buffer = _POOL.take() if self._direct else None
        except BaseException:
            os.close(self._fd)
            raise
        self._behind: _WriteBehind | None = None  # started at the first full block
        self._inflight: mmap.mmap | None = None  # the full buffer being written by it
        self._pending: Future | None = None  # ... and that write
        self._free: mmap.mmap | None = None  # the second buffer, when not in flight
        self._scratch: bytearray | None = None  # buffered I/O: where write_from() receives
        self._error: BaseException | None = None
        self._fill = 0

    def __enter__(self) -> DirectWriter:
        return self

    def __exit__(self, kind, value, tb) -> None:
        self.close() if kind is None else self.abort()

    def fileno(self) -> int:
        return self._fd

    def hexdigest(self) -> str:
        """The sha256 of everything written (a writer made with sha256=True)."""
        if self._hasher is None:
            raise ValueError("this DirectWriter does not hash (sha256=False)")
        return self._hasher.hexdigest()

    def write(self, data) -> int:
        self._check()
        view = memoryview(data).cast("B")
        if self._buffer is None:  # buffered I/O: straight from the caller's memory
            for pos in range(0, len(view), _PIECE):
                self._filled(view[pos : pos + _PIECE])
            return len(view)
        pos = 0
        while pos < len(view):
            target = self._space(len(view) - pos)
            n = len(target)
            target[:] = view[pos : pos + n]
            self._filled(target)
            pos += n
        return len(view)

    def write_from(self, readinto: Callable[[memoryview], int], nbytes: int) -> int:
        """Append `nbytes` that `readinto(view)` (a socket file's, say) puts straight into the write buffer;
        return how many arrived (fewer only if it returned 0 first). Its exceptions pass through unchanged."""
        self._check()
        done = 0
        while done < nbytes:
            target = self._space(nbytes - done)
            got = readinto(target)
            if not got:
                break
            self._filled(target[:got])
            done += got
        return done

    def _check(self) -> None:
        if self._error is not None:
            raise self._error
        if self._fd < 0:
            raise ValueError("I/O operation on closed file")

    def _space(self, wanted: int) -> memoryview:
        """Where the next (at most 1 MiB) piece goes: the free part of the buffer, or a scratch buffer."""
        n = min(wanted, _PIECE)
        if self._buffer is None:
            if self._scratch is None:
                self._scratch = bytearray(_PIECE)
            return memoryview(self._scratch)[:n]
        n = min(n, CHUNK - self._fill)
        return memoryview(self._buffer)[self._fill : self._fill + n]

    def _filled(self, piece: memoryview) -> None:
        """`piece` (from `_space`, or the caller's memory in buffered I/O) now holds the next bytes of the file."""
        if self._hasher is not None:
            self._hasher.update(piece)  # still in cache: it was written a moment ago
        self.size += len(piece)
        if self._buffer is None:
            _PACER.pace(len(piece))
            self._failing(_write_all, self._fd, piece)
            return
        self._fill += len(piece)
        if self._fill == CHUNK:
            self._flush_behind()

    def _failing(self, action, *args) -> None:
        """Run `action`; an error it raises sticks (see the class docstring)."""
        try:
            action(*args)
        except BaseException as e:
            self._error = e
            raise

    def _flush_behind(self) -> None:
        """Send the full buffer to the disk on the helper thread and go on filling the other one."""
        self._wait()
        following = self._free if self._free is not None else _POOL.take()
        self._free = None
        if self._behind is None:
            self._behind = _WriteBehind(self._write_block)
        self._inflight, self._buffer, self._fill = self._buffer, following, 0
        self._pending = self._behind.submit(self._inflight, CHUNK)

    def _wait(self) -> None:
        """Wait for the block in flight, re-raising its error; its buffer is free again once it is done."""
        pending = self._pending
        if pending is None:
            return
        try:
            pending.result()
        except BaseException as e:
            if pending.done():  # the block's own error (not an interrupted wait): it sticks
                self._error = e
            raise
        finally:
            if pending.done():  # not when the wait itself was interrupted: the helper still writes from it
                self._pending = None
                self._free, self._inflight = self._inflight, None

    def _write_block(self, buffer: mmap.mmap, length: int) -> None:
        """Write the first `length` (aligned) bytes of `buffer` at the end of the file."""
        _PACER.pace(length)
        block, written = memoryview(buffer)[:length], 0
        try:
            while written < length:
                written += os.write(self._fd, block[written:])
        except OSError as e:
            if e.errno != errno.EINVAL:
                raise
            # Refused though aligned (a filesystem with larger blocks, or no O_DIRECT support after all):
            # go on buffered, from where the refused write started.
            logger.debug("%s: O_DIRECT write refused; continuing buffered", self.path)
            _drop_direct(self._fd)
            self._direct = False
            _write_all(self._fd, block[written:])
        finally:
            block.release()

    def close(self) -> None:
        """Write what is buffered, truncate to the real size, fsync (unless fsync=False), close."""
        if self._fd < 0:
            return
        try:
            self._check()
            self._wait()
            if self._buffer is not None and self._fill:
                padded = -(-self._fill // ALIGN) * ALIGN
                self._buffer[self._fill : padded] = bytes(padded - self._fill)
                self._failing(self._write_block, self._buffer, padded)
                os.ftruncate(self._fd, self.size)
            if self._fsync:
                os.fsync(self._fd)
        finally:
            self._release()

    def abort(self) -> None:
        """Close without making anything durable (the caller removes the file)."""
        if self._fd >= 0:
            self._release()

    def _release(self) -> None:
        interrupted: BaseException | None = None
        while self._pending is not None:  # the helper must be done with the fd and the buffer first
            try:
                self._wait()
            except (KeyboardInterrupt, SystemExit) as e:
                interrupted = interrupted or e  # an 8 MiB write finishes in milliseconds: wait it out
            except BaseException:  # noqa: BLE001 - its error already reached the caller or is moot now
                pass
        fd, self._fd = self._fd, -1
        try:
            os.close(fd)
        finally:
            if self._behind is not None:
                self._behind.stop()
            for buffer in (self._buffer, self._free):
                if buffer is not None:
                    _POOL.give(buffer)
            self._buffer = self._free = self._scratch = self._behind = None
        if interrupted is not None:
            raise interrupted


class DirectReader(io.BufferedIOBase):
    """A seekable binary file that reads through one aligned buffer with O_DIRECT (or buffered, as a fallback).

    A `io.BufferedIOBase`, so it can be handed to huggingface_hub's `CommitOperationAdd` as the stream
    to upload; `read(n)` returns at most `n` bytes, `readinto` fills the caller's buffer.
    """

    def __init__(self, path: str | Path) -> None:
        super().__init__()
        self.name = str(path)
        self._fd, self._direct = _open(Path(path), os.O_RDONLY)
        try:
            self._size = os.fstat(self._fd).st_size
        except BaseException:
            os.close(self._fd)
            raise
        self._buffer: mmap.mmap | None = None  # taken from the pool at the first read
        self._start = self._length = 0  # the file span the buffer holds
        self._pos = 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def fileno(self) -> int:
        return self._fd

    def tell(self) -> int:
        self._check_open()
        return self._pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        self._check_open()
        bases = {io.SEEK_SET: 0, io.SEEK_CUR: self._pos, io.SEEK_END: self._size}
        if whence not in bases:
            raise ValueError(f"invalid whence ({whence!r})")
        base = bases[whence]
        if base + offset < 0:
            raise OSError(errno.EINVAL, "negative seek position")
        self._pos = base + offset
        return self._pos

    def _available(self) -> memoryview:
        """The buffered bytes from the current position on (read from the file if needed)."""
        if not self._start <= self._pos < self._start + self._length:
            start = self._pos - self._pos % ALIGN
            if self._buffer is None:
                self._buffer = _POOL.take()
            try:
                n = _pread_into(self._fd, self._buffer, start)
            except OSError as e:
                if not self._direct or e.errno != errno.EINVAL:
                    raise
                _drop_direct(self._fd)
                self._direct = False
                n = _pread_into(self._fd, self._buffer, start)
            self._start, self._length = start, n
            _PACER.pace(n)  # what was read (a short last block costs its own size)
            if self._pos >= start + n:
                return memoryview(b"")
        offset = self._pos - self._start
        return memoryview(self._buffer)[offset : self._length]

    def readview(self, size: int) -> memoryview:
        """Up to `size` bytes from the current position as a view of the internal buffer (no copy); empty at the
        end. The view is valid until the next read or seek."""
        self._check_open()
        span = (
            self._available()[: max(0, min(size, self._size - self._pos))]
            if self._pos < self._size
            else memoryview(b"")
        )
        self._pos += len(span)
        return span

    def readinto(self, b) -> int:
        self._check_open()
        out = memoryview(b).cast("B")
        done = 0
        while done < len(out) and self._pos < self._size:
            span = self._available()
            if not span:
                break
            n = min(len(span), len(out) - done)
            out[done : done + n] = span[:n]
            done += n
            self._pos += n
        return done

    def read(self, size: int | None = -1) -> bytes:
        self._check_open()
        left = max(0, self._size - self._pos)
        size = left if size is None or size < 0 else min(size, left)
        span = self._available()[:size] if size else memoryview(b"")
        if len(span) == size:  # the common case: one copy out of the buffer
            self._pos += size
            return bytes(span)
        out = bytearray(size)
        return bytes(out[: self.readinto(out)])

    read1 = read

    def readinto1(self, b) -> int:
        return self.readinto(b)

    def _check_open(self) -> None:
        if self.closed:
            raise ValueError("I/O operation on closed file")

    def close(self) -> None:
        if not self.closed:
            fd, self._fd = self._fd, -1
            buffer, self._buffer = self._buffer, None
            try:
                os.close(fd)
            finally:
                if buffer is not None:
                    _POOL.give(buffer)
                super().close()


__all__ = ["DirectReader", "DirectWriter", "direct_io_enabled", "limit_rate", "ALIGN", "CHUNK"]
