"""Content-addressed file store of the local hub.

Layout under the data folder::

    objects/
      ab/cd/abcd…(64 hex)    one file per distinct content, named by its sha256
    tmp/
      <uuid>.part            uploads in flight; removed on failure, swept at start-up

A file is written to `tmp/`, fsync'd, renamed into `objects/` and the directory fsync'd, so an
object path either holds the complete, verified content or does not exist. Identical content is
stored once, whatever repo or branch refers to it.
"""

from __future__ import annotations

import errno
import hashlib
import logging
import os
import queue
import threading
import uuid
from pathlib import Path

from ..direct_io import DirectWriter
from ..errors import DiskFullError, ObjectMismatchError, StorageError

logger = logging.getLogger(__name__)

_SHA256_HEX = frozenset("0123456789abcdef")


def is_sha256(value: str) -> bool:
    """True if `value` is a 64-char lowercase hex string."""
    return len(value) == 64 and set(value) <= _SHA256_HEX


def git_blob_sha1(data: bytes) -> str:
    """The git blob id of `data`, as the Hub and huggingface_hub compute it for regular files."""
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def lfs_pointer(sha256: str, size: int) -> bytes:
    """The git-lfs pointer file of an object; its git blob id is the tree `oid` of an LFS file."""
    return f"version https://git-lfs.github.com/spec/v1\noid sha256:{sha256}\nsize {size}\n".encode()


def _os_error(error: OSError, what: str) -> Exception:
    """The domain error for a failed write: disk full (ENOSPC / EDQUOT / EFBIG) or another storage failure."""
    if error.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG):
        return DiskFullError(f"The local hub's disk is full while {what}; nothing was stored. Free space and retry.")
    return StorageError(f"Writing to the local hub's data folder failed while {what}: {error}")


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class BlobStore:
    """Content-addressed, fsync'd object files under `root`."""

    def __init__(self, root: Path) -> None:
        self.objects = root / "objects"
        self.tmp = root / "tmp"
        self.objects.mkdir(parents=True, exist_ok=True)
        self.tmp.mkdir(parents=True, exist_ok=True)
        # Anything left in tmp/ is an upload that a killed server never finished.
        for stale in self.tmp.glob("*.part"):
            stale.unlink(missing_ok=True)

    def path(self, sha256: str) -> Path:
        """Where the object `sha256` lives (whether or not it exists)."""
        return self.objects / sha256[:2] / sha256[2:4] / sha256

    def has(self, sha256: str, size: int | None = None) -> bool:
        """True if the object is stored (and has `size` bytes, when given)."""
        if not is_sha256(sha256):
            return False
        try:
            stat = self.path(sha256).stat()
        except FileNotFoundError:
            return False
        return size is None or stat.st_size == size

    def new_writer(self, expected_sha256: str | None = None, expected_size: int | None = None) -> BlobWriter:
        """Start writing an object; call `write()` with chunks and `finish()` at the end."""
        return BlobWriter(self, expected_sha256, expected_size)

    def put_bytes(self, data: bytes) -> str:
        """Store `data` and return its sha256."""
        writer = self.new_writer()
        try:
            writer.write(data)
            return writer.finish()
        except BaseException:
            writer.abort()
            raise


