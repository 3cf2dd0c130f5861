"""`hubckpt env`: the shell lines that point huggingface_hub, transformers and hubckpt at one hub.

`eval "$(hubckpt env --root DIR)"` replaces the fixed `HF_ENDPOINT=http://127.0.0.1:8900` recipe: a
local hub over another data folder (or one that fell back to another port) has another URL, and only
the hub itself knows it.
"""

from __future__ import annotations

import shlex
from pathlib import Path

import typer

from ._options import HubOpt, RootOpt

EnvTokenOpt = typer.Option(
    None,
    "--token",
    help="Token to export as HUBCKPT_TOKEN and HF_TOKEN (what the stock clients send to HF_ENDPOINT); for a hub "
    "other than huggingface.co it replaces your huggingface.co HF_TOKEN in that shell. Without it, such a hub gets "
    "no token from the stock clients (HF_TOKEN unset, HF_HUB_DISABLE_IMPLICIT_TOKEN=1).",
)


def env_lines(hub: str | None = None, root: Path | None = None, token: str | None = None) -> list[str]:
    """The `export` / `unset` lines for the hub `--hub` / `--root` name; a local hub is started if needed."""
    from ..hub.retries import check_reachable
    from ..hub.select import resolve_hub

    resolved = resolve_hub(hub, root=root, start=True)
    check_reachable(resolved.endpoint)
    lines = [f"export HF_ENDPOINT={shlex.quote(resolved.endpoint)}"]
    if resolved.kind == "local":
        # hubckpt finds (or restarts) the hub of this folder by itself, whatever its port is then
        lines += ["export HUBCKPT_HUB=local", f"export HUBCKPT_HUB_ROOT={shlex.quote(str(resolved.root))}"]
    else:
        lines.append(f"export HUBCKPT_HUB={'hf' if resolved.is_huggingface_co else shlex.quote(resolved.endpoint)}")
    # the local hub and other hubs speak LFS, not Xet; huggingface.co keeps Xet
    lines.append("unset HF_HUB_DISABLE_XET" if resolved.is_huggingface_co else "export HF_HUB_DISABLE_XET=1")
    if token:
        lines += [f"export HUBCKPT_TOKEN={shlex.quote(token)}", f"export HF_TOKEN={shlex.quote(token)}"]
        lines.append("unset HF_HUB_DISABLE_IMPLICIT_TOKEN")  # the stock clients send HF_TOKEN to HF_ENDPOINT
    elif resolved.is_huggingface_co:
        lines.append("unset HF_HUB_DISABLE_IMPLICIT_TOKEN")  # your huggingface.co token / login, for huggingface.co
    else:
        # The stock clients would send the huggingface.co token (HF_TOKEN, or the saved login) to whatever
        # HF_ENDPOINT names: none of it goes to another hub.
        lines += ["unset HF_TOKEN", "export HF_HUB_DISABLE_IMPLICIT_TOKEN=1"]
    return lines


def env(hub: str | None = HubOpt, root: Path | None = RootOpt, token: str | None = EnvTokenOpt) -> None:
    """Print the lines to `eval` that point the hf CLI, transformers and hubckpt at a hub.

    eval "$(hubckpt env --root DIR)": the local hub over DIR, started in the background if need be.
    """
    from ..hub.select import resolve_hub

    hub = hub or ("local" if root else None)  # --root names a local hub's folder, whatever HF_ENDPOINT says now
    for line in env_lines(hub, root, token):
        typer.echo(line)
    resolved = resolve_hub(hub, root=root)
    typer.echo(f"# {resolved.describe()}", err=True)
    if token and not resolved.is_huggingface_co:
        typer.echo(
            "# HF_TOKEN is now this hub's token: in this shell it replaces your huggingface.co token, and the hf "
            "CLI, transformers and hubckpt --hub hf would send it to huggingface.co (open another shell for "
            "huggingface.co)",
            err=True,
        )
    if resolved.kind == "local" and not token and _needs_token(resolved.root):
        typer.echo(
            "# this hub requires a token: create one (hubckpt token create --user NAME --role write --root "
            f"{shlex.quote(str(resolved.root))}) and pass it with --token",
            err=True,
        )


def _needs_token(root: Path | None) -> bool:
    from ..server.storage import open_data_folder

    if root is None:
        return False
    try:
        return bool(open_data_folder(root).auth_required())
    except Exception:  # noqa: BLE001 - only a hint
        return False
