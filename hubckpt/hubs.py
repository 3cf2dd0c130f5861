"""Which hub to talk to, and the one place that builds `HfApi` clients for it.

`hub=` (Python) / `--hub` (CLI) is resolved as: explicit argument, then `HUBCKPT_HUB`, then
`HF_ENDPOINT`, then `local`. Accepted values:

- `local`: the embedded local hub over a data folder (`HUBCKPT_HUB_ROOT`, default
  `~/.cache/hubckpt/hub`). It is started in the background if no server is serving that folder yet,
  and reused if one is (`server.json` in the folder records it).
- `hf`: https://huggingface.co.
- a URL (`http://host:8900`, `https://huggingface.co`): any server speaking the Hub API.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from .errors import HubConfigError, HubUnavailableError

if TYPE_CHECKING:
    from huggingface_hub import HfApi

logger = logging.getLogger(__name__)

HF_ENDPOINT_URL = "https://huggingface.co"
DEFAULT_LOCAL_PORT = 8900
SERVER_FILE = "server.json"
_START_TIMEOUT_S = 60.0


def default_local_root() -> Path:
    """The local hub's data folder: `HUBCKPT_HUB_ROOT`, else `~/.cache/hubckpt/hub`."""
    from hubckpt import environment

    return environment.hub_root()


@dataclass(frozen=True)
class Hub:
    """A resolved hub: where it is and how to describe it to the user."""

    endpoint: str
    kind: str  # "local" | "remote"
    root: Path | None = None  # data folder, for the local hub

    @property
    def is_huggingface_co(self) -> bool:
        return self.endpoint.rstrip("/") in (HF_ENDPOINT_URL, "https://hf.co")

    def describe(self) -> str:
        if self.kind == "local":
            return f"local hub {self.endpoint} (data: {self.root})"
        return f"hub {self.endpoint}"


def resolve_hub(hub: str | None = None, *, root: str | Path | None = None, start: bool = True) -> Hub:
    """Turn a `hub=` value (or the environment) into a `Hub`, starting the local hub if needed."""
    from hubckpt import environment

    value = hub or environment.hub()
    value = value.strip()
    if value == "local":
        data = Path(root).expanduser() if root else default_local_root()
        endpoint = ensure_local_hub(data) if start else (running_local_hub(data) or "")
        return Hub(endpoint, "local", data.resolve())
    if value == "hf":
        return Hub(HF_ENDPOINT_URL, "remote")
    if value.startswith(("http://", "https://")):
        return Hub(value.rstrip("/"), "remote")
    raise HubConfigError(f"Unknown hub {value!r}: use 'local', 'hf', or a URL such as http://127.0.0.1:8900.")


def resolve_token(hub: Hub, token: str | bool | None = None) -> str | bool | None:
    """The token to send to `hub`: the explicit one, else the hub's own default — never another hub's.

    - an explicit token (or False for none) is used as given;
    - None for huggingface.co: huggingface_hub's usual lookup (`HF_TOKEN`, then the token saved by `hf auth login`);
    - None for any other hub: `HUBCKPT_TOKEN` if set, else no token at all (False), so the stored
      huggingface.co token never travels to another URL.
    """
    if token is not None:
        return token
    if hub.is_huggingface_co:
        return None
    from hubckpt import environment

    return environment.token() or False


def token_for(hub: Hub, spec: object, tokens: str | dict | None) -> str | bool | None:
    """Pick the token of one hub of a multi-hub publisher.

    `tokens` is None (each hub's default), one token (only allowed with one hub: the caller checks), or a
    dict keyed by the hub as the user named it (`spec`, e.g. "hf" or a URL) or by its endpoint.
    """
    if isinstance(tokens, dict):
        for key in (spec, hub.endpoint, hub.endpoint.rstrip("/"), "hf" if hub.is_huggingface_co else None):
            if key is not None and key in tokens:
                return resolve_token(hub, tokens[key])
        return resolve_token(hub, None)
    return resolve_token(hub, tokens)


def hub_api(hub: Hub | str | None = None, *, token: str | bool | None = None) -> HfApi:
    """An `HfApi` bound to `hub` with an explicit endpoint (never the import-time HF_ENDPOINT).

    `token=None` resolves per hub (`resolve_token`): the stored huggingface.co token is only sent to huggingface.co.
    """
    from huggingface_hub import HfApi

    from .version import __version__

    resolved = hub if isinstance(hub, Hub) else resolve_hub(hub)
    return HfApi(
        endpoint=resolved.endpoint,
        token=resolve_token(resolved, token),
        library_name="hubckpt",
        library_version=__version__,
    )


def point_hf_clients_at(endpoint: str) -> None:
    """Make module-level huggingface_hub helpers (and so transformers' `from_pretrained`) use `endpoint`.

    huggingface_hub reads HF_ENDPOINT once, at import; this patches the two constants that its
    download helpers read at call time (see the Hub API reference, §1.1).
    """
    from huggingface_hub import constants

    constants.ENDPOINT = endpoint.rstrip("/")
    constants.HUGGINGFACE_CO_URL_TEMPLATE = constants.ENDPOINT + "/{repo_id}/resolve/{revision}/{filename}"


# -- the local hub in the background ----------------------------------------------------------------


def _health(url: str, timeout: float = 2.0) -> dict | None:
    try:
        with urllib.request.urlopen(f"{url}/api/hubckpt/health", timeout=timeout) as r:  # noqa: S310 - loopback URL
            return json.loads(r.read())
    except (urllib.error.URLError, OSError, ValueError):
        return None


def running_local_hub(root: Path) -> str | None:
    """URL of the server serving `root`, if one answers; None otherwise."""
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


def ensure_local_hub(root: str | Path | None = None) -> str:
    """URL of a local hub serving `root`; starts one in the background if none is running."""
    root = (Path(root).expanduser() if root else default_local_root()).resolve()
    url = running_local_hub(root)
    if url:
        return url
    try:
        with _start_lock(root):
            return _start_local_hub(root)
    except OSError as e:
        raise HubConfigError(
            f"The local hub's data folder {root} cannot be used ({e.strerror or e}): it must be a "
            "writable folder. Choose another with --root or HUBCKPT_HUB_ROOT."
        ) from e


def _start_local_hub(root: Path) -> str:
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
                str(DEFAULT_LOCAL_PORT),
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


def stop_local_hub(root: str | Path | None = None) -> bool:
    """Stop the server recorded in `root`'s server.json; True if one was stopped."""
    import signal

    root = (Path(root).expanduser() if root else default_local_root()).resolve()
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
