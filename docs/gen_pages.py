"""Pages generated from the code at build time (run by mkdocs-gen-files; see mkdocs.yml).

- `reference/api/*.md`: one `::: hubckpt.Name` per public name, read from `hubckpt/__init__.pyi` (the one
  list of the public API), so a new public name cannot be left out and a moved module changes nothing here.
- `reference/cli.md`: every command of the `hubckpt` CLI, walked from its click tree.
- `reference/environment.md`: the table of environment variables, from `hubckpt.environment.VARIABLES`.
- `performance.md`: `bench/README.md`, where the benchmark figures live.
- `troubleshooting.md`'s error list: every class in `hubckpt/errors.py`, with its "What to do" section.

Each `render_*` function returns Markdown and imports nothing from mkdocs, so tests/test_docs.py checks the
same output without building the site.
"""

from __future__ import annotations

import ast
import inspect
import re
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
STUB = ROOT / "hubckpt" / "__init__.pyi"
ERRORS = ROOT / "hubckpt" / "errors.py"

# Reference pages: (file stem, title, intro, names). A public name not listed here lands on "other", so
# the reference always covers `__init__.pyi` whole; tests/test_docs.py checks it.
GROUPS: list[tuple[str, str, str, list[str]]] = [
    (
        "publishing",
        "Publishing",
        "Publish checkpoints while training runs or afterwards. Guide: [Publish during training](../../publish.md).",
        [
            "Checkpointer",
            "Publisher",
            "PublishedRevision",
            "Retention",
            "CardOptions",
            "render_revision_name",
            "commit_folder",
        ],
    ),
    (
        "loading",
        "Loading and browsing",
        "Find, load and read revisions. Guide: [Load and browse](../../load.md).",
        [
            "list_revisions",
            "resolve_revision",
            "load_model",
            "load_state_dict",
            "open_revision",
            "LazyRevision",
            "iter_revisions",
            "pull_revision",
            "RevisionIndex",
            "RevisionInfo",
            "HubReader",
        ],
    ),
    (
        "resume",
        "Exact resume",
        "Put a revision's whole training state back. Guide: [Exact resume](../../resume.md).",
        ["restore", "Restored", "capture_rng", "restore_rng", "load_training_state"],
    ),
    (
        "conversion",
        "Reading and converting checkpoints",
        "Checkpoints on disk to safetensors revisions. Guide: [Convert checkpoints](../../convert.md).",
        ["convert", "ConvertResult", "discover", "read_checkpoint", "Checkpoint"],
    ),
    ("analysis", "Analysis", "Representations across training. Guide: [Analysis](../../analysis.md).", ["analyze"]),
    (
        "hubs",
        "Hubs and the local hub",
        "Choose a hub, start the local one. Guides: [The local hub](../../local-hub.md), "
        "[huggingface.co and other hubs](../../hubs.md).",
        [
            "Hub",
            "resolve_hub",
            "hub_api",
            "ensure_local_hub",
            "point_hf_clients_at",
            "LocalHubServer",
            "mirror",
            "MirrorResult",
            "MirrorProgress",
        ],
    ),
    (
        "errors",
        "Errors",
        "Every public error class. What each means and what to do: [Troubleshooting](../../troubleshooting.md).",
        [],  # filled with every public name defined in hubckpt.errors
    ),
]


# -- the public API ---------------------------------------------------------------------------------------


def public_names(stub: Path = STUB) -> dict[str, str]:
    """Public name -> the module it comes from, as `__init__.pyi` lists them (`from .x import Y as Y`)."""
    names: dict[str, str] = {}
    for node in ast.parse(stub.read_text()).body:
        if isinstance(node, ast.ImportFrom) and node.level == 1:
            for alias in node.names:
                if alias.asname == alias.name:
                    names[alias.name] = node.module or ""
    return names


