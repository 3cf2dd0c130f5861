"""Options shared by the commands that talk to a hub."""

from __future__ import annotations

from pathlib import Path

import typer

HubOpt = typer.Option(None, "--hub", help="local (default), hf, or a hub URL (env: HUBCKPT_HUB, HF_ENDPOINT).")
RootOpt = typer.Option(
    None, "--root", help="Data folder of the local hub (default: $HUBCKPT_HUB_ROOT or ~/.cache/hubckpt/hub)."
)
TokenOpt = typer.Option(
    None,
    "--token",
    help="Access token (default: for huggingface.co HF_TOKEN or the saved login; "
    "for any other hub HUBCKPT_TOKEN, never the huggingface.co token).",
)


def target(repo_id: str, hub: str | None, root: Path | None, token: str | None = None, private: bool = False):
    """The HubTarget for a command, announcing which hub and repo it uses."""
    from ..hub.select import resolve_hub
    from ..hub.writer import HubTarget
    from ..names import split_repo_id

    split_repo_id(repo_id)
    resolved = resolve_hub(hub, root=root, start=True)
    t = HubTarget(resolved, repo_id, token=token, private=private)
    typer.echo(f"Using {t.describe()}", err=True)
    return t
