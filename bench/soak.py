"""Soak of the real local hub on loopback: concurrent clients, a SIGKILL mid-load, a restart, then audits.

N client threads, each for a bounded time (and a bounded number of operations), mix through the stock
huggingface_hub client with token authentication:

- cas       commit a new file to `main` of one shared repo with `parent_commit` = the head just read
            (412 when another client got there first: refused, counted, never an error)
- branch    commit to the client's own branch of another repo
- lfs       upload a random binary file (LFS) to the client's own branch of the LFS repo
- range     download a random byte range of an uploaded LFS file (HTTP Range through the 302) and compare
- read      refs, model info and a small file of the shared repo
- private   read a private repo with its owner's read token (must match) and with another user's token
            and anonymously (must be refused, and never carry the private bytes)

Partway through, the server is SIGKILLed and restarted on the same port and data folder; clients keep
going (their calls fail or retry meanwhile). Afterwards the audit checks against the hub's final state:

- commits lost: commits answered 200 that are not in their branch's history (must be 0)
- stale commits accepted: commits on the shared `main` whose actual parent is not the `parent_commit`
  they were sent with (every cas commit records it in its description; must be 0)
- objects not matching their sha256: LFS files downloaded in full whose sha256 differs, plus tree
  entries whose oid differs from what was uploaded (must be 0)
- private data read by the wrong token (must be 0)

and reports requests served (HTTP responses, by status), errors by kind, latency p50/p99 (per request,
to response headers; and per operation), and the restarted server's RSS and threads under load and
after the clients close their connections.

Usage:  .venv/bin/python bench/soak.py [--duration 120] [--clients 16] [--kill-at 0.4] [--json out.json]
"""

from __future__ import annotations

import argparse
import collections
import hashlib
import io
import json
import os
import random
import re
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

os.environ.setdefault("HF_HUB_DISABLE_XET", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")

OPS = {"cas": 3, "branch": 2, "lfs": 1, "range": 3, "read": 4, "private": 2}
SHARED, BRANCHES, LFS, PRIVATE = "alice/soak-shared", "alice/soak-branches", "alice/soak-lfs", "alice/soak-private"
_PARENT = re.compile(r"parent=([0-9a-f]{40})")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def percentile(values: list[float], q: float) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def proc_status(pid: int) -> dict[str, int]:
    """RSS (KiB) and thread count of a process, from /proc."""
    out = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "Threads"):
            out[key] = int(value.split()[0])
    return out


class Server:
    """`hubckpt serve` as a subprocess on a fixed loopback port (so it can be SIGKILLed and restarted)."""

    def __init__(self, root: Path, port: int) -> None:
        self.root, self.port, self.proc = root, port, None
        self.url = f"http://127.0.0.1:{port}"

    def start(self, timeout: float = 60) -> None:
        import httpx2

        # The server's log goes to a file: a pipe nobody reads fills up after 64 KiB of errors and then
        # blocks the server on its next log line, which a soak would misreport as a hang.
        self.log = self.root.parent / "soak-server.log"
        self.root.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log, "a") as log:
            self.proc = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "hubckpt",
                    "serve",
                    "--root",
                    str(self.root),
                    "--host",
                    "127.0.0.1",
                    "--port",
                    str(self.port),
                    "--quiet",
                ],
                stdout=subprocess.DEVNULL,
                stderr=log,
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                if httpx2.get(f"{self.url}/api/hubckpt/health", timeout=1).status_code == 200:
                    return
            except httpx2.HTTPError:
                pass
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited: {self.log.read_text()[-4000:]}")
            time.sleep(0.05)
        raise RuntimeError("server did not start")

    def kill(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)


