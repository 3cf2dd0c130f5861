"""The local hub's lifecycle, seen from the client side: start it in the background, discover it, stop it.

A server over a data folder records itself in `<root>/server.json` (`{pid, url, root}`) while it
serves (`record_server`, called by `hubckpt serve`; `forget_server` at its exit). Any process finds
it there (`running_local_hub`: the file, then a health check that the server at that URL serves this
very folder), starts one if none does (`ensure_local_hub`: `hubckpt serve --quiet` in its own
session, under a lock so concurrent callers start one server, not several) and stops it
(`stop_local_hub`). `served_root` asks a hub reached by URL which data folder it serves.

This module only speaks HTTP to the server and runs it as a subprocess: it never imports `server/`,
which stays apart from the client side.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

from .. import environment
from ..errors import HubConfigError, HubUnavailableError

logger = logging.getLogger(__name__)

DEFAULT_LOCAL_PORT = 8900
SERVER_FILE = "server.json"
_START_TIMEOUT_S = 60.0


def default_local_root() -> Path:
    """The local hub's data folder: `HUBCKPT_HUB_ROOT`, else `~/.cache/hubckpt/hub`."""
    return environment.hub_root()


def local_root(root: str | Path | None = None) -> Path:
    """`root` (or the default data folder) as an absolute path: the identity of a local hub."""
    return (Path(root).expanduser() if root else default_local_root()).resolve()


# -- discover ------------------------------------------------------------------------------------------


def _health(url: str, timeout: float = 2.0) -> dict | None:
    """What a hubckpt local hub at `url` says of itself; None if nothing (or another kind of server) answers."""
    import urllib.error  # here: every CLI start imports this module, and urllib.request costs it ~18 ms
    import urllib.request

    try:
        with urllib.request.urlopen(f"{url}/api/hubckpt/health", timeout=timeout) as r:  # noqa: S310 - a hub URL
            body = json.loads(r.read())
    except (urllib.error.URLError, OSError, ValueError):
        return None
    return body if isinstance(body, dict) else None


def running_local_hub(root: str | Path) -> str | None:
    """URL of the server serving `root`, if one answers; None otherwise (starts nothing)."""
    info_path = Path(root) / SERVER_FILE
    try:
        info = json.loads(info_path.read_text())
    except (OSError, ValueError):
        return None
    url = info.get("url")
    health = _health(url) if isinstance(url, str) else None
    if health and Path(health.get("root", "")) == Path(root).resolve():
        return url
    return None


def served_root(endpoint: str) -> str | None:
    """The data folder of the hubckpt local hub at `endpoint` (None for other hubs, or when it does not answer).

    A hub reached by URL tells its folder only to a client on its own machine (server/app.py).
    """
    root = (_health(endpoint) or {}).get("root")
    return root if isinstance(root, str) and root else None


def record_server(root: Path, url: str) -> None:
    """Record that this process serves `root` at `url` (atomically: readers never see half a file)."""
    info_path = root / SERVER_FILE
    tmp = info_path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps({"pid": os.getpid(), "url": url, "root": str(root)}, indent=2, sort_keys=True))
    os.replace(tmp, info_path)


def forget_server(root: Path) -> None:
    """Remove `root`'s record if this process wrote it (a newer server's record is left alone)."""
    info_path = root / SERVER_FILE
    try:
        if json.loads(info_path.read_text()).get("pid") == os.getpid():
            info_path.unlink()
    except (OSError, ValueError):
        pass


# -- start ---------------------------------------------------------------------------------------------


@contextlib.contextmanager
def _start_lock(root: Path) -> Iterator[None]:
    import fcntl

    root.mkdir(parents=True, exist_ok=True)
    with open(root / ".server.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def ensure_local_hub(root: str | Path | None = None, *, port: int | None = None) -> str:
    """URL of a local hub serving `root`; starts one in the background if none is running.

    A hub restarted after it died asks for its old port, so URLs handed out before (HF_ENDPOINT, cards)
    keep working.

    Args:
        root: the data folder (default `HUBCKPT_HUB_ROOT`, else `~/.cache/hubckpt/hub`).
        port: where to start it (default 8900; a taken port falls back to a free one).

    Returns:
        The base URL of the server now serving `root`.

    Raises:
        HubConfigError: the data folder is not a writable folder.
        HubUnavailableError: the server did not come up in time.
    """
    root = local_root(root)
    url = running_local_hub(root)
    if url:
        return url
    try:
        with _start_lock(root):
            return _start_local_hub(root, port or DEFAULT_LOCAL_PORT)
    except OSError as e:
        raise HubConfigError(
            f"The local hub's data folder {root} cannot be used ({e.strerror or e}): it must be a "
            "writable folder. Choose another with --root or HUBCKPT_HUB_ROOT."
        ) from e


def _start_local_hub(root: Path, port: int) -> str:
    """Start a server over `root` (the caller holds the start lock) and return its URL."""
    url = running_local_hub(root)  # another process may have started it while we waited
    if url:
        return url
    log_path = root / "server.log"
    logger.info("starting the local hub over %s (log: %s)", root, log_path)
    with open(log_path, "ab") as log:
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "hubckpt",
                "serve",
                "--root",
                str(root),
                "--port",
                str(port),
                "--port-fallback",
                "--quiet",
            ],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=log,
            start_new_session=True,
        )
    deadline = time.monotonic() + _START_TIMEOUT_S
    while time.monotonic() < deadline:
        url = running_local_hub(root)
        if url:
            return url
        if process.poll() is not None:
            tail = log_path.read_text(errors="replace")[-2000:]
            raise HubUnavailableError(
                f"The local hub exited at start-up (code {process.returncode}). Log {log_path}:\n{tail}"
            )
        time.sleep(0.1)
    process.kill()
    raise HubUnavailableError(f"The local hub did not answer within {_START_TIMEOUT_S:.0f}s; see {log_path}.")


# -- stop ----------------------------------------------------------------------------------------------


def stop_local_hub(root: str | Path | None = None) -> bool:
    """Stop the server recorded in `root`'s server.json; True if one was stopped."""
    import signal

    root = local_root(root)
    info_path = root / SERVER_FILE
    try:
        info = json.loads(info_path.read_text())
    except (OSError, ValueError):
        return False
    if running_local_hub(root) is None:
        info_path.unlink(missing_ok=True)
        return False
    pid = int(info["pid"])
    os.kill(pid, signal.SIGTERM)
    for _ in range(100):
        if running_local_hub(root) is None:
            return True
        time.sleep(0.1)
    os.kill(pid, signal.SIGKILL)
    return True
