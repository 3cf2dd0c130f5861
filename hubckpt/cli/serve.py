"""`hubckpt serve` and `hubckpt stop`: run the local hub in the foreground, stop a background one."""

from __future__ import annotations

import signal
import socket
from pathlib import Path

import typer

from ..hub.local import forget_server, local_root, record_server, stop_local_hub

RootOpt = typer.Option(
    None, "--root", help="Data folder of the local hub (default: $HUBCKPT_HUB_ROOT or ~/.cache/hubckpt/hub)."
)


def serve(
    root: Path | None = RootOpt,
    host: str = typer.Option("127.0.0.1", help="Address to listen on. Non-loopback addresses need tokens."),
    port: int = typer.Option(8900, help="Port to listen on (0 picks a free one)."),
    port_fallback: bool = typer.Option(False, "--port-fallback", help="If the port is taken, pick a free one."),
    user: str = typer.Option("local", help="Name of the local user (single-user mode, and owner of new repos)."),
    quiet: bool = typer.Option(False, "--quiet", help="Print only the URL."),
    commit_rate: str | None = typer.Option(
        None,
        "--commit-rate",
        help="Commits per repo per window, as huggingface.co limits them: N/PERIOD, e.g. 128/h, 6/min, 6/10s "
        "(default: $HUBCKPT_COMMIT_RATE, else no limit). The (N+1)-th commit within PERIOD gets the Hub's 429.",
    ),
) -> None:
    """Serve the Hugging Face Hub HTTP API over a data folder, offline."""
    import uvicorn

    from .. import environment
    from ..errors import HubUnavailableError
    from ..priority import IDLE, idle_class_supported
    from ..server import HubContext, bind_socket, check_exposure, create_app, uvicorn_config
    from ..server.dataplane import DataPlane

    data = local_root(root)
    rate = commit_rate or environment.commit_rate()
    ctx = HubContext.open(data, local_user=user, commit_rate=rate)
    check_exposure(ctx, host)
    try:
        sock = bind_socket(host, port)
    except HubUnavailableError:
        if not port_fallback:
            raise
        sock = bind_socket(host, 0)
    bound = sock.getsockname()
    shown_host = f"[{bound[0]}]" if ":" in bound[0] else bound[0]
    url = f"http://{shown_host}:{bound[1]}"
    record_server(data, url)  # how `hubckpt` finds this server (hub/local.py)
    if quiet:
        typer.echo(url)
    else:
        mode = "single-user (no tokens; loopback only)" if ctx.single_user else "token authentication"
        # 0.0.0.0 / :: is where it listens, not an address another machine can use: show this host's name.
        reach = f"http://{socket.gethostname()}:{bound[1]}" if bound[0] in ("0.0.0.0", "::") else url
        where = f"{url} (all interfaces; from other machines: {reach})" if reach != url else url
        typer.echo(
            f"hubckpt local hub serving {data}\n  URL:  {where}\n  web:  {reach}/  (browse repos, revisions, "
            f"cards)\n  mode: {mode}\n"
            + (f"  commit budget: {ctx.commit_budget.rate} per repo\n" if ctx.commit_budget else "")
            + f"Use it with huggingface_hub / the hf CLI / transformers:\n"
            f"  export HF_ENDPOINT={reach} HF_HUB_DISABLE_XET=1\nPress Ctrl-C to stop."
        )
    config = uvicorn_config(create_app(ctx))
    # Its own process: idle-class upload threads delay nobody else's GIL (dataplane.py).
    data_plane = DataPlane(ctx, host, upload_priority=IDLE if idle_class_supported() else None).start()
    # uvicorn re-raises the stop signal after its graceful shutdown; a no-op handler lets this
    # function finish normally instead (clean exit, server.json removed).
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: None)
    try:
        uvicorn.Server(config).run(sockets=[sock])
        if not quiet:
            typer.echo("Local hub stopped.")
    finally:
        forget_server(data)
        data_plane.stop()
        ctx.store.close()


def stop(root: Path | None = RootOpt) -> None:
    """Stop the local hub serving a data folder (started by `serve` or in the background)."""
    data = local_root(root)
    if stop_local_hub(data):
        typer.echo(f"Stopped the local hub serving {data}.")
    else:
        typer.echo(f"No local hub is serving {data}.")
