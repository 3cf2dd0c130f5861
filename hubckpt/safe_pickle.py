"""The one place hubckpt reads pickles: `torch.load(weights_only=True)`, never anything looser.

Checkpoints come from other people. A pickle that needs a global outside torch's weights-only
allowlist is refused with an `UnsafeCheckpointError` naming the globals (found by disassembling the
pickle, never by running it) and the opt-in that allows a named global. There is no fallback to
unsafe loading. Legacy tar-format torch files are refused outright.
"""

from __future__ import annotations

import importlib
import logging
import pickle
import tarfile
import zipfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from .errors import CorruptCheckpointError, UnsafeCheckpointError, UnsupportedCheckpointError

logger = logging.getLogger(__name__)

ALLOW_HINT = "--allow-global {name} (Python: allow_globals=['{name}'])"

# Pickled names of functions are the modules' own: os.system is pickled as posix.system (nt.system on Windows).
_ALIASES = {"posix": "os", "nt": "os", "__builtin__": "builtins", "_io": "io", "_subprocess": "subprocess"}
# What a global can do when unpickled, for those no tensor or training state ever needs.
_MODULE_DANGERS = {
    "os": "runs commands or touches files",
    "subprocess": "runs a shell command",
    "pty": "runs a shell",
    "runpy": "runs Python code",
    "importlib": "imports any module",
    "shutil": "deletes or moves files",
    "socket": "opens network connections",
    "webbrowser": "opens a program",
    "ctypes": "calls native code",
    "code": "runs Python code",
    "sys": "changes the interpreter",
    "pickle": "unpickles more data, unchecked",
    "marshal": "loads code objects",
    "types": "builds code objects",
}
_NAME_DANGERS = {
    "os.system": "runs a shell command",
    "os.popen": "runs a shell command",
    "builtins.eval": "runs Python code",
    "builtins.exec": "runs Python code",
    "builtins.compile": "compiles Python code",
    "builtins.__import__": "imports any module",
    "builtins.open": "reads or writes any file",
    "builtins.getattr": "reaches any attribute (a way to any function)",
    "builtins.setattr": "changes any object",
    "builtins.breakpoint": "stops in a debugger",
    "builtins.input": "reads from the terminal",
}


def describe_global(name: str) -> tuple[str, str | None]:
    """(the name a user knows, what it does if it is dangerous) of a pickled `module.Name`.

    `posix.system` -> ("os.system", "runs a shell command"); `mypkg.Config` -> ("mypkg.Config", None).
    """
    module, _, attr = name.rpartition(".")
    root, dot, rest = module.partition(".")
    known = f"{_ALIASES.get(root, root)}{dot}{rest}.{attr}" if module else name
    danger = _NAME_DANGERS.get(known) or _MODULE_DANGERS.get(known.partition(".")[0])
    return known, danger


def refusal_message(path: Path, offending: list[str]) -> str:
    """Why a pickle was refused and what to do: the dangerous globals called so, the others allowable by name."""
    described = [(g, *describe_global(g)) for g in offending]
    dangerous = [(g, known, danger) for g, known, danger in described if danger]
    names = ", ".join(g if known == g else f"{g} (that is {known})" for g, known, _ in described) or "(unknown)"
    message = f"{path} needs globals outside the weights-only allowlist: {names}. Nothing from it was run."
    if dangerous:
        what = "; ".join(f"{known} {danger}" for _, known, danger in dangerous)
        flags = " ".join(f"--allow-global {g}" for g, _, _ in dangerous)
        return (
            f"{message} {what}: no checkpoint needs that, and unpickling this file would do it. Do not allow "
            f"it ({flags} would run it): this file is probably malicious. Ask its author for safetensors, or "
            "re-save its tensors from a trusted environment."
        )
    hint = " or ".join(ALLOW_HINT.format(name=g) for g in offending[:3]) or "--allow-global module.Name"
    return f"{message} If you trust this file's source, allow them by name: {hint}."


def _numpy_rng_globals() -> list:
    """What `np.random.get_state()` needs inside a pickle (transformers' rng_state.pth): plain arrays, no code."""
    try:
        import numpy as np
    except ImportError:  # pragma: no cover - numpy ships with torch
        return []
    out: list = [np.ndarray, np.dtype, type(np.dtype(np.uint32)), type(np.dtype(np.float64))]
    for module_name in ("numpy._core.multiarray", "numpy.core.multiarray"):
        try:
            out.append(importlib.import_module(module_name)._reconstruct)
            break
        except (ImportError, AttributeError):
            continue
    return out


def resolve_global(name: str) -> Any:
    """Import `module.Name` for an explicit user opt-in (`--allow-global`)."""
    module_name, _, attr = name.rpartition(".")
    if not module_name:
        raise UnsafeCheckpointError(f"--allow-global needs 'module.Name', got {name!r}")
    try:
        return getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as e:
        raise UnsafeCheckpointError(f"Cannot allow {name!r}: {e}") from e


def _is_legacy_tar(path: Path) -> bool:
    try:
        return tarfile.is_tarfile(path)
    except OSError:
        return False


def load(path: str | Path, *, allow_globals: Iterable[str] = (), mmap: bool = True) -> Any:
    """`torch.load(path, map_location="cpu", weights_only=True, mmap=...)` with hubckpt's errors.

    Args:
        allow_globals: `module.Name` strings the user explicitly trusts for this file.
    """
    import torch

    path = Path(path)
    if _is_legacy_tar(path):
        raise UnsupportedCheckpointError(
            f"{path} is a legacy tar-format torch file; it cannot be read safely. Re-save it with a current "
            "torch (torch.save) from a trusted environment.",
            str(path),
        )
    is_zip = zipfile.is_zipfile(path)
    extra = _numpy_rng_globals() + [resolve_global(g) for g in allow_globals]
    if allow_globals:
        logger.warning("loading %s with explicitly allowed globals: %s", path, ", ".join(allow_globals))
    try:
        with torch.serialization.safe_globals(extra):
            return torch.load(path, map_location="cpu", weights_only=True, mmap=mmap and is_zip)
    except pickle.UnpicklingError as e:
        offending = _unsafe_globals(path) if is_zip else []
        if not offending:
            offending = _globals_from_message(str(e))
        if offending or "Unsupported global" in str(e) or "weights_only" in str(e):
            raise UnsafeCheckpointError(
                refusal_message(path, offending),
                str(path),
                offending,
            ) from None
        raise CorruptCheckpointError(f"{path} is not a readable torch pickle: {e}", str(path)) from e
    except (RuntimeError, EOFError, ValueError, OSError, zipfile.BadZipFile, KeyError) as e:
        raise CorruptCheckpointError(f"{path} is truncated or corrupted ({type(e).__name__}: {e})", str(path)) from e


def _unsafe_globals(path: Path) -> list[str]:
    import torch

    try:
        return sorted(torch.serialization.get_unsafe_globals_in_checkpoint(str(path)))
    except Exception:  # noqa: BLE001 - best effort, for the message only
        return []


def _globals_from_message(message: str) -> list[str]:
    # torch says e.g. "Unsupported global: GLOBAL os.system was not an allowed global by default."
    import re

    return sorted(set(re.findall(r"GLOBAL ([\w.]+)", message)))
