"""The local hub: a server speaking the Hugging Face Hub HTTP API over a data folder.

Data folder layout (default `~/.cache/hubckpt/hub`, see `hubckpt.hub.local`)::

    hub.sqlite3         metadata (SQLite, WAL): accounts, hashed tokens, repos, commits, file lists, refs
    hub.sqlite3-wal     SQLite's write-ahead log (part of the database)
    objects/ab/cd/<sha256>   file contents, content-addressed, stored once across repos and branches
    tmp/                uploads in flight (swept at start-up)
    server.json         {pid, url, root} of the server currently serving this folder, if any

Two ports: the API (uvicorn + Starlette, `app.py`) and the data plane (`dataplane.py`), which moves
large object bytes with `sendfile` behind signed URLs, as huggingface.co does with its CDN.

Use `LocalHubServer` to run one in a background thread (tests, embedding), or `hubckpt serve`.
"""

from __future__ import annotations

import ipaddress
import logging
import socket
import threading
from pathlib import Path
from typing import Any

from ..errors import HubConfigError, HubUnavailableError
from .app import create_app
from .context import DEFAULT_LOCAL_USER, HubContext
from .dataplane import (
    DEFAULT_MAX_CONNECTIONS as DATA_PLANE_MAX_CONNECTIONS,
    DEFAULT_TIMEOUT_S as DATA_PLANE_TIMEOUT_S,
    DataPlane,
)

logger = logging.getLogger(__name__)

__all__ = [
    "LocalHubServer",
    "HubContext",
    "create_app",
    "is_loopback",
    "bind_socket",
    "check_exposure",
    "uvicorn_config",
]


def is_loopback(host: str) -> bool:
    """True for 127.0.0.0/8, ::1 and 'localhost'."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def bind_socket(host: str, port: int) -> socket.socket:
    """Bind a listening socket (port 0 = any free port)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as e:
        sock.close()
        raise HubUnavailableError(
            f"Cannot listen on {host}:{port}: {e.strerror or e}. Pick another port with --port (0 picks a free one)."
        ) from e
    sock.listen(2048)
    sock.set_inheritable(True)
    return sock


def check_exposure(ctx: HubContext, host: str) -> None:
    """Refuse to serve a non-loopback address without tokens: a single-user hub has no authentication.

    A hub that does listen beyond loopback is marked `exposed`, which also refuses single-user mode per
    request (should authentication be turned off behind its back).
    """
    if is_loopback(host):
        return
    if ctx.single_user:
        raise HubConfigError(
            f"Refusing to listen on {host}: this hub has no tokens, so anyone who can reach it could write to it. "
            f"Create one first (hubckpt token create --user {ctx.local_user} --role write --root {ctx.root}) "
            "or listen on 127.0.0.1."
        )
    ctx.exposed = True


# The API's own concurrency cap (uvicorn answers 503 beyond it) and keep-alive timeout.
API_MAX_CONNECTIONS = 1024
API_KEEP_ALIVE_S = 30


def uvicorn_config(app, **overrides):
    """The uvicorn settings every local hub runs with (background thread or `hubckpt serve`)."""
    import uvicorn

    settings: dict[str, Any] = dict(
        log_level="warning",
        http="httptools",
        lifespan="off",
        access_log=False,
        timeout_keep_alive=API_KEEP_ALIVE_S,
        limit_concurrency=API_MAX_CONNECTIONS,
    )
    settings.update(overrides)
    return uvicorn.Config(app, **settings)


class LocalHubServer:
    """A local hub running in a background thread of this process.

    For tests and embedding; the CLI and `hub="local"` run it in a background process instead
    (`hubckpt serve`, `hubckpt.ensure_local_hub`). Use it as a context manager, or `start()` / `stop()`.

    Args:
        root: the data folder (created if missing).
        host: the address to listen on; beyond loopback needs token authentication on.
        port: the API port (0 picks a free one).
        local_user: the user every request acts as in single-user mode.
        data_plane: serve file bytes on a second port (signed URLs), as huggingface.co's CDN does.
        data_plane_max_connections: connections the data plane serves at once.
        data_plane_timeout_s: seconds a data plane socket read or write may stall.
        **settings: further `HubContext` settings (e.g. `max_body_bytes`), and `commit_rate="N/PERIOD"`:
            a per-repo commit budget answered with the Hub's 429 (`rate.py`; off by default).

    Attributes:
        url: the API's base URL (`http://127.0.0.1:PORT`), once constructed.

    Raises:
        HubConfigError: a non-loopback `host` while the data folder is in single-user mode.
        StorageError: an unusable data folder.
        HubUnavailableError: from `start()`, when the server did not start.

    Example:
        >>> with LocalHubServer(tmp_path) as hub:
        ...     HfApi(endpoint=hub.url).create_repo("local/demo")
    """

    def __init__(
        self,
        root: str | Path,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        local_user: str = DEFAULT_LOCAL_USER,
        data_plane: bool = True,
        data_plane_max_connections: int = DATA_PLANE_MAX_CONNECTIONS,
        data_plane_timeout_s: float = DATA_PLANE_TIMEOUT_S,
        **settings,
    ) -> None:
        import uvicorn

        self.ctx = HubContext.open(Path(root), local_user=local_user, **settings)
        sock: socket.socket | None = None
        try:
            check_exposure(self.ctx, host)
            sock = self._sock = bind_socket(host, port)
            bound_host, bound_port = sock.getsockname()[:2]
            shown_host = f"[{bound_host}]" if ":" in bound_host else bound_host
            self.url = f"http://{shown_host}:{bound_port}"
            self._server = uvicorn.Server(uvicorn_config(create_app(self.ctx)))
            self._thread: threading.Thread | None = None
            self.data_plane = (
                DataPlane(self.ctx, host, max_connections=data_plane_max_connections, timeout_s=data_plane_timeout_s)
                if data_plane
                else None
            )
        except BaseException:
            # A refused or failed start must not keep the database (and its -wal/-shm) or the socket open.
            if sock is not None:
                sock.close()
            self.ctx.store.close()
            raise

    def start(self) -> LocalHubServer:
        """Start serving (the API, then the data plane) and wait until the API listens.

        Returns:
            This server, so `LocalHubServer(root).start().url` works.

        Raises:
            HubUnavailableError: the server did not start within about 5 seconds.
        """
        if self.data_plane is not None:
            self.data_plane.start()
        self._thread = threading.Thread(
            target=self._server.run, kwargs={"sockets": [self._sock]}, name="hubckpt-local-hub", daemon=True
        )
        self._thread.start()
        for _ in range(500):
            if self._server.started:
                return self
            if not self._thread.is_alive():
                break
            threading.Event().wait(0.01)
        raise HubUnavailableError("The local hub did not start; see the log above.")

    def stop(self) -> None:
        """Stop serving and close the database and sockets; the data folder stays as it is."""
        self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout=10)
        if self.data_plane is not None:
            self.data_plane.stop()
        self._sock.close()
        self.ctx.store.close()

    def __enter__(self) -> LocalHubServer:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
