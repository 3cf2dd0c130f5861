"""Cold loads at the speed of the wire: parallel verified Range streams straight into the tensors' memory.

A weight file that is not cached is read with `HUBCKPT_READ_STREAMS` (default 8) concurrent HTTP Range
GETs into one uint8 arena the tensors are views of: the header first (one 16 KiB read, parsed by the one
strict parser), then the data area in chunks, each received with `readinto` straight into its span
(whose pages the stream faults in first with one `madvise`, cheaper than a fault per page mid-read).
The calling thread feeds the chunks to one sha256 in file order as they complete (the streams fill
later chunks meanwhile) and writes them to the huggingface_hub cache in the same pass. A file whose
sha256 differs from `checkpoint.json`'s (without one: from the hub's LFS ETag) raises `IntegrityError`
and leaves nothing in the cache. A verified file becomes `blobs/<sha256>` plus the symlink
`snapshots/<commit>/<path>`, as `hf_hub_download` lays them out (the revision asked for is the commit, so
there is no `refs/` entry to write), so a later `hf_hub_download` or `from_pretrained` finds it, offline
too; it is marked verified, so warm loads do not hash it again.

Safety as everywhere else: the commit is 40-hex and the path a repo path before either reaches the
cache; the blob is named by the verified digest (derived, never taken from the hub); credentials go only
to the hub's exact origin (`origin.headers_for`, on every hop and on the remembered data URL); every
answer must be a 206 of exactly the asked range; a read that makes no progress fails within the bound
of every other read (`ReadBudget`). A file goes the stock way (`hf_hub_download`) where the hub answers
the header's Range read with anything but a 206 (a hub that ignores Range, an error the client reports
in its own words), where no sha256 is known, behind a proxy, offline, or with `HUBCKPT_READ_STREAMS=0`.
"""

from __future__ import annotations

import ctypes
import errno
import hashlib
import http.client
import logging
import os
import re
import sys
import threading
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urljoin, urlsplit

from .. import environment
from ..errors import HubUnavailableError, IntegrityError
from ..formats.safetensors_header import header_length, invalid, parse_header
from ..formats.untrusted import Source, check_repo_path, check_sha256, is_sha256, printable
from ..hub.origin import headers_for
from ..hub.reader import HEADER_PROBE_BYTES, MAX_REDIRECTS, ReadBudget
from ..hub.retries import TRANSIENT_STATUS
from .download import mark_verified, pinned_commit
from .lazy import ResolvedRevision, torch_dtype

if TYPE_CHECKING:
    import torch


logger = logging.getLogger(__name__)

CHUNK_BYTES = 16 << 20  # one ranged GET at most; smaller files are cut in one chunk per stream
MIN_CHUNK_BYTES = 1 << 20
ALIGN = 4096  # O_DIRECT: file offsets, lengths and memory addresses in whole blocks
PIECE_BYTES = 1 << 20  # one readinto: progress is counted (and a stop noticed) per piece
ATTEMPTS = 5  # tries per chunk, as `retries.with_retries`
_REDIRECTS = {301, 302, 303, 307, 308}
_CONTENT_RANGE = re.compile(r"^bytes (\d+)-(\d+)/(\d+)$")


class NoFastPath(Exception):
    """This file goes the stock way; the message says why (logged)."""


class _Transient(Exception):
    """A chunk read worth trying again (dropped connection, timeout, 5xx, 429)."""


class _Stopped(Exception):
    """Another stream failed: this one gives up."""


class _Status(Exception):
    def __init__(self, status: int) -> None:
        super().__init__(f"HTTP {status}")
        self.status = status


def available(streams: int) -> str | None:
    """Why the fast path cannot run in this process at all (None: it can)."""
    from huggingface_hub import constants

    if streams <= 0:
        return "HUBCKPT_READ_STREAMS=0"
    if constants.HF_HUB_OFFLINE:
        return "offline mode"
    if os.name == "nt" or sys.byteorder != "little":
        return "this platform (cache symlinks, byte order)"
    return None


def read_weight_files(rev: ResolvedRevision, paths: list[str]) -> dict[str, dict[str, torch.Tensor]]:
    """path → all its tensors, for each of `paths` not cached yet that the fast path could read.

    Files left out (cached already, or NoFastPath) are for the caller to load the stock way.
    """
    streams = environment.read_streams()
    why = available(streams)
    if why is not None:
        logger.debug("parallel Range reads off: %s", why)
        return {}
    out = {}
    for path in paths:
        if rev.downloader.cached(rev.info, path) is not None:
            continue
        try:
            out[path] = FileRead(rev, path, streams).read()
        except NoFastPath as e:
            logger.info("%s@%s/%s: %s; downloading it with hf_hub_download", rev.repo_id, rev.info.name, path, e)
    return out


