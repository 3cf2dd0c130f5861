"""docs/architecture.md's package map names every module of the package, and nothing that is gone."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import hubckpt

PACKAGE = Path(hubckpt.__file__).parent
MAP = PACKAGE.parent / "docs" / "architecture.md"
ENTRY = re.compile(r"^( *)([\w.]+/?)")


def _mapped() -> set[str]:
    """Paths the map's tree names (relative to the package), from its indentation: two spaces a level."""
    text = MAP.read_text()
    block = text[text.index("```\nhubckpt/\n") + 4 :]
    block = block[: block.index("```")]
    folders: list[str] = []
    paths = set()
    for line in block.splitlines()[1:]:
        match = ENTRY.match(line)
        if not match or len(match[1]) % 2 or not line.strip():
            continue
        depth = len(match[1]) // 2 - 1
        if depth < 0 or depth > len(folders):
            continue  # a continuation of the line above, or what follows the tree
        del folders[depth:]
        name = match[2]
        if name.endswith("/"):
            folders.append(name.rstrip("/"))
        else:
            paths.add("/".join([*folders, name]))
    return paths


def _modules() -> set[str]:
    """Every module, but an `__init__.py` that only hands names on (defines no function or class)."""
    out = set()
    for path in PACKAGE.rglob("*.py"):
        rel = path.relative_to(PACKAGE).as_posix()
        if path.name == "__init__.py" and path.parent != PACKAGE:
            tree = ast.parse(path.read_text())
            if not any(isinstance(n, (ast.FunctionDef, ast.ClassDef)) for n in ast.walk(tree)):
                continue
        out.add(rel)
    return out


def test_the_architecture_map_names_every_module():
    mapped, modules = _mapped(), _modules()
    missing = sorted(modules - mapped)
    assert not missing, f"docs/architecture.md's map lacks {missing}: add one line each, saying what it does"
    gone = sorted(p for p in mapped - modules if not (PACKAGE / p).exists())
    assert not gone, f"docs/architecture.md's map names modules that are gone: {gone}"
