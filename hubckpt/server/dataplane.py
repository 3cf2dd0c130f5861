"""The local hub's data plane: object bytes served and received on a second port.

Why: an ASGI server moves large bodies at ~0.5 GB/s on these machines, while `sendfile` and a
plain threaded socket loop get near the loopback floor. huggingface.co does the same split — the
API answers `/resolve/` for LFS files with a 302 to its CDN, carrying the file's metadata
headers on the redirect, and LFS uploads go to pre-signed URLs — and the stock client supports
both (Hub API reference §1.4 and §8.3). Every URL here is signed by the hub (HMAC, expiring), so
the data plane needs no credentials and sees no repo names.

    GET|HEAD /blob/<sha256>?expires=T&sig=S                       object bytes, Range → 206 / 416
    PUT      /lfs/<repo db id>/<sha256>/<size>?expires=T&sig=S    upload, re-hashed, stored if it matches

`hubckpt serve` (what `hub="local"` starts) receives uploads at the idle CPU priority
(`DataPlane(upload_priority="idle")`, `hubckpt/priority.py`): the local hub usually shares the machine
with the training job whose checkpoints it receives, and hashing and writing them must not delay that
job's threads. The default is the caller's priority: a server inside another process (`LocalHubServer`)
shares that process's GIL, and an idle-class thread holding it would stall the others.

Bounded: each connection holds one thread, so the number of connections is capped (`max_connections`;
one more is answered 503 + Retry-After at once and closed) and every socket read or write times
out (`timeout_s`), so idle keep-alive or stalled clients give their thread back.
"""

from __future__ import annotations

import json
import logging
import re
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Literal
from urllib.parse import parse_qs, urlsplit

from ..errors import HubHTTPError
from ..priority import lower_priority
from .blobs import is_sha256
from .http_errors import internal_error, to_http

logger = logging.getLogger(__name__)

DOWNLOAD_URL_TTL_S = 6 * 3600
DEFAULT_MAX_CONNECTIONS = 64
DEFAULT_TIMEOUT_S = 60.0
_BLOB = re.compile(r"^/blob/([0-9a-f]{64})$")
_LFS = re.compile(r"^/lfs/(\d+)/([0-9a-f]{64})/(\d+)$")
_RANGE = re.compile(r"^bytes=(\d*)-(\d*)$")


def parse_range(header: str, size: int) -> tuple[int, int] | None | Literal["full"]:
    """(start, end exclusive) of a single `bytes=` range; None if unsatisfiable; "full" if not a single range."""
    m = _RANGE.match(header.strip())
    if m is None:
        return "full"  # multi-range or other units: answer the whole file with 200, as RFC 9110 allows
    first, last = m.groups()
    if first == "" and last == "":
        return "full"
    if first == "":
        n = int(last)
        return (max(0, size - n), size) if n > 0 and size > 0 else None
    start = int(first)
    end = min(size, int(last) + 1) if last else size
    if start >= size or end <= start:
        return None
    return (start, end)


