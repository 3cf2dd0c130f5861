"""What the CLI tells a new user: help texts, partial results, protected revisions, errors that name the cause."""

from __future__ import annotations

import re

import pytest


def _commands():
    """(path, click command) for every command and subcommand of `hubckpt`."""
    import typer.main

    from hubckpt.cli import app

    def walk(cmd, path):
        yield path, cmd
        if hasattr(cmd, "list_commands"):
            ctx = cmd.context_class(cmd, info_name=path[-1])
            for name in cmd.list_commands(ctx):
                yield from walk(cmd.get_command(ctx, name), [*path, name])

    return list(walk(typer.main.get_command(app), ["hubckpt"]))


def test_every_option_of_every_command_has_help_that_survives_rendering(capsys):
    """`--keep-*` had no help; `[default: ...]` in a help text was eaten as Rich markup, leaving "hub ."."""
    from rich.text import Text

    from hubckpt.cli import main

    missing, mangled = [], []
    for path, cmd in _commands():
        for param in cmd.params:
            if param.param_type_name != "option" or param.name == "help":
                continue
            text = getattr(param, "help", None) or ""
            if not text.strip():
                missing.append(f"{' '.join(path)} {param.opts[0]}")
            elif Text.from_markup(text).plain != text:
                mangled.append(f"{' '.join(path)} {param.opts[0]}: {text!r}")
        with pytest.raises(SystemExit) as exit_:
            main([*path[1:], "--help"])
        assert exit_.value.code == 0
        rendered = capsys.readouterr().out
        dangling = [line for line in rendered.splitlines() if re.search(r"\w \.(\s|│|$)", line)]
        assert not dangling, f"{' '.join(path)} --help: {dangling}"
    assert not missing, f"options without help: {missing}"
    assert not mangled, f"help texts Rich would render differently: {mangled}"
