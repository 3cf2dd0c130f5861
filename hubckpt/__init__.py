"""hubckpt: publish every training checkpoint as a documented, loadable Hugging Face Hub revision.

`import hubckpt` stays light: the public names, listed once in `__init__.pyi`, load on first use
(the server, torch and transformers only when something needs them).
"""

import ast
import os

import lazy_loader


def _stub() -> tuple[list[str], dict[str, list[str]]]:
    """The submodules and names `__init__.pyi` lists (what `lazy_loader.attach_stub` reads), read through
    this package's own loader rather than a file path, so that a wheel, a zip or a checkout all work."""
    stub = __spec__.loader.get_data(os.path.join(os.path.dirname(__file__), "__init__.pyi"))
    submodules: list[str] = []
    names: dict[str, list[str]] = {}
    for node in ast.parse(stub).body:
        if isinstance(node, ast.ImportFrom) and node.level == 1:
            if node.module:
                names.setdefault(node.module, []).extend(alias.name for alias in node.names)
            else:
                submodules.extend(alias.name for alias in node.names)
    return submodules, names


__getattr__, __dir__, __all__ = lazy_loader.attach(__name__, *_stub())