class BlobWriter:
    """Streams one object to a temp file while hashing it; verified and renamed on `finish()`."""

    def __init__(self, store: BlobStore, expected_sha256: str | None, expected_size: int | None) -> None:
        self.store = store
        self.expected_sha256 = expected_sha256
        self.expected_size = expected_size
        self.size = 0
        self.tmp_path = store.tmp / f"{uuid.uuid4().hex}.part"
        # Past the page cache (direct_io.py): an upload is written once here and read rarely, and a
        # cached copy would only cost the fresh pages and evict the training job's. The writer hashes
        # each piece from its own buffer right after it lands there. Closed in finish()/abort().
        self.file = DirectWriter(self.tmp_path, sha256=True)

    def write(self, chunk) -> None:
        """Append bytes held in memory."""
        self._check_room(len(chunk))
        try:
            self.file.write(chunk)
        except OSError as e:
            raise _os_error(e, "receiving an upload") from e
        self.size += len(chunk)

    def receive(self, stream, nbytes: int) -> int:
        """Append `nbytes` read from `stream` (a socket file) straight into the write buffer, with no copy in
        memory; return how many arrived (fewer only if the stream ended early). The stream's own errors (a
        client that went away or stalled) pass through unchanged; the disk's become storage errors."""
        self._check_room(nbytes)
        failed = []

        def readinto(view: memoryview) -> int:
            try:
                return stream.readinto(view)
            except BaseException as e:
                failed.append(e)
                raise

        try:
            n = self.file.write_from(readinto, nbytes)
        except OSError as e:
            if failed and e is failed[0]:
                raise
            raise _os_error(e, "receiving an upload") from e
        self.size += n
        return n

    def _check_room(self, nbytes: int) -> None:
        if self.expected_size is not None and self.size + nbytes > self.expected_size:
            raise ObjectMismatchError(f"Upload is larger than the announced size {self.expected_size}")

    def finish(self) -> str:
        """Verify, fsync and move into place; return the sha256.

        Raises ObjectMismatchError (wrong size or sha256), DiskFullError or StorageError; in every
        failure the temp file is closed and removed.
        """
        try:
            return self._finish()
        except BaseException:
            self.abort()
            raise

    def _finish(self) -> str:
        try:
            self.file.close()  # writes the last block and fsyncs
        except OSError as e:
            raise _os_error(e, "saving an upload") from e
        sha256 = self.file.hexdigest()
        if self.expected_size is not None and self.size != self.expected_size:
            raise ObjectMismatchError(f"Size mismatch: expected {self.expected_size} bytes, received {self.size}")
        if self.expected_sha256 is not None and sha256 != self.expected_sha256:
            raise ObjectMismatchError(
                f"sha256 mismatch: expected {self.expected_sha256}, received content hashes to {sha256}"
            )
        final = self.store.path(sha256)
        if final.exists():
            self.tmp_path.unlink(missing_ok=True)  # already stored: identical content kept once
            return sha256
        try:
            final.parent.mkdir(parents=True, exist_ok=True)
            os.replace(self.tmp_path, final)
            _fsync_dir(final.parent)
        except OSError as e:
            raise _os_error(e, "storing an upload") from e
        return sha256

    def abort(self) -> None:
        """Drop the partial upload: close the temp file (even if closing fails) and remove it."""
        try:
            self.file.abort()
        except OSError:
            pass  # the data is dropped anyway; the descriptor is released even when closing raises
        finally:
            self.tmp_path.unlink(missing_ok=True)


class PipelinedWriter:
    """Feeds a `BlobWriter` from another thread, so that receiving overlaps hashing and writing.

    For the API server's (asyncio) upload route, whose body arrives as chunks on the event loop. A
    bounded queue keeps memory flat (at most `depth` chunks in flight).
    """

    def __init__(self, writer: BlobWriter, depth: int = 4) -> None:
        self.writer = writer
        self.error: BaseException | None = None
        self._queue: queue.Queue = queue.Queue(maxsize=depth)
        self._thread = threading.Thread(target=self._run, name="hubckpt-blob-write", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while (chunk := self._queue.get()) is not None:
            if self.error is None:
                try:
                    self.writer.write(chunk)
                except BaseException as e:  # re-raised by finish()
                    self.error = e

    def put(self, chunk: bytes, block: bool = True) -> bool:
        """Queue a chunk; with block=False, return False instead of waiting when the queue is full."""
        if not block and self._queue.full():
            return False
        self._queue.put(chunk)
        return True

    def _drain(self) -> None:
        self._queue.put(None)
        self._thread.join()

    def finish(self) -> str:
        """Wait for the queued chunks, then verify and store the object (see `BlobWriter.finish`)."""
        self._drain()
        if self.error is not None:
            self.writer.abort()
            raise self.error
        return self.writer.finish()

    def abort(self) -> None:
        self._drain()
        self.writer.abort()