def reference_groups(stub: Path = STUB) -> list[tuple[str, str, str, list[str]]]:
    """The reference pages with their names: GROUPS, the errors, then every public name left over."""
    names = public_names(stub)
    documented = [n for n in names if not (n.startswith("__") and n.endswith("__"))]
    groups = []
    placed: set[str] = set()
    for stem, title, intro, members in GROUPS:
        if stem == "errors":
            members = [n for n in documented if names[n] == "errors"]
        members = [n for n in members if n in names]
        placed.update(members)
        groups.append((stem, title, intro, members))
    rest = [n for n in documented if n not in placed]
    if rest:
        groups.append(("other", "Other", "Public names not yet sorted into a page above.", rest))
    return groups


def render_api_page(title: str, intro: str, members: list[str]) -> str:
    lines = [f"# {title}", "", intro, ""]
    for name in members:
        lines += [f"::: hubckpt.{name}", ""]
    return "\n".join(lines)


def render_api_index(groups: list[tuple[str, str, str, list[str]]]) -> str:
    lines = [
        "# API reference",
        "",
        "Everything below is importable from `hubckpt` itself (`hubckpt.Name`); that is the stable path.",
        "The list is generated from `hubckpt/__init__.pyi`, the one list of the public API, and each entry",
        "from its docstring. `hubckpt.__version__` holds the version.",
        "",
    ]
    for stem, title, _intro, members in groups:
        links = ", ".join(f"[`{n}`]({stem}.md#hubckpt.{n})" for n in members)
        lines += [f"- **[{title}]({stem}.md)**: {links}"]
    return "\n".join(lines) + "\n"


# -- the CLI ----------------------------------------------------------------------------------------------


def _cell(text: str) -> str:
    return " ".join(text.split()).replace("|", "\\|")


def render_cli() -> str:
    import typer.main

    from hubckpt.cli import app

    root = typer.main.get_command(app)
    lines = [
        "# CLI reference",
        "",
        "Generated from the `hubckpt` command itself (`hubckpt COMMAND --help` prints the same). Every command",
        "says which hub and repo it uses; errors are one line on stderr and exit code 1 (`hubckpt --debug ...`",
        "or `HUBCKPT_DEBUG=1` shows the traceback).",
        "",
    ]

    def walk(cmd, ctx, path: list[str]) -> None:  # typer's click: typer.core.TyperGroup / TyperCommand
        if cmd.hidden:
            return
        heading = "#" * min(len(path) + 1, 4)
        lines.append(f"{heading} `{' '.join(path)}`")
        lines.append("")
        if cmd.help:
            lines.extend([inspect.cleandoc(cmd.help).split("\b")[0].strip(), ""])
        pieces = []
        for param in cmd.params:
            if param.param_type_name == "argument":
                name = (param.metavar or param.name or "").upper()
                pieces.append(name if param.required else f"[{name}]")
        is_group = hasattr(cmd, "list_commands")
        usage = " ".join([*path, "[OPTIONS]", *pieces] + (["COMMAND [ARGS]..."] if is_group else []))
        lines.extend(["```", usage, "```", ""])
        rows = []
        for param in cmd.params:
            if getattr(param, "hidden", False):
                continue
            record = param.get_help_record(ctx)
            if record is None:
                continue
            name, text = record
            if param.param_type_name == "argument":
                name = (param.metavar or param.name or "").upper()
            rows.append(f"| `{_cell(name)}` | {_cell(text)} |")
        if rows:
            lines.extend(["| Argument / option | Description |", "|---|---|", *rows, ""])
        if is_group:
            for sub_name in cmd.list_commands(ctx):
                sub = cmd.get_command(ctx, sub_name)
                if sub is not None:
                    walk(sub, sub.context_class(sub, info_name=sub_name, parent=ctx), [*path, sub_name])

    walk(root, root.context_class(root, info_name="hubckpt"), ["hubckpt"])
    return "\n".join(lines) + "\n"


