"""Optional dependencies: each is an extra of the package, imported only by the feature that needs it.

| extra      | brings       | for                                                              |
|------------|--------------|------------------------------------------------------------------|
| `analysis` | matplotlib   | the PNG plots of `hubckpt analyze` / `hubckpt.analysis.plots`    |
| `trainer`  | accelerate   | the transformers `Trainer` (and so `HubckptCallback`)            |
| `docs`     | mkdocs-*     | building the documentation site                                  |
| `dev`      | all of these | the test suite, lint, type checks, building the wheel            |

Without its extra a feature stops at once with one line naming it (`MissingExtraError`, which the CLI
prints without a traceback), before any long work.
"""

from __future__ import annotations

import importlib
from types import ModuleType

from .errors import MissingExtraError


def require(module: str, *, extra: str, feature: str) -> ModuleType:
    """Import `module`, or raise `MissingExtraError` naming the extra that installs it.

    Only a missing `module` becomes that one line; an installed one that fails to import (a broken
    installation) keeps its own error as the cause.
    """
    try:
        return importlib.import_module(module)
    except ImportError as e:
        if e.name is not None and module.split(".")[0] != e.name.split(".")[0]:
            raise MissingExtraError(extra, feature, module) from e
        raise MissingExtraError(extra, feature, module) from None
