"""Readers: recognise a checkpoint by its content and read it into a `Checkpoint`.

Formats: transformers Trainer `checkpoint-N/` folders and any folder of weights (safetensors or .bin,
sharded or not), `torch.save` files (bare state dicts, nanoGPT-style dicts, `_orig_mod.` prefixes),
Lightning `.ckpt`, safetensors files, torch.distributed.checkpoint folders, and run folders holding
many of these (`discover`). Pickles are only ever read weights-only (`hubckpt.safe_pickle`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterable

from ..checkpoint import Checkpoint
from ..errors import UnsupportedCheckpointError
from .detect import sniff_file, sniff_folder
from .run import discover

__all__ = ["read_checkpoint", "discover", "kind_of"]


def kind_of(path: str | Path) -> str:
    """What `path` holds: 'run' (many checkpoints), 'dcp', 'weights-folder', or a file kind."""
    path = Path(path)
    if path.is_dir():
        return sniff_folder(path)
    if path.is_file():
        return sniff_file(path)
    raise UnsupportedCheckpointError(f"{path} does not exist", str(path))


def read_checkpoint(path: str | Path, *, allow_globals: Iterable[str] = ()) -> Checkpoint:
    """Read one checkpoint (file or folder). A run folder is refused here: use `discover` first."""
    path = Path(path)
    kind = kind_of(path)
    if kind == "run":
        raise UnsupportedCheckpointError(
            f"{path} holds several checkpoints ({len(discover(path))}); read them one by one (see discover())",
            str(path))
    if kind == "dcp":
        from .dcp import read_dcp

        return read_dcp(path)
    if kind == "weights-folder":
        from .weights_folder import read_weights_folder

        return read_weights_folder(path, allow_globals=allow_globals)
    from .torch_file import read_torch_file

    return read_torch_file(path, allow_globals=allow_globals)