def take(tensors: dict[str, torch.Tensor], names: list[str] | None, where: str) -> dict[str, torch.Tensor]:
    """All of a file's tensors, or `names` of them (copied, so the rest of the file's memory is freed)."""
    if names is None:
        return tensors
    absent = sorted(set(names) - set(tensors))
    if absent:  # the sharded index names tensors its shard lacks (huggingface_hub#4725)
        raise IntegrityError(f"{where} lacks {', '.join(absent[:5])}, which the sharded index puts there", path=where)
    if set(names) == set(tensors):
        return {k: tensors[k] for k in names}
    return {k: tensors[k].clone() for k in names}


class FileRead:
    """One weight file of one revision: read by parallel Range streams, verified, cached, as tensors."""

    def __init__(self, rev: ResolvedRevision, path: str, streams: int) -> None:
        self.rev = rev
        self.reader = rev.reader
        self.path = path
        self.streams = streams
        self.source = Source(rev.repo_id, rev.info.name, path)
        self.where = f"{rev.repo_id}@{rev.info.name}/{path}"
        self.commit = pinned_commit(rev.info)
        check_repo_path(path, self.source)
        self.expected = check_sha256(rev.files.sha256(path), self.source)
        self.url = self.reader.file_url(path, self.commit)
        self.target: str | None = None  # the data URL the hub redirected to, once known
        self.etag: str | None = None  # the hub's ETag, if it is a sha256 (an LFS file)
        self.total = 0
        self.auth = self.reader.auth_headers()
        self.stop = threading.Event()
        self._local = threading.local()
        self._lock = threading.Lock()
        self._connections: list[http.client.HTTPConnection] = []

    # -- the whole file ----------------------------------------------------------------------------------

    def read(self) -> dict[str, torch.Tensor]:
        from huggingface_hub.utils import WeakFileLock

        try:
            head = self._head()
            data_start = 8 + header_length(bytes(head[:8]), self.where)
            if data_start > self.total:
                raise invalid(self.where, f"its header says {data_start - 8} bytes but the file has {self.total}")
            if len(head) < data_start:  # a long header: the rest of it, up to a block boundary
                rest = bytearray(min(self.total, -(-data_start // ALIGN) * ALIGN) - len(head))
                self._read(len(head), len(head) + len(rest), memoryview(rest))
                head += rest
            header = parse_header(bytes(head[8:data_start]), self.where, data_size=self.total - data_start)
            recorded = (self.rev.files.files.get(self.path) or {}).get("size")
            if recorded is not None and int(recorded) != self.total:
                raise IntegrityError(
                    f"{self.where} is {self.total} bytes on the hub, {recorded} in checkpoint.json", path=self.where
                )
            expected = self.expected or self.etag
            if expected is None:
                raise NoFastPath("no sha256 to verify it against (no checkpoint.json entry, no LFS ETag)")
            blob, pointer, lock = self._cache_paths(expected)
            if blob.exists():
                raise NoFastPath("its blob is cached already")
            image = _file_image(self.total)
            view = image.numpy().data.cast("B")
            view[: len(head)] = head
            lock.parent.mkdir(parents=True, exist_ok=True)
            blob.parent.mkdir(parents=True, exist_ok=True)
            with WeakFileLock(str(lock)):
                self._fill(len(head), view, blob, pointer, expected)
            return _tensors(header, image, data_start)
        finally:
            for conn in self._connections:
                conn.close()

    def _fill(self, start: int, view: memoryview, blob: Path, pointer: Path, expected: str) -> None:
        """Receive bytes [start, total) by parallel streams into the file image `view` (which holds [0, start)
        already); each stream writes its chunk to the cache file (past the page cache where the filesystem
        allows); the chunks go to one sha256 in file order as they complete; the blob is published once the
        digest matches."""
        from ..direct_io import _open

        size = max(MIN_CHUNK_BYTES, min(CHUNK_BYTES, -(-(self.total - start) // self.streams)))
        size = -(-size // ALIGN) * ALIGN  # every chunk starts on a block boundary, as the header read ends
        chunks = [(s, min(s + size, self.total)) for s in range(start, self.total, size)]
        digest = hashlib.sha256(view[:start])
        tmp = blob.with_name(f"{blob.name}.{uuid.uuid4().hex[:8]}.incomplete")
        fd, direct = _open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL)
        try:
            try:
                self._write(fd, view, 0, start, direct)
                if chunks:
                    self._streams(fd, chunks, view, digest, direct)
                os.ftruncate(fd, self.total)  # the last block went out padded
            finally:
                os.close(fd)
            actual = digest.hexdigest()
            if actual != expected:
                recorded = "recorded in checkpoint.json" if self.expected else "the hub gave as its ETag (LFS sha256)"
                raise IntegrityError(
                    f"{self.where} is corrupt: sha256 {actual[:16]}… instead of {expected[:16]}… {recorded}; "
                    "nothing was loaded or cached (retry to read it again; if it fails again the hub holds a "
                    "bad copy)",
                    path=self.where,
                )
            os.replace(tmp, blob)
        finally:
            tmp.unlink(missing_ok=True)
        pointer.parent.mkdir(parents=True, exist_ok=True)
        link = pointer.with_name(f".{pointer.name}.{uuid.uuid4().hex[:8]}.tmp")
        os.symlink(os.path.relpath(blob, pointer.parent), link)
        os.replace(link, pointer)
        mark_verified(blob, expected)

    def _streams(self, fd: int, chunks: list[tuple[int, int]], view: memoryview, digest, direct: bool) -> None:
        """The chunks by parallel streams, each received straight into its span of the image and written
        from there; `digest` fed in file order as they complete."""

        base = ctypes.addressof(ctypes.c_char.from_buffer(view))

        def chunk(start: int, end: int) -> None:
            _populate(base + start, end - start)
            self._read(start, end, view[start:end])
            self._write(fd, view, start, end, direct)

        with ThreadPoolExecutor(min(self.streams, len(chunks)), thread_name_prefix="hubckpt-range") as pool:
            futures = [pool.submit(chunk, s, e) for s, e in chunks]
            try:
                for (s, e), future in zip(chunks, futures):
                    future.result()
                    digest.update(view[s:e])
            except BaseException:
                self.stop.set()
                for future in futures:
                    future.cancel()
                raise

    def _write(self, fd: int, view: memoryview, start: int, end: int, direct: bool) -> None:
        """File bytes [start, end) to the cache file from the image (`start` block-aligned); the file's last
        block is written padded with zeros (O_DIRECT writes whole blocks), `_fill` truncates it after."""
        from ..direct_io import _drop_direct

        if end == self.total:
            padded = -(-end // ALIGN) * ALIGN
            view[end:padded] = bytes(padded - end)
            end = padded
        data, offset = view[start:end], start
        while data:
            try:
                n = os.pwrite(fd, data, offset)
            except OSError as e:
                if not direct or e.errno != errno.EINVAL:
                    raise
                _drop_direct(fd)  # refused though aligned (larger blocks, no O_DIRECT after all): go on buffered
                direct = False
                continue
            data, offset = data[n:], offset + n

    def _cache_paths(self, sha256: str) -> tuple[Path, Path, Path]:
        """(blob, snapshot pointer, lock) where `hf_hub_download` puts this file; every part derived or checked."""
        from huggingface_hub import constants
        from huggingface_hub.file_download import repo_folder_name

        assert is_sha256(sha256)
        cache = Path(self.rev.downloader.cache_dir or constants.HF_HUB_CACHE)
        folder = repo_folder_name(repo_id=self.rev.repo_id, repo_type="model")
        storage = cache / folder
        pointer = storage / "snapshots" / self.commit / Path(*self.path.split("/"))
        return storage / "blobs" / sha256, pointer, cache / ".locks" / folder / f"{sha256}.lock"

    # -- one range -----------------------------------------------------------------------------------------

    def _head(self) -> bytearray:
        """The first HEADER_PROBE_BYTES (or the whole file if smaller); sets `total`, `target` and `etag`.

        Anything but a 206 here (a 200 from a hub that ignores Range, a 404...) sends the file the stock way.
        """
        probe = bytearray(HEADER_PROBE_BYTES)
        try:
            got = self._read(0, HEADER_PROBE_BYTES, memoryview(probe), first=True)
        except _Status as e:
            raise NoFastPath(f"the hub answered its first Range read with {e}") from None
        return probe[:got]

    def _read(self, start: int, end: int, into: memoryview, *, first: bool = False) -> int:
        """Bytes [start, end) into `into`, retried on transient failures within one ReadBudget; bytes received."""
        what = f"reading bytes {start}-{end - 1} of {self.where}"
        budget = ReadBudget()
        for attempt in range(1, ATTEMPTS + 1):
            budget.check(what)
            try:
                return self._get(start, end, into, budget, what, first=first)
            except _Transient as e:
                if attempt == ATTEMPTS:
                    raise HubUnavailableError(f"{what} failed {ATTEMPTS} times; last error: {e}") from None
                delay = min(0.5 * 2 ** (attempt - 1), max(budget.remaining(), 0))
                logger.warning("%s failed (%s); retrying in %.1fs", what, e, delay)
                if self.stop.wait(delay):
                    raise _Stopped() from None
            except _Status as e:
                if first:
                    raise
                raise HubUnavailableError(f"{what}: the hub answered {e} after it had answered the header") from None
        raise AssertionError("unreachable")

    def _get(self, start: int, end: int, into: memoryview, budget: ReadBudget, what: str, *, first: bool) -> int:
        url = self.target or self.url
        rng = {"Range": f"bytes={start}-{end - 1}", "Accept-Encoding": "identity"}
        hops = 0
        while True:
            conn, response = self._send(url, rng, budget)
            status = response.status
            if first and self.etag is None:
                self._note_etag(response)
            if status in _REDIRECTS and response.getheader("location"):
                _drain(conn, response)
                hops += 1
                if hops > MAX_REDIRECTS:
                    raise self.source.error(f"the hub answered with more than {MAX_REDIRECTS} redirects")
                url = urljoin(url, response.getheader("location", ""))
                continue
            if status in (401, 403, 410) and url != self.url:  # the signed data URL expired: ask the hub again
                _drain(conn, response)
                self.target, url, hops = None, self.url, 0
                continue
            if status != 206:
                if status == 200:  # a hub that ignores Range: never read that body
                    conn.close()
                else:
                    _drain(conn, response)
                if status in TRANSIENT_STATUS:
                    raise _Transient(f"HTTP {status}")
                raise _Status(status)
            if hops:
                self.target = url
            return self._body(conn, response, start, end, into, budget, what, first=first)

    def _body(self, conn, response, start: int, end: int, into: memoryview, budget, what: str, *, first: bool) -> int:
        """A 206's body into `into`, after checking it is exactly [start, end) (cut only at the file's end)."""
        match = _CONTENT_RANGE.match((response.getheader("content-range") or "").strip())
        length = response.getheader("content-length")
        encoding = (response.getheader("content-encoding") or "identity").strip().lower()
        ok = match is not None and encoding == "identity"
        if match is not None:
            first_byte, last, total = int(match[1]), int(match[2]), int(match[3])
            if first:
                self.total = total
            expected_last = min(end, total) - 1
            ok = ok and first_byte == start and last == expected_last and total == self.total
            ok = ok and (length is None or (length.isdigit() and int(length) == last - first_byte + 1))
        if not ok:
            conn.close()
            raise IntegrityError(
                f"{self.where}: asked for bytes {start}-{end - 1}, the hub answered 206 "
                f"{printable(response.getheader('content-range') or 'without Content-Range', 80)}"
                f"{'' if encoding == 'identity' else ' ' + printable(encoding, 20)}; nothing was used "
                "(a hub must answer a Range request with exactly that range)",
                path=self.where,
            )
        want = last - first_byte + 1
        got = 0
        try:
            while got < want:
                if self.stop.is_set():
                    conn.close()
                    raise _Stopped()
                n = response.readinto(into[got : min(want, got + PIECE_BYTES)])
                if not n:
                    raise _Transient(f"the body ended after {got} of {want} bytes")
                got += n
                budget.progress(n, what)
            if length is None and response.read(1):  # chunked: nothing may follow the range
                raise IntegrityError(f"{self.where}: the hub sent more than bytes {start}-{end - 1}", path=self.where)
        except (OSError, http.client.HTTPException) as e:
            conn.close()
            raise _Transient(f"{type(e).__name__}: {printable(str(e), 200)}") from None
        except BaseException:
            conn.close()
            raise
        self.reader.counter.add(got)  # counted with the reader's other reads (requests, bytes received)
        return got

    def _note_etag(self, response) -> None:
        """The hub's ETag (X-Linked-Etag on a redirect), kept only if it is a sha256: an LFS file's oid."""
        for name in ("x-linked-etag", "etag"):
            value = (response.getheader(name) or "").strip().removeprefix("W/").strip('"').lower()
            if is_sha256(value):
                self.etag = value
                return

    def _send(self, url: str, extra: dict[str, str], budget: ReadBudget):
        """(connection, response) of one GET on this thread's connection to `url`'s origin (reused)."""
        import urllib.request

        parts = urlsplit(url)
        scheme, host = parts.scheme.lower(), parts.hostname or ""
        if scheme not in ("http", "https"):
            raise self.source.error(f"the hub redirected to a {printable(scheme, 20)!r} URL")
        proxies = urllib.request.getproxies()
        if proxies.get(scheme) and not urllib.request.proxy_bypass(host):
            raise NoFastPath(f"a proxy is set for {scheme}")
        port = parts.port or (443 if scheme == "https" else 80)
        pool: dict[tuple[str, str, int], http.client.HTTPConnection] = self._local.__dict__.setdefault("pool", {})
        key = (scheme, host, port)
        headers = {**headers_for(url, self.reader.endpoint, self.auth), **extra}
        target = parts.path or "/"
        if parts.query:
            target += "?" + parts.query
        for retry_stale in (True, False):
            conn = pool.get(key)
            fresh = conn is None
            if conn is None:
                conn = self._connect(scheme, host, port)
                pool[key] = conn
            try:
                if conn.sock is None:
                    conn.connect()
                assert conn.sock is not None
                conn.sock.settimeout(min(environment.http_timeout(), max(budget.remaining(), 0.001)))
                conn.request("GET", target, headers=headers)
                return conn, conn.getresponse()
            except (OSError, http.client.HTTPException) as e:
                conn.close()
                pool.pop(key, None)
                if fresh or not retry_stale:  # a kept-alive connection the server closed: one more try
                    raise _Transient(f"{type(e).__name__}: {printable(str(e), 200)}") from None
        raise AssertionError("unreachable")

    def _connect(self, scheme: str, host: str, port: int) -> http.client.HTTPConnection:
        timeout = environment.connect_timeout()
        conn: http.client.HTTPConnection
        if scheme == "https":
            import ssl

            conn = http.client.HTTPSConnection(host, port, timeout=timeout, context=ssl.create_default_context())
        else:
            conn = http.client.HTTPConnection(host, port, timeout=timeout)
        with self._lock:
            self._connections.append(conn)
        return conn


_MADV_POPULATE_WRITE = 23  # Linux 5.14+


def _populate(address: int, length: int) -> None:
    """Fault in the pages of [address, address + length) at once (`MADV_POPULATE_WRITE`), before the
    socket reads write them: the same zeroed pages, in one call instead of one fault each. Ignored where
    the kernel does not know the advice."""
    global _madvise
    if _madvise is None:
        try:
            _madvise = ctypes.CDLL(None, use_errno=True).madvise
            _madvise.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
        except (OSError, AttributeError):
            _madvise = False
    if _madvise:
        start = address - address % ALIGN
        _madvise(start, length + address - start, _MADV_POPULATE_WRITE)


_madvise: Any = None


def _drain(conn, response, limit: int = 64 * 1024) -> None:
    """Read a short body (redirect, error) so the connection can be reused; a longer one closes it."""
    try:
        length = response.getheader("content-length")
        if length is not None and length.isdigit() and int(length) <= limit:
            response.read()
            return
    except (OSError, http.client.HTTPException):
        pass
    conn.close()


def _file_image(total: int) -> torch.Tensor:
    """Memory for a whole file (header included), block-aligned and padded to whole blocks: the tensors are
    views of it, and O_DIRECT writes go straight from it."""
    import torch

    padded = -(-total // ALIGN) * ALIGN
    raw = torch.empty(padded + ALIGN, dtype=torch.uint8)
    skip = -raw.data_ptr() % ALIGN
    return raw[skip : skip + padded]


def _tensors(header: dict[str, Any], image: torch.Tensor, data_start: int) -> dict[str, torch.Tensor]:
    """The header's tensors as views of the file image (a misaligned one is copied out: rare, never in
    hubckpt's files)."""
    import torch

    out = {}
    for name, entry in header.items():
        if name == "__metadata__":
            continue
        start, end = entry["data_offsets"]
        dtype = torch_dtype(entry["dtype"])
        shape = tuple(entry["shape"])
        if end == start:
            out[name] = torch.empty(shape, dtype=dtype)
            continue
        raw = image[data_start + start : data_start + end]
        if raw.data_ptr() % dtype.itemsize:
            raw = raw.clone()
        out[name] = raw.view(dtype).reshape(shape)
    return out
