"""`hubckpt user|org|token ...`: manage the local hub's accounts and access tokens."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import typer

from ..errors import AuthError
from ..hub.local import local_root

user_app = typer.Typer(help="Users of the local hub.", no_args_is_help=True)
org_app = typer.Typer(help="Organisations of the local hub.", no_args_is_help=True)
token_app = typer.Typer(help="Access tokens of the local hub (stored hashed).", no_args_is_help=True)

RootOpt = typer.Option(
    None, "--root", help="Data folder of the local hub (default: $HUBCKPT_HUB_ROOT or ~/.cache/hubckpt/hub)."
)


def _store(root: Path | None):
    from ..server.storage import open_data_folder

    return open_data_folder(local_root(root))


def _validated(name: str, kind: str) -> str:
    from ..names import validate_repo_part

    return validate_repo_part(name, kind)


@user_app.command("add")
def user_add(
    name: str,
    fullname: str | None = typer.Option(None, help="Display name."),
    org: list[str] = typer.Option([], "--org", help="Organisation to join (repeatable; created if new)."),
    root: Path | None = RootOpt,
) -> None:
    """Create a user (and add it to organisations)."""
    store = _store(root)
    store.add_account(_validated(name, "user name"), "user", fullname, exist_ok=False)
    for o in org:
        store.add_member(_validated(o, "organisation name"), name)
    typer.echo(f"User {name} created" + (f" (member of {', '.join(org)})" if org else "") + ".")


@user_app.command("list")
def user_list(root: Path | None = RootOpt) -> None:
    """List users and organisations."""
    store = _store(root)
    for row in store.list_accounts():
        extra = ""
        if row["kind"] == "user":
            orgs = store.orgs_of(row["name"])
            extra = f"  orgs: {', '.join(orgs)}" if orgs else ""
        typer.echo(f"{row['kind']:<5} {row['name']}{extra}")


@org_app.command("add")
def org_add(
    name: str,
    member: list[str] = typer.Option([], "--member", help="User to add (repeatable)."),
    fullname: str | None = typer.Option(
        None, "--fullname", help="Display name (whoami shows it); also updates an existing organisation."
    ),
    root: Path | None = RootOpt,
) -> None:
    """Create an organisation (and add members)."""
    store = _store(root)
    store.add_account(_validated(name, "organisation name"), "org", fullname)
    for user in member:
        store.add_member(name, user)
    typer.echo(f"Organisation {name} ready" + (f" with {', '.join(member)}" if member else "") + ".")


@token_app.command("create")
def token_create(
    user: str = typer.Option(..., "--user", help="Owner of the token."),
    role: str = typer.Option("write", "--role", help="read or write."),
    name: str | None = typer.Option(None, "--name", help="Display name (default: <role>-<n>)."),
    value_env: str | None = typer.Option(
        None,
        "--value-env",
        help="Register the value of this environment variable instead of generating one (CI secrets).",
    ),
    value_stdin: bool = typer.Option(
        False, "--value-stdin", help="Register the value read from stdin instead of generating one."
    ),
    root: Path | None = RootOpt,
) -> None:
    """Create a token (printed once) or register an existing value. Once a hub has a token, it requires them."""
    value = None
    if value_env and value_stdin:
        raise AuthError("Use either --value-env or --value-stdin, not both.")
    if value_env:
        value = os.environ.get(value_env)
        if not value:
            raise AuthError(f"Environment variable {value_env} is not set or empty.")
    elif value_stdin:
        value = sys.stdin.readline().strip()
    store = _store(root)
    display = name or f"{role}-{len(store.list_tokens(user)) + 1}"
    info, secret = store.create_token(user, role, display, value)
    if value is None:
        typer.echo(secret)
        typer.echo(
            f"Token {info.id} ({info.display_name}, {info.role}) for {info.user}: shown once, store it now.", err=True
        )
    else:
        typer.echo(f"Registered token {info.id} ({info.display_name}, {info.role}) for {info.user}.")


@token_app.command("list")
def token_list(
    user: str | None = typer.Option(None, "--user", help="Only this user's tokens."), root: Path | None = RootOpt
) -> None:
    """List tokens (never their values)."""
    store = _store(root)
    tokens = store.list_tokens(user)
    if not tokens and not store.auth_required():
        typer.echo("No tokens: the hub runs single-user, on loopback only.")
    elif not tokens:
        typer.echo(
            "No tokens" + (f" for {user}" if user else "") + ": authentication is on, so nobody can "
            "use this hub without one. Create one (hubckpt token create) or turn authentication off "
            "(hubckpt token auth-off)."
        )
    for t in tokens:
        typer.echo(f"{t.id:>4}  {t.user:<16} {t.role:<5} {t.display_name:<20} ...{t.hint}  created {t.created_at}")


@token_app.command("revoke")
def token_revoke(token_id: int, root: Path | None = RootOpt) -> None:
    """Revoke a token by id (see `hubckpt token list`)."""
    info = _store(root).revoke_token(token_id)
    typer.echo(f"Revoked token {info.id} ({info.display_name}) of {info.user}.")


@token_app.command("auth-off")
def token_auth_off(root: Path | None = RootOpt) -> None:
    """Turn authentication off (single-user mode) once every token is revoked.

    Refused while a server of this data folder listens beyond loopback: it would serve everyone as
    the local user, with write access.
    """
    from ..hub.local import running_local_hub
    from ..server import is_loopback

    data = local_root(root)
    url = running_local_hub(data)
    if url is not None:
        from urllib.parse import urlsplit

        host = urlsplit(url).hostname or ""
        if not is_loopback(host):
            raise AuthError(
                f"Refusing to turn authentication off: the hub serving {data} listens on {url}, beyond "
                "loopback. Stop it (hubckpt stop) or restart it on 127.0.0.1 first."
            )
    _store(data).disable_auth()
    typer.echo(f"Authentication is off: the hub over {data} serves its local user only, on loopback only.")