@dataclass
class Stats:
    """Shared, lock-protected counters of the whole run."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    statuses: collections.Counter = field(default_factory=collections.Counter)
    request_latency: list = field(default_factory=list)
    op_latency: dict = field(default_factory=lambda: collections.defaultdict(list))
    ops: collections.Counter = field(default_factory=collections.Counter)
    errors: collections.Counter = field(default_factory=collections.Counter)
    error_examples: dict = field(default_factory=dict)  # first message of each kind, with its time
    t0: float = field(default_factory=time.monotonic)
    error_times: list = field(default_factory=list)  # seconds since the start
    refused_stale: int = 0
    accepted: list = field(default_factory=list)  # (repo, branch, commit sha, path, git-or-lfs oid)
    lfs_files: list = field(default_factory=list)  # (branch, path, bytes)
    wrong_token_reads: int = 0
    range_mismatches: int = 0
    private_mismatches: int = 0
    requests_since_mark: int = 0
    finished: int = 0  # clients whose loop ended


def _install_counting_client(stats: Stats):
    """Count every HTTP response the stock client gets, with its latency to headers; returns the factory."""
    import httpx2
    from huggingface_hub import set_client_factory
    from huggingface_hub.utils._http import hf_request_event_hook

    def on_request(request):
        request.extensions["soak_t0"] = time.perf_counter()
        return hf_request_event_hook(request)

    def on_response(response):
        t0 = response.request.extensions.get("soak_t0")
        with stats.lock:
            stats.statuses[response.status_code] += 1
            stats.requests_since_mark += 1
            if t0 is not None:
                stats.request_latency.append(time.perf_counter() - t0)

    def factory():
        return httpx2.Client(
            event_hooks={"request": [on_request], "response": [on_response]},
            follow_redirects=True,
            timeout=httpx2.Timeout(60.0),
        )

    set_client_factory(factory)
    return factory


def _error_kind(error: BaseException) -> str:
    response = getattr(error, "response", None)
    if response is not None:
        return f"HTTP {response.status_code}"
    text = str(error)
    # huggingface_hub closes its shared client on a ConnectError while other threads still use it
    # (utils/_http.py: close_session() in the retry loop): a client-side race, seen only while the
    # server is down.
    if (isinstance(error, AttributeError) and "NoneType" in text) or "client has been closed" in text:
        return "client session closed by another thread (huggingface_hub)"
    return type(error).__name__


def setup(root: Path) -> dict[str, str]:
    """Users, tokens (authentication on) and repos; returns the token values."""
    from hubckpt.server.storage import open_data_folder

    store = open_data_folder(root)
    for user in ("local", "alice", "eve"):
        store.add_account(user, "user")
    tokens = {
        "alice": store.create_token("alice", "write", "soak")[1],
        "alice_read": store.create_token("alice", "read", "soak-read")[1],
        "eve": store.create_token("eve", "write", "eve")[1],
    }
    store.close()
    return tokens


def create_repos(url: str, tokens: dict[str, str], clients: int) -> bytes:
    from huggingface_hub import HfApi

    alice = HfApi(endpoint=url, token=tokens["alice"])
    for rid in (SHARED, BRANCHES, LFS):
        alice.create_repo(rid)
    alice.create_repo(PRIVATE, private=True)
    secret = b"PRIVATE-" + os.urandom(24).hex().encode()
    alice.upload_file(path_or_fileobj=secret, path_in_repo="secret.txt", repo_id=PRIVATE)
    for i in range(clients):
        alice.create_branch(BRANCHES, branch=f"client-{i}")
        alice.create_branch(LFS, branch=f"client-{i}")
    return secret


def worker(
    i: int,
    url: str,
    tokens: dict[str, str],
    secret: bytes,
    stats: Stats,
    deadline: float,
    max_ops: int,
    seed: int,
    client_factory,
) -> None:
    with client_factory() as raw:  # this client's own connections for raw GETs (the stock client has its own)
        _work(i, url, tokens, secret, stats, deadline, max_ops, seed, raw)
    with stats.lock:
        stats.finished += 1


def _work(i, url, tokens, secret, stats, deadline, max_ops, seed, raw) -> None:
    from huggingface_hub import HfApi
    from huggingface_hub.errors import HfHubHTTPError

    rng = random.Random(seed * 1000 + i)
    alice = HfApi(endpoint=url, token=tokens["alice"])
    reader = HfApi(endpoint=url, token=tokens["alice_read"])
    names, weights = zip(*OPS.items())
    mine: list[tuple[str, bytes]] = []  # this client's LFS files (path, bytes)
    n = 0
    while time.monotonic() < deadline and n < max_ops:
        n += 1
        op = rng.choices(names, weights)[0]
        if op == "range" and not mine:
            op = "lfs"
        t0 = time.perf_counter()
        try:
            if op == "cas":
                head = alice.model_info(SHARED).sha
                path = f"c/{i}-{n}.txt"
                content = f"{i} {n} {rng.random()}".encode()
                try:
                    info = alice.create_commit(
                        SHARED,
                        _add(path, content),
                        commit_message=f"cas {i}-{n}",
                        commit_description=f"parent={head}",
                        parent_commit=head,
                    )
                except HfHubHTTPError as e:
                    if e.response is not None and e.response.status_code == 412:
                        with stats.lock:
                            stats.refused_stale += 1
                        continue
                    raise
                with stats.lock:
                    stats.accepted.append((SHARED, "main", info.oid, path, _git_oid(content)))
            elif op == "branch":
                path = f"b/{n}.txt"
                content = os.urandom(32).hex().encode()  # text: a regular (non-LFS) file
                info = alice.create_commit(
                    BRANCHES, _add(path, content), commit_message=f"branch {i}-{n}", revision=f"client-{i}"
                )
                with stats.lock:
                    stats.accepted.append((BRANCHES, f"client-{i}", info.oid, path, _git_oid(content)))
            elif op == "lfs":
                path = f"w/{n}.bin"
                content = rng.randbytes(rng.randint(1, 256) * 1024)
                info = alice.create_commit(
                    LFS, _add(path, io.BytesIO(content)), commit_message=f"lfs {i}-{n}", revision=f"client-{i}"
                )
                mine.append((path, content))
                with stats.lock:
                    stats.accepted.append((LFS, f"client-{i}", info.oid, path, hashlib.sha256(content).hexdigest()))
                    stats.lfs_files.append((f"client-{i}", path, content))
            elif op == "range":
                path, content = rng.choice(mine)
                start = rng.randrange(len(content))
                end = min(len(content) - 1, start + rng.randint(0, 65536))
                r = raw.get(
                    f"{url}/{LFS}/resolve/client-{i}/{path}",
                    headers={"authorization": f"Bearer {tokens['alice']}", "range": f"bytes={start}-{end}"},
                )
                if r.status_code != 206:
                    raise HfHubHTTPError(f"range answered {r.status_code}", response=r)
                if r.content != content[start : end + 1]:
                    with stats.lock:
                        stats.range_mismatches += 1
            elif op == "read":
                alice.list_repo_refs(SHARED)
                alice.model_info(BRANCHES, revision=f"client-{i}")
                r = raw.get(
                    f"{url}/{SHARED}/resolve/main/.gitattributes",
                    headers={"authorization": f"Bearer {tokens['alice']}"},
                )
                if r.status_code != 200:
                    raise HfHubHTTPError(f"read answered {r.status_code}", response=r)
            elif op == "private":
                r = raw.get(
                    f"{url}/{PRIVATE}/resolve/main/secret.txt",
                    headers={"authorization": f"Bearer {tokens['alice_read']}"},
                )
                if r.status_code != 200 or r.content != secret:
                    with stats.lock:
                        stats.private_mismatches += 1
                for headers in ({"authorization": f"Bearer {tokens['eve']}"}, {}):
                    r = raw.get(f"{url}/{PRIVATE}/resolve/main/secret.txt", headers=headers)
                    if r.status_code < 400 or secret in r.content:
                        with stats.lock:
                            stats.wrong_token_reads += 1
                reader.model_info(PRIVATE)
            with stats.lock:
                stats.ops[op] += 1
                stats.op_latency[op].append(time.perf_counter() - t0)
        except Exception as e:  # every failure is counted by kind; the audit decides what matters
            kind = f"{op}: {_error_kind(e)}"
            with stats.lock:
                stats.errors[kind] += 1
                stats.error_examples.setdefault(kind, f"{str(e)[:300]} (at {time.monotonic() - stats.t0:.1f}s)")
                stats.error_times.append(time.monotonic() - stats.t0)
            time.sleep(0.05)


def _add(path: str, content):
    from huggingface_hub import CommitOperationAdd

    return [CommitOperationAdd(path, content)]


def _git_oid(content: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(content) + content).hexdigest()


def audit(url: str, tokens: dict[str, str], stats: Stats, full_downloads: int) -> dict:
    """Compare what the clients were told with what the hub holds after the kill and restart."""
    from huggingface_hub import HfApi

    alice = HfApi(endpoint=url, token=tokens["alice"])
    histories: dict[tuple[str, str], set[str]] = {}
    trees: dict[tuple[str, str], dict[str, str]] = {}
    lost = mismatched = 0
    examples: list[str] = []
    for repo, branch, sha, path, oid in stats.accepted:
        key = (repo, branch)
        if key not in histories:
            histories[key] = {c.commit_id for c in alice.list_repo_commits(repo, revision=branch)}
            trees[key] = {
                e.path: (e.lfs.sha256 if e.lfs else e.blob_id)
                for e in alice.list_repo_tree(repo, revision=branch, recursive=True)
                if hasattr(e, "blob_id")
            }
        if sha not in histories[key]:
            lost += 1
            examples.append(f"lost: {repo}@{branch} {sha} {path}")
        elif trees[key].get(path) != oid:
            mismatched += 1
            examples.append(f"tree oid: {repo}@{branch} {path} {trees[key].get(path)} != {oid}")
    # Every cas commit carries the parent it was sent with; the hub must never have taken a stale one.
    stale = 0
    shared = alice.list_repo_commits(SHARED, revision="main")
    by_id = {c.commit_id: i for i, c in enumerate(shared)}
    for i, commit in enumerate(shared):
        m = _PARENT.search(commit.message or "")
        if m is None:
            continue
        actual_parent = shared[i + 1].commit_id if i + 1 < len(shared) else None
        if actual_parent != m.group(1) or m.group(1) not in by_id:
            stale += 1
    # Full downloads of uploaded LFS files, re-hashed.
    import random as _random

    from huggingface_hub.utils import get_session

    raw = get_session()

    sample = _random.Random(0).sample(stats.lfs_files, min(full_downloads, len(stats.lfs_files)))
    for branch, path, content in sample:
        r = raw.get(f"{url}/{LFS}/resolve/{branch}/{path}", headers={"authorization": f"Bearer {tokens['alice']}"})
        if r.status_code != 200 or hashlib.sha256(r.content).digest() != hashlib.sha256(content).digest():
            mismatched += 1
            examples.append(f"download: {branch} {path} status {r.status_code}")
    return {
        "commits_lost": lost,
        "stale_commits_accepted": stale,
        "objects_not_matching_sha256": mismatched + stats.range_mismatches,
        "private_data_read_by_wrong_token": stats.wrong_token_reads,
        "private_reads_by_owner_failed": stats.private_mismatches,
        "shared_main_commits": len(shared),
        "full_downloads_checked": len(sample),
        "audit_examples": examples[:10],
    }


def run_soak(
    duration: float = 120,
    clients: int = 16,
    kill_at: float = 0.4,
    max_ops: int = 100_000,
    seed: int = 0,
    root: Path | None = None,
    full_downloads: int = 50,
) -> dict:
    """Run the soak and return the report (see the module docstring)."""
    from huggingface_hub import close_session

    stats = Stats()
    client_factory = _install_counting_client(stats)
    own_root = root is None
    root = Path(tempfile.mkdtemp(prefix="hubckpt-soak-")) if own_root else root
    tokens = setup(root / "hub")
    server = Server(root / "hub", free_port())
    server.start()
    report: dict = {"clients": clients, "duration_s": duration}
    try:
        secret = create_repos(server.url, tokens, clients)
        start = stats.t0 = time.monotonic()
        deadline = start + duration
        threads = [
            threading.Thread(
                target=worker,
                args=(i, server.url, tokens, secret, stats, deadline, max_ops, seed, client_factory),
                daemon=True,
            )
            for i in range(clients)
        ]
        for t in threads:
            t.start()
        time.sleep(duration * kill_at)
        server.kill()
        killed_at = time.monotonic() - start
        server.start()
        restarted_in = time.monotonic() - start - killed_at
        # Under load, a while after the restart: the reference point for growth.
        time.sleep(max(0.0, (deadline - time.monotonic()) * 0.3))
        with stats.lock:
            stats.requests_since_mark = 0
        loaded = proc_status(server.proc.pid)
        for t in threads:
            t.join(timeout=duration + 120)
        with stats.lock:
            after_requests = stats.requests_since_mark
        end_loaded = proc_status(server.proc.pid)
        close_session()  # the clients go away: their keep-alive connections close
        time.sleep(1.5)
        idle = proc_status(server.proc.pid)
        report.update(audit(server.url, tokens, stats, full_downloads))
        elapsed = time.monotonic() - start
        report.update(
            {
                "clients_finished": stats.finished,
                "requests_served": sum(stats.statuses.values()),
                "requests_per_s": round(sum(stats.statuses.values()) / elapsed, 1),
                "responses_by_status": dict(sorted(stats.statuses.items())),
                "operations": dict(sorted(stats.ops.items())),
                "stale_parent_refused_412": stats.refused_stale,
                "errors_by_kind": dict(sorted(stats.errors.items())),
                "error_examples": dict(sorted(stats.error_examples.items())),
                # Errors while the server was down (killed → restarted, plus the clients' 2 s to notice) are
                # expected; any other error is a failure of the hub.
                "errors_outside_outage": sum(
                    1 for t in stats.error_times if not killed_at - 0.2 <= t <= killed_at + restarted_in + 2.0
                ),
                "latency_ms": {
                    "request_p50": round(1000 * percentile(stats.request_latency, 0.50), 1),
                    "request_p99": round(1000 * percentile(stats.request_latency, 0.99), 1),
                    **{f"{op}_p50": round(1000 * percentile(v, 0.50), 1) for op, v in sorted(stats.op_latency.items())},
                    **{f"{op}_p99": round(1000 * percentile(v, 0.99), 1) for op, v in sorted(stats.op_latency.items())},
                },
                "killed_at_s": round(killed_at, 1),
                "restart_s": round(restarted_in, 2),
                "server_after_restart": {
                    "rss_mib_under_load_mark": round(loaded["VmRSS"] / 1024, 1),
                    "rss_mib_end_of_load": round(end_loaded["VmRSS"] / 1024, 1),
                    "rss_mib_idle": round(idle["VmRSS"] / 1024, 1),
                    "rss_growth_bytes_per_request": round(
                        (end_loaded["VmRSS"] - loaded["VmRSS"]) * 1024 / max(1, after_requests), 1
                    ),
                    "requests_between_marks": after_requests,
                    "threads_under_load_mark": loaded["Threads"],
                    "threads_end_of_load": end_loaded["Threads"],
                    "threads_idle": idle["Threads"],
                },
            }
        )
    finally:
        server.stop()
        from huggingface_hub import set_client_factory
        from huggingface_hub.utils._http import default_client_factory

        set_client_factory(default_client_factory)  # leave the process's client as it was
        if own_root:
            import shutil

            shutil.rmtree(root, ignore_errors=True)
    return report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=120)
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--kill-at", type=float, default=0.4, help="fraction of the duration at which to SIGKILL")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path, help="also write the report here")
    args = parser.parse_args()
    report = run_soak(args.duration, args.clients, args.kill_at, seed=args.seed)
    text = json.dumps(report, indent=2)
    print(text)
    if args.json:
        args.json.write_text(text + "\n")


if __name__ == "__main__":
    main()