class _Handler(BaseHTTPRequestHandler):
    server: _DataPlaneHTTPServer
    protocol_version = "HTTP/1.1"
    # TCP_NODELAY: headers and body go out in separate writes, and on a kept-alive connection Nagle held the
    # body back until the client's delayed ACK (~40 ms a request: a restore's Range reads, one per tensor).
    disable_nagle_algorithm = True

    def log_message(self, format: str, *args) -> None:  # noqa: A002 - stdlib signature
        logger.debug("data plane: " + format, *args)

    def _params(self) -> tuple[str, dict[str, str]]:
        parts = urlsplit(self.path)
        return parts.path, {k: v[0] for k, v in parse_qs(parts.query).items()}

    def _error(self, error: HubHTTPError) -> None:
        body = json.dumps({"error": error.message}).encode()
        self.send_response(error.status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.send_header("X-Error-Message", error.message.encode("ascii", "replace").decode())
        for key, value in error.headers.items():
            self.send_header(key, value)
        if self.close_connection:
            self.send_header("Connection", "close")  # so a keep-alive client does not reuse this socket
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _serve_blob(self, head: bool) -> None:
        ctx = self.server.ctx
        path, params = self._params()
        m = _BLOB.match(path)
        if m is None:
            raise HubHTTPError(404, "Not found")
        sha256 = m.group(1)
        ctx.check_signature(params.get("sig", ""), _expires(params), "blob", sha256)
        blob = ctx.blobs.path(sha256)
        try:
            f = open(blob, "rb")  # noqa: SIM115 - closed below
        except FileNotFoundError as e:
            raise HubHTTPError(404, "Object not found") from e
        with f:
            size = f.seek(0, 2)
            status, start, end = 200, 0, size
            range_header = self.headers.get("Range")
            span = parse_range(range_header, size) if range_header else "full"
            if span is None:
                raise HubHTTPError(416, "Range not satisfiable", headers={"Content-Range": f"bytes */{size}"})
            if isinstance(span, tuple):  # not "full"
                status, (start, end) = 206, span
            self.send_response(status)
            self.send_header("Content-Type", "application/octet-stream")
            self.send_header("Content-Length", str(end - start))
            self.send_header("Accept-Ranges", "bytes")
            self.send_header("ETag", f'"{sha256}"')
            if status == 206:
                self.send_header("Content-Range", f"bytes {start}-{end - 1}/{size}")
            self.end_headers()
            if not head and end > start:
                self.wfile.flush()
                self.connection.sendfile(f, offset=start, count=end - start)

    def do_GET(self) -> None:  # noqa: N802 - stdlib naming
        self._guard(lambda: self._serve_blob(head=False))

    def do_HEAD(self) -> None:  # noqa: N802
        self._guard(lambda: self._serve_blob(head=True))

    def do_PUT(self) -> None:  # noqa: N802
        self._guard(self._receive_lfs)

    def _receive_lfs(self) -> None:
        ctx = self.server.ctx
        path, params = self._params()
        m = _LFS.match(path)
        if m is None:
            raise HubHTTPError(404, "Not found")
        repo_db_id, oid, size = int(m.group(1)), m.group(2), int(m.group(3))
        ctx.check_signature(params.get("sig", ""), _expires(params), repo_db_id, oid, size)
        length = self.headers.get("Content-Length")
        if length is None or not length.isdigit():
            raise HubHTTPError(411, "Content-Length is required")
        remaining = int(length)
        if self.server.upload_priority is not None and not getattr(self, "_lowered", False):
            lower_priority(self.server.upload_priority)  # this connection's thread, from now on
            self._lowered = True
        # Received straight into the blob writer's aligned buffer and hashed there while in cache (blobs.py,
        # direct_io.py): the body is never copied in memory. This thread receives and hashes; the writer's
        # helper thread, started from it (so in the same priority class), sends full blocks to the disk.
        writer = ctx.blobs.new_writer(expected_sha256=oid, expected_size=size)
        try:
            received = writer.receive(self.rfile, remaining)
            if received < remaining:
                raise HubHTTPError(400, f"Upload ended {remaining - received} bytes early")
        except BaseException:
            writer.abort()
            self.close_connection = True
            raise
        writer.finish()
        ctx.stats["lfs_bytes_received"] += size
        ctx.store.add_repo_object_by_id(repo_db_id, oid)
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def _guard(self, action) -> None:
        try:
            action()
        except (TimeoutError, BrokenPipeError, ConnectionResetError):
            self.close_connection = True  # the client went away or stalled past the timeout
        except Exception as e:  # answer, never hang the client
            error = to_http(e)
            if error is None or (error.status == 500 and not isinstance(e, HubHTTPError)):
                request_id = uuid.uuid4().hex
                logger.error(
                    "data plane: %s %s failed (request %s)",
                    self.command,
                    urlsplit(self.path).path,
                    request_id,
                    exc_info=e,
                )
                error = internal_error(request_id)
            if error.status >= 400 and self.command == "PUT" or error.status >= 500:
                self.close_connection = True  # the unread body must not be parsed as a next request
            try:
                self._error(error)
            except OSError:
                self.close_connection = True


def _expires(params: dict[str, str]) -> int:
    try:
        return int(params.get("expires", "0") or 0)
    except ValueError:
        return 0  # refused as expired by check_signature


_BUSY_BODY = json.dumps({"error": "The hubckpt data plane is at its connection limit; retry shortly."}).encode()
_BUSY_RESPONSE = (
    b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\nRetry-After: 1\r\n"
    b"X-Error-Message: The hubckpt data plane is at its connection limit; retry shortly.\r\n"
    b"Connection: close\r\nContent-Length: " + str(len(_BUSY_BODY)).encode() + b"\r\n\r\n" + _BUSY_BODY
)


class _DataPlaneHTTPServer(ThreadingHTTPServer):
    """One thread per connection, at most `max_connections` of them; sockets time out after `timeout_s`."""

    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 256
    block_on_close = False

    def __init__(
        self, address, ctx, max_connections: int, timeout_s: float, upload_priority: int | str | None = None
    ) -> None:
        self.ctx = ctx
        self.upload_priority = upload_priority
        self.timeout_s = timeout_s
        self._slots = threading.BoundedSemaphore(max_connections)
        self.refused = 0  # connections answered 503 because every slot was taken
        super().__init__(address, _Handler)

    def process_request(self, request, client_address) -> None:
        if not self._slots.acquire(blocking=False):
            self.refused += 1
            try:
                request.settimeout(1.0)
                request.sendall(_BUSY_RESPONSE)
            except OSError:
                pass
            self.shutdown_request(request)
            return
        request.settimeout(self.timeout_s)
        try:
            super().process_request(request, client_address)
        except BaseException:
            self._slots.release()
            raise

    def process_request_thread(self, request, client_address) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self._slots.release()


class DataPlane:
    """The data-plane server of one hub, on its own port, in a background thread."""

    def __init__(
        self,
        ctx,
        host: str,
        *,
        max_connections: int = DEFAULT_MAX_CONNECTIONS,
        timeout_s: float = DEFAULT_TIMEOUT_S,
        upload_priority: int | str | None = None,
    ) -> None:
        self.ctx = ctx
        # The same port as last time when free: URLs signed before a restart (uploads and downloads in
        # flight, retried by the client) then still reach the data plane.
        preferred = int(ctx.store.meta_get("data_plane_port") or 0)
        try:
            self.httpd = _DataPlaneHTTPServer((host, preferred), ctx, max_connections, timeout_s, upload_priority)
        except OSError:
            self.httpd = _DataPlaneHTTPServer((host, 0), ctx, max_connections, timeout_s, upload_priority)
        if self.httpd.server_address[1] != preferred:
            ctx.store.meta_set("data_plane_port", str(self.httpd.server_address[1]))
        self.port = self.httpd.server_address[1]
        self._thread = threading.Thread(
            target=self.httpd.serve_forever, kwargs={"poll_interval": 0.2}, name="hubckpt-data-plane", daemon=True
        )

    def start(self) -> DataPlane:
        self.ctx.data_plane_port = self.port
        self._thread.start()
        return self

    def stop(self) -> None:
        self.ctx.data_plane_port = None
        self.httpd.shutdown()
        self.httpd.server_close()


def data_plane_base(ctx, request_host: str) -> str:
    """http://<the host the client used>:<data plane port>: reachable wherever the API was."""
    host = f"[{request_host}]" if ":" in request_host else request_host
    return f"http://{host}:{ctx.data_plane_port}"


def signed_blob_url(ctx, request_host: str, sha256: str) -> str:
    """A pre-signed, expiring download URL of an object on the data plane."""
    expires = int(time.time()) + DOWNLOAD_URL_TTL_S
    sig = ctx.sign("blob", sha256, expires)
    return f"{data_plane_base(ctx, request_host)}/blob/{sha256}?expires={expires}&sig={sig}"


__all__ = ["DataPlane", "signed_blob_url", "data_plane_base", "parse_range", "is_sha256"]
