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
            names = ", ".join(offending) or "(unknown)"
            hint = " or ".join(ALLOW_HINT.format(name=g) for g in offending[:3]) or "--allow-global module.Name"
            raise UnsafeCheckpointError(
                f"{path} needs globals outside the weights-only allowlist: {names}. Nothing from it was run. "
                f"If you trust this file's source, allow them by name: {hint}.",
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
