"""A small hostile hub for the tests: a stdlib HTTP server on 127.0.0.1 that answers like a Hub, then lies.

It serves one repo at one commit (`files`, on the branches in `branches`); each scenario sets what the
hub does wrong: another `X-Repo-Commit`, refs whose `targetCommit` is a path, a Range answered with the
wrong bytes or with the whole file, redirects and pagination links to another origin, a listing that
never ends, a gzip bomb, a stalled body (or one that drips a few bytes per try), or one answer (a 503
asking to wait) to everything. Every request is recorded with its headers (`requests`), so a test can
check where the token went.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import unquote, urlsplit

COMMIT = "c0ffee" + "0" * 34


@dataclass
class Seen:
    method: str
    path: str
    headers: dict[str, str]


@dataclass
class HostileHub:
    repo_id: str = "eve/run"
    files: dict[str, bytes] = field(default_factory=dict)
    branches: dict[str, str] = field(default_factory=lambda: {"main": COMMIT})
    tags: dict[str, str] = field(default_factory=dict)
    x_repo_commit: str | None = None  # answered as X-Repo-Commit instead of the commit
    range_mode: str = "exact"  # exact | shifted (another range, same length) | whole (200 with the whole file)
    redirect: dict[str, str] = field(default_factory=dict)  # path in repo -> absolute URL to 302 /resolve/ to
    tree_next: str | None = None  # "forever": every page names a next one; else a URL for the 1st page's Link
    gzip_files: set[str] = field(default_factory=set)  # served with Content-Encoding: gzip
    stall_s: float = 0.0  # /resolve/ bodies: headers, a few bytes, then silence this long
    # every GET of these (Range or not): 4 bytes, then silence for drip_s; after 4 such tries (`drips`)
    # the file is sent whole, so that a client without a bound still ends (and its test fails)
    drip_files: set[str] = field(default_factory=set)
    drip_s: float = 20.0
    drips: int = 0
    busy_files: set[str] = field(default_factory=set)  # requests for these: 503 with Retry-After: 300
    etags: dict[str, str] = field(default_factory=dict)  # path -> the ETag announced (default: the body's sha256)
    fail_ranges: int = 0  # this many Range reads past the start of a file answer 503 first (transient)
    # every request answered with this (status, headers, JSON body) instead, e.g. a 503 with Retry-After
    answer: tuple[int, dict[str, str], dict] | None = None
    requests: list[Seen] = field(default_factory=list)
    port: int = 0

    def __post_init__(self) -> None:
        hub = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args) -> None:
                pass

            def do_HEAD(self) -> None:
                hub._handle(self, head=True)

            def do_GET(self) -> None:
                hub._handle(self, head=False)

        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self._server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def __enter__(self) -> HostileHub:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def authorized(self) -> list[Seen]:
        return [r for r in self.requests if "authorization" in r.headers]

    # -- answers ------------------------------------------------------------------------------------

    def _send(self, h, status: int, body: bytes = b"", headers: dict[str, str] | None = None, head=False) -> None:
        h.send_response(status)
        headers = dict(headers or {})
        headers.setdefault("Content-Length", str(len(body)))
        for k, v in headers.items():
            h.send_header(k, v)
        h.end_headers()
        if not head and body:
            try:
                h.wfile.write(body)
            except OSError:
                pass

    def _json(self, h, doc, headers=None, head=False) -> None:
        self._send(h, 200, json.dumps(doc).encode(), {"Content-Type": "application/json", **(headers or {})}, head)

    def _handle(self, h: BaseHTTPRequestHandler, *, head: bool) -> None:
        self.requests.append(Seen(h.command, h.path, {k.lower(): v for k, v in h.headers.items()}))
        if self.answer is not None:
            status, headers, doc = self.answer
            return self._send(
                h, status, json.dumps(doc).encode(), {"Content-Type": "application/json", **headers}, head
            )
        url = urlsplit(h.path)
        path = unquote(url.path)
        api = f"/api/models/{self.repo_id}/"
        if path.startswith(api + "refs"):
            return self._json(h, self._refs(), head=head)
        if path.startswith(api + "tree/"):
            return self._tree(h, url.query, head)
        prefix = f"/{self.repo_id}/resolve/"
        if path.startswith(prefix):
            revision, _, file = path[len(prefix) :].partition("/")
            return self._resolve(h, revision, file, head)
        return self._send(h, 404, b'{"error": "not found"}', {"X-Error-Code": "RepoNotFound"}, head)

    def _refs(self) -> dict:
        return {
            "branches": [{"name": n, "ref": f"refs/heads/{n}", "targetCommit": c} for n, c in self.branches.items()],
            "tags": [{"name": n, "ref": f"refs/tags/{n}", "targetCommit": c} for n, c in self.tags.items()],
            "converts": [],
        }

    def _tree(self, h, query: str, head: bool) -> None:
        page = int(dict(p.split("=", 1) for p in query.split("&") if "=" in p).get("page", "0"))
        entries = [{"type": "file", "path": p, "size": len(b), "oid": "0" * 40} for p, b in sorted(self.files.items())]
        headers = {}
        if self.tree_next == "forever" and page < 50:  # "forever", but a test of unbounded code still ends
            headers["Link"] = (
                f'<{self.url}/api/models/{self.repo_id}/tree/main?recursive=true&page={page + 1}>; rel="next"'
            )
            entries = entries if page == 0 else []
        elif self.tree_next and page == 0:
            headers["Link"] = f'<{self.tree_next}>; rel="next"'
        self._json(h, entries, headers, head)

    def _resolve(self, h, revision: str, file: str, head: bool) -> None:
        known = set(self.branches) | set(self.tags) | set(self.branches.values()) | set(self.tags.values())
        commit = self.x_repo_commit or COMMIT
        if revision not in known:
            return self._send(h, 404, b'{"error": "no revision"}', {"X-Error-Code": "RevisionNotFound"}, head)
        if file in self.redirect:
            linked = {}
            if file in self.files:  # as an LFS file on the Hub: its sha256 and size ride on the redirect
                sha = hashlib.sha256(self.files[file]).hexdigest()
                linked = {"X-Linked-Etag": f'"{sha}"', "ETag": f'"{sha}"', "X-Linked-Size": str(len(self.files[file]))}
            return self._send(h, 302, b"", {"Location": self.redirect[file], "X-Repo-Commit": commit, **linked}, head)
        body = self.files.get(file)
        if body is None:
            return self._send(
                h, 404, b'{"error": "no entry"}', {"X-Error-Code": "EntryNotFound", "X-Repo-Commit": commit}, head
            )
        etag = self.etags.get(file) or hashlib.sha256(body).hexdigest()
        headers = {"X-Repo-Commit": commit, "ETag": f'"{etag}"', "Accept-Ranges": "bytes"}
        if file in self.gzip_files:
            return self._send(h, 200, gzip.compress(body, 9), {**headers, "Content-Encoding": "gzip"}, head)
        rng = h.headers.get("Range")
        if file in self.busy_files:
            return self._send(h, 503, b'{"error": "busy"}', {"Retry-After": "300"}, head)
        if file in self.drip_files and not head and self.drips < 4:  # a few bytes per try, however often
            self.drips += 1
            start = int(rng.removeprefix("bytes=").partition("-")[0]) if rng else 0
            status = 206 if rng else 200
            if rng:
                headers["Content-Range"] = f"bytes {start}-{len(body) - 1}/{len(body)}"
            h.send_response(status)
            for k, v in {**headers, "Content-Length": str(len(body) - start)}.items():
                h.send_header(k, v)
            h.end_headers()
            h.wfile.write(body[start : start + 4])
            h.wfile.flush()
            time.sleep(self.drip_s)
            return None
        if rng and self.range_mode != "whole" and not head:
            first, _, last = rng.removeprefix("bytes=").partition("-")
            start, end = int(first), min(int(last), len(body) - 1)
            if start > 0 and self.fail_ranges > 0:
                self.fail_ranges -= 1
                return self._send(h, 503, b'{"error": "busy"}', {"Retry-After": "0"})
            if self.range_mode == "shifted":  # another range of the same length
                shift = 4 if end + 4 < len(body) else -4
                start, end = start + shift, end + shift
            data = body[start : end + 1]
            headers["Content-Range"] = f"bytes {start}-{end}/{len(body)}"
            return self._send(h, 206, data, headers)
        if self.stall_s and not head:
            h.send_response(200)
            for k, v in {**headers, "Content-Length": str(len(body))}.items():
                h.send_header(k, v)
            h.end_headers()
            h.wfile.write(body[:4])
            h.wfile.flush()
            time.sleep(self.stall_s)
            return None
        return self._send(h, 200, body, headers, head)
