"""Readers: recognise a checkpoint by its content and read it into a `Checkpoint`.

Formats: transformers Trainer `checkpoint-N/` folders and any folder of weights (safetensors or .bin,
sharded or not), `torch.save` files (bare state dicts, nanoGPT-style dicts, `_orig_mod.` prefixes),
Lightning `.ckpt`, safetensors files, torch.distributed.checkpoint folders, and run folders holding
many of these (`discover`). Pickles are only ever read weights-only (`hubckpt.safe_pickle`).
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from ..checkpoint import Checkpoint
from ..errors import UnsupportedCheckpointError
from .detect import sniff_file, sniff_folder
from .run import discover
from .steps import step_from_name

__all__ = ["read_checkpoint", "discover", "kind_of", "peek_step", "step_from_name"]


def kind_of(path: str | Path) -> str:
    """What `path` holds: 'run' (many checkpoints), 'dcp', 'weights-folder', or a file kind."""
    path = Path(path)
    if path.is_dir():
        return sniff_folder(path)
    if path.is_file():
        return sniff_file(path)
    raise UnsupportedCheckpointError(f"{path} does not exist", str(path))


def read_checkpoint(path: str | Path, *, allow_globals: Iterable[str] = ()) -> Checkpoint:
    """Read one checkpoint (file or folder). A run folder is refused here: use `discover` first.

    Pickles are read with `torch.load(weights_only=True)` only; nothing in them is run.

    Args:
        path: a Trainer `checkpoint-N/` folder, a safetensors file or folder, a `torch.save` file
            (state dict, nanoGPT, Lightning `.ckpt`) or a torch.distributed.checkpoint folder.
        allow_globals: pickle globals (`module.Name`) to trust beyond the weights-only allowlist.

    Returns:
        The `Checkpoint`: weights, training state, step, metrics, companion files.

    Raises:
        UnsupportedCheckpointError: a missing path, a run folder, or a format hubckpt does not read.
        CorruptCheckpointError: a truncated, malformed or inconsistent file.
        UnsafeCheckpointError: a pickle needs globals outside the allowlist and `allow_globals`.
    """
    path = Path(path)
    kind = kind_of(path)
    if kind == "run":
        raise UnsupportedCheckpointError(
            f"{path} holds several checkpoints ({len(discover(path))}); read them one by one (see discover())",
            str(path),
        )
    if kind == "dcp":
        from .dcp import read_dcp

        return read_dcp(path)
    if kind == "weights-folder":
        from .weights_folder import read_weights_folder

        return read_weights_folder(path, allow_globals=allow_globals)
    from .torch_file import read_torch_file

    return read_torch_file(path, allow_globals=allow_globals)


def peek_step(path: str | Path, *, allow_globals: Iterable[str] = ()) -> tuple[int | None, int | None]:
    """(step, tokens) of a checkpoint without reading its weights, as `read_checkpoint` would find them.

    Folders: `trainer_state.json` (global_step, num_input_tokens_seen), a torch.distributed.checkpoint
    folder's top-level `step` / `global_step` / `iter_num` (nothing else is read), else the name. torch.save files
    (nanoGPT's `iter_num`, Lightning's `global_step`...): the pickle's scalars, loaded weights-only and
    memory-mapped so no tensor data is read; else the name.
    """
    import json

    path = Path(path)
    if path.is_dir():
        state = path / "trainer_state.json"
        if state.is_file():
            try:
                data = json.loads(state.read_text())
                tokens = data.get("num_input_tokens_seen") or None
                if isinstance(data.get("global_step"), int):
                    return data["global_step"], tokens if isinstance(tokens, int) else None
            except (OSError, ValueError):
                pass
        if (path / ".metadata").is_file():
            from .dcp import peek_dcp_step

            step = peek_dcp_step(path)
            if step is not None:
                return step, None
        return step_from_name(path.name), None
    try:
        kind = sniff_file(path)
    except Exception:  # noqa: BLE001 - read_checkpoint reports it properly later
        return step_from_name(path.name), None
    if kind == "torch-zip":
        from .. import safe_pickle
        from .torch_file import step_of

        try:
            data = safe_pickle.load(path, allow_globals=allow_globals, mmap=True)
        except Exception:  # noqa: BLE001 - unsafe or corrupt: read_checkpoint refuses it with the reason
            data = None
        step, tokens = step_of(data) if isinstance(data, dict) else (None, None)
        if step is not None:
            return step, tokens
    return step_from_name(path.name), None
