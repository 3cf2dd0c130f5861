"""The `hubckpt` command line: the one place that prints, and the error boundary.

Known errors (hubckpt's own and huggingface_hub's) become one line on stderr and exit code 1;
`--debug` or `HUBCKPT_DEBUG=1` shows the traceback instead.
"""

from __future__ import annotations

import logging
import os
import sys
from typing import Any

import typer

from hubckpt import environment

from . import accounts, analyze, convert, demo, diff, env, jobs, mirror, publish, pull, revisions, serve

app = typer.Typer(
    name="hubckpt",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    help="Publish training checkpoints as Hugging Face Hub revisions; run the offline local hub.",
)
app.command("serve")(serve.serve)
app.command("stop")(serve.stop)
app.command("env")(env.env)
app.command("demo")(demo.demo)
app.command("convert")(convert.convert)
app.command("publish")(publish.publish)
app.command("watch")(publish.watch)
app.command("resume")(publish.resume)
app.command("jobs")(jobs.jobs)
app.command("ls")(revisions.ls)
app.command("show")(revisions.show)
app.command("pull")(pull.pull)
app.command("diff")(diff.diff)
app.command("tag")(revisions.tag)
app.command("prune")(revisions.prune)
app.command("reindex")(revisions.reindex)
app.command("analyze")(analyze.analyze)
app.command("mirror")(mirror.mirror)
app.add_typer(accounts.user_app, name="user")
app.add_typer(accounts.org_app, name="org")
app.add_typer(accounts.token_app, name="token")

_DEBUG_HINT = "(run with --debug or HUBCKPT_DEBUG=1 for the full traceback)"


@app.callback()
def _root(
    debug: bool = typer.Option(False, "--debug", help="Show tracebacks and debug logs."),
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Show info logs."),
) -> None:
    if debug:
        os.environ[environment.DEBUG.name] = "1"
    level = logging.DEBUG if debug else logging.INFO if verbose else logging.WARNING
    from ._terminal import EscapingFormatter

    log_format = "%(levelname)s %(name)s: %(message)s"
    logging.basicConfig(level=level, format=log_format)
    for handler in logging.getLogger().handlers:  # an error the command reports itself is printed once, as `Error:`
        handler.addFilter(lambda record: debug or not getattr(record, "hubckpt_reported", False))
        handler.setFormatter(EscapingFormatter(log_format))


def _known_errors() -> tuple[type[BaseException], ...]:
    from huggingface_hub.errors import HfHubHTTPError, HFValidationError

    from ..errors import HubckptError

    return (HubckptError, HfHubHTTPError, HFValidationError, ConnectionError)


def _one_line(e: BaseException) -> str:
    """A short message: huggingface_hub's errors carry several lines of generic advice."""
    from huggingface_hub.errors import HfHubHTTPError, RepositoryNotFoundError, RevisionNotFoundError

    from ..errors import HubckptError

    response = getattr(e, "response", None)
    url = str(getattr(response, "url", "")) if response is not None else ""
    if isinstance(e, HubckptError):  # ours say what was wrong and what to do, even those that are also the client's
        return str(e).strip().replace("\n\n", "\n")
    if isinstance(e, RepositoryNotFoundError):
        return (
            f"Repository not found ({url}). Check the repo id and --hub; for a private repo pass a token "
            "with access (--token; or HF_TOKEN for huggingface.co, HUBCKPT_TOKEN for other hubs)."
        )
    if isinstance(e, RevisionNotFoundError):
        return f"Revision not found ({url}). See the repo's revisions with `hubckpt ls REPO`."
    if isinstance(e, HfHubHTTPError):
        server = getattr(e, "server_message", None) or ""
        status = getattr(response, "status_code", "")
        return f"{status} from the hub for {url}: {server or str(e).splitlines()[0]}".strip()
    return str(e).strip().replace("\n\n", "\n")


def main(argv: list[str] | None = None) -> None:
    """Entry point of the `hubckpt` console script."""
    from ._terminal import escape_controls, escaped_output

    try:
        with escaped_output():
            # Not standalone, click returns the code of a `typer.Exit(n)` instead of exiting with it
            code = app(args=argv, standalone_mode=False)
    except SystemExit:
        raise
    except KeyboardInterrupt:
        print("Interrupted.", file=sys.stderr)
        sys.exit(130)
    except Exception as e:  # noqa: BLE001 - this is the CLI's error boundary
        # typer ships its own copy of click: take its exception classes from typer's public ones.
        # (typed Any: its show() and exit_code are click's, which typer does not re-export)
        click_exception: type[Any] = next(c for c in typer.BadParameter.__mro__ if c.__name__ == "ClickException")
        if isinstance(e, typer.Abort):
            sys.exit(130)
        if isinstance(e, click_exception):
            e.show()
            sys.exit(e.exit_code)
        if isinstance(e, typer.Exit):
            sys.exit(e.exit_code)
        if environment.debug() or not isinstance(e, _known_errors()):
            raise
        print(f"Error: {escape_controls(_one_line(e))}\n{_DEBUG_HINT}", file=sys.stderr)
        sys.exit(1)
    sys.exit(code if isinstance(code, int) else 0)