# -- environment variables --------------------------------------------------------------------------------


def render_environment() -> str:
    from hubckpt.environment import VARIABLES

    lines = [
        "# Environment variables",
        "",
        "Generated from `hubckpt/environment.py`, the one module that reads them. Options passed in code or on",
        "the command line win over these.",
        "",
        "| Variable | Default | Meaning |",
        "|---|---|---|",
    ]
    for var in VARIABLES:
        default = "(unset)" if var.default is None else f"`{var.default}`" if var.default else '`""`'
        lines.append(f"| `{var.name}` | {default} | {_cell(var.description)} |")
    return "\n".join(lines) + "\n"


# -- errors -----------------------------------------------------------------------------------------------


def error_class_names(path: Path = ERRORS) -> list[str]:
    """Every class defined in `hubckpt/errors.py`, wherever in the module (lazily built ones included)."""
    seen: list[str] = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ClassDef) and node.name not in seen:
            seen.append(node.name)
    return seen


def _what_to_do(doc: str) -> tuple[str, str]:
    """(description, what to do) from a Google-style docstring with a `What to do:` section."""
    doc = inspect.cleandoc(doc)
    match = re.search(r"^What to do:\n((?:[ \t]+.*\n?|\n)+)", doc, flags=re.MULTILINE)
    fix = textwrap.dedent(match.group(1)).strip() if match else ""
    head = doc[: match.start()] if match else doc
    head = re.split(r"^(?:Args|Attributes|Raises|Returns):\n", head, flags=re.MULTILINE)[0]
    return " ".join(head.split()), " ".join(fix.split())


def render_errors() -> str:
    import hubckpt.errors as errors

    public = set(public_names())
    blocks = []
    for name in error_class_names():
        cls = getattr(errors, name)
        description, fix = _what_to_do(cls.__doc__ or "")
        if not fix:
            raise ValueError(f"hubckpt.errors.{name} has no 'What to do:' section in its docstring")
        bases = [b for b in cls.__bases__ if b is not Exception]
        parents = ", ".join(f"`{b.__name__}`" for b in bases)
        where = f"[`hubckpt.{name}`](reference/api/errors.md#hubckpt.{name})" if name in public else f"`{name}`"
        blocks += [
            f"### {name}",
            "",
            f"{where} — is a {parents}." if parents else where,
            "",
            description,
            "",
            f"**What to do:** {fix}",
            "",
        ]
    return "\n".join(blocks)


def render_troubleshooting(template: Path) -> str:
    return template.read_text().replace("<!-- ERRORS -->", render_errors())


# -- mkdocs-gen-files entry point -------------------------------------------------------------------------


def main() -> None:
    import mkdocs_gen_files

    groups = reference_groups()
    with mkdocs_gen_files.open("reference/api/index.md", "w") as f:
        f.write(render_api_index(groups))
    for stem, title, intro, members in groups:
        with mkdocs_gen_files.open(f"reference/api/{stem}.md", "w") as f:
            f.write(render_api_page(title, intro, members))
    with mkdocs_gen_files.open("reference/api/SUMMARY.md", "w") as f:
        f.write("- [Overview](index.md)\n" + "".join(f"- [{t}]({s}.md)\n" for s, t, _i, _m in groups))
    with mkdocs_gen_files.open("reference/cli.md", "w") as f:
        f.write(render_cli())
    with mkdocs_gen_files.open("reference/environment.md", "w") as f:
        f.write(render_environment())
    with mkdocs_gen_files.open("performance.md", "w") as f:  # the figures live in bench/README.md
        f.write((ROOT / "bench" / "README.md").read_text().replace("# Benchmarks", "# Performance", 1))
    with mkdocs_gen_files.open("troubleshooting.md", "w") as f:
        f.write(render_troubleshooting(ROOT / "docs" / "troubleshooting.md"))


if __name__ in ("__main__", "<run_path>"):
    main()
