"""Which hub to talk to, and the one place that builds `HfApi` clients for it.

`hub=` (Python) / `--hub` (CLI) is resolved as: explicit argument, then `HUBCKPT_HUB`, then
`HF_ENDPOINT`, then `local`. Accepted values:

- `local`: the embedded local hub over a data folder (`HUBCKPT_HUB_ROOT`, default
  `~/.cache/hubckpt/hub`). A server already serving that folder is reused (`local.py`: start,
  discover, stop); one is started in the background only where something is about to talk to the
  hub: `ensure_running(hub)`, called by `HubReader`, `HubTarget` and `hub_api`, or
  `resolve_hub(..., start=True)`. A plain `resolve_hub()` never starts a process.
- `hf`: https://huggingface.co.
- a URL (`http://host:8900`, `https://huggingface.co`): any server speaking the Hub API.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from .. import environment
from ..errors import HubConfigError
from .local import ensure_local_hub, local_root, running_local_hub
from .patches import set_default_endpoint

if TYPE_CHECKING:
    from huggingface_hub import HfApi

HF_ENDPOINT_URL = "https://huggingface.co"


@dataclass(frozen=True)
class Hub:
    """A resolved hub: where it is and how to describe it to the user.

    Attributes:
        endpoint: the hub's base URL (`https://huggingface.co`, `http://127.0.0.1:8900`); "" for a local
            hub that is not running yet (`ensure_local_hub` / any use of the hub starts it).
        kind: "local" (the local hub over a data folder) or "remote" (any URL, huggingface.co included).
        root: the local hub's data folder; None for a remote hub.
    """

    endpoint: str
    kind: str  # "local" | "remote"
    root: Path | None = None  # data folder, for the local hub

    @property
    def is_huggingface_co(self) -> bool:
        return self.endpoint.rstrip("/") in (HF_ENDPOINT_URL, "https://hf.co")

    def describe(self) -> str:
        if self.kind == "local":
            return f"local hub {self.endpoint or '(not started)'} (data: {self.root})"
        return f"hub {self.endpoint}"


def resolve_hub(hub: str | None = None, *, root: str | Path | None = None, start: bool = False) -> Hub:
    """Turn a `hub=` value (or the environment) into a `Hub`; `start=True` starts the local hub if needed.

    Without `start`, the local hub's `endpoint` is the URL of the server serving its data folder, or ""
    while none does: `ensure_running` starts one when the hub is used.

    Args:
        hub: "local", "hf" (huggingface.co) or a URL; None reads `HUBCKPT_HUB`, then `HF_ENDPOINT`, then
            uses "local".
        root: the local hub's data folder (default `HUBCKPT_HUB_ROOT`, else `~/.cache/hubckpt/hub`).
        start: start the local hub now if none serves `root` (otherwise nothing is started).

    Returns:
        The resolved `Hub`.

    Raises:
        HubConfigError: `hub` is none of the accepted values, or the data folder cannot be used.
    """
    value = hub or environment.hub()
    value = value.strip()
    if value == "local":
        data = local_root(root)
        endpoint = ensure_local_hub(data) if start else (running_local_hub(data) or "")
        return Hub(endpoint, "local", data)
    if value == "hf":
        return Hub(HF_ENDPOINT_URL, "remote")
    if value.startswith(("http://", "https://")):
        return Hub(value.rstrip("/"), "remote")
    raise HubConfigError(f"Unknown hub {value!r}: use 'local', 'hf', or a URL such as http://127.0.0.1:8900.")


def ensure_running(hub: Hub) -> Hub:
    """`hub`, with a server answering at its endpoint: a local hub not started yet is started now."""
    if hub.kind == "local" and not hub.endpoint:
        return Hub(ensure_local_hub(hub.root), "local", local_root(hub.root))
    return hub


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

    A local hub that is not running yet is started (`ensure_running`).

    Args:
        hub: a `Hub`, or a value `resolve_hub` accepts ("local", "hf", a URL, None).
        token: the token to send; None resolves per hub: huggingface_hub's stored token for huggingface.co
            only, `HUBCKPT_TOKEN` (or no token) for any other hub. False sends none.

    Returns:
        A `huggingface_hub.HfApi` whose every call goes to that hub.

    Raises:
        HubConfigError: the hub value is not valid, or the local hub cannot be started.
    """
    from huggingface_hub import HfApi

    from ..version import __version__

    resolved = ensure_running(hub if isinstance(hub, Hub) else resolve_hub(hub))
    return HfApi(
        endpoint=resolved.endpoint,
        token=resolve_token(resolved, token),
        library_name="hubckpt",
        library_version=__version__,
    )


def point_hf_clients_at(endpoint: str) -> None:
    """Make module-level huggingface_hub helpers (and so transformers' `from_pretrained`) use `endpoint`.

    huggingface_hub reads HF_ENDPOINT once, at import; this sets the two constants that its
    download helpers read at call time (see `hubckpt/hub/patches.py`). It changes process-wide state:
    prefer `hub_api(...)` or `endpoint=` where an API takes one.

    Args:
        endpoint: the hub's base URL, e.g. the one `hubckpt env` prints or `ensure_local_hub()` returns.
    """
    set_default_endpoint(endpoint)
