"""torch.distributed.checkpoint folders, consolidated into one state dict without unsafe unpickling.

DCP's own reader unpickles `.metadata` with plain `pickle.load` and non-tensor items with
`torch.load(weights_only=False)`, either of which runs code from a hostile folder. Here the metadata
goes through an unpickler that only builds DCP's own metadata classes and a few torch/builtin
types, and non-tensor items through `torch.load(weights_only=True)`.
"""

from __future__ import annotations

import io
import pickle
from pathlib import Path
from typing import Any

from ..checkpoint import Checkpoint
from ..errors import CorruptCheckpointError, UnsafeCheckpointError
from .steps import step_from_name

_BUILTINS = {
    ("builtins", n)
    for n in ("set", "frozenset", "slice", "tuple", "list", "dict", "int", "float", "str", "bytes", "bool", "complex")
}
_BUILTINS |= {
    ("collections", "OrderedDict"),
    ("torch", "Size"),
    ("torch.serialization", "_get_layout"),
    ("pathlib", "PosixPath"),
    ("pathlib", "PurePosixPath"),
    ("pathlib", "WindowsPath"),
    ("pathlib", "PureWindowsPath"),
}  # maps a layout's name to torch.strided etc.; torch allowlists it too


class _MetadataUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        import torch

        if (module, name) in _BUILTINS:
            return super().find_class(module, name)
        if module.startswith("torch.distributed.checkpoint.") and not name.startswith("__"):
            value = super().find_class(module, name)
            if isinstance(value, type):  # DCP's dataclasses and enums only; no functions
                return value
        if module == "torch":
            value = getattr(torch, name, None)
            if isinstance(value, (torch.dtype, torch.layout, torch.memory_format)):
                return value
        raise UnsafeCheckpointError(
            f"torch.distributed.checkpoint metadata references {module}.{name}, which hubckpt does not allow"
        )


def _safe_reader(path: Path):
    from torch.distributed.checkpoint import FileSystemReader
    from torch.distributed.checkpoint.metadata import StorageMeta

    class SafeFileSystemReader(FileSystemReader):
        def read_metadata(self, *args: Any, **kwargs: Any):
            rank = kwargs.get("rank")
            with open(self._get_metadata_path(rank), "rb") as f:
                metadata = _MetadataUnpickler(f).load()
            if getattr(metadata, "storage_meta", None) is None:
                metadata.storage_meta = StorageMeta()
            metadata.storage_meta.load_id = self.load_id
            return metadata

    return SafeFileSystemReader(str(path))


def _safe_planner():
    import torch
    from torch.distributed.checkpoint._traverse import set_element
    from torch.distributed.checkpoint.default_planner import _EmptyStateDictLoadPlanner

    class SafePlanner(_EmptyStateDictLoadPlanner):
        def load_bytes(self, read_item, value: io.BytesIO) -> None:
            loaded = torch.load(value, weights_only=True)  # DCP's own planner uses weights_only=False here
            if self.flatten_state_dict:
                set_element(self.original_state_dict, self.mappings[read_item.dest_index.fqn], loaded)
            else:
                self.state_dict[read_item.dest_index.fqn] = loaded

    return SafePlanner()


def read_dcp(path: Path) -> Checkpoint:
    """Consolidate a DCP folder; a `model` sub-dict (as TorchTitan/FSDP save) becomes the weights."""
    import torch
    from torch.distributed.checkpoint.state_dict_loader import _load_state_dict

    state: dict[str, Any] = {}
    try:
        _load_state_dict(state, storage_reader=_safe_reader(path), planner=_safe_planner(), no_dist=True)
    except UnsafeCheckpointError as e:
        e.path = str(path)
        raise
    except BaseException as e:  # noqa: BLE001 - DCP wraps failures in CheckpointException, a BaseException
        if isinstance(e, (KeyboardInterrupt, SystemExit)):
            raise
        if "which hubckpt does not allow" in str(e):
            import re

            refs = re.findall(r"references ([\w.]+), which hubckpt does not allow", str(e))
            raise UnsafeCheckpointError(
                f"{path}: torch.distributed.checkpoint metadata references {', '.join(sorted(set(refs)))}, which "
                "hubckpt does not allow; nothing from it was run",
                str(path),
                sorted(set(refs)),
            ) from None
        raise CorruptCheckpointError(
            f"{path} is not a readable torch.distributed.checkpoint folder: "
            f"{str(e).splitlines()[-1] if str(e) else type(e).__name__}",
            str(path),
        ) from e
    model = state.get("model")
    if isinstance(model, dict) and model and all(isinstance(v, torch.Tensor) for v in model.values()):
        weights, rest = model, {k: v for k, v in state.items() if k != "model"}
    else:
        weights = {k: v for k, v in state.items() if isinstance(v, torch.Tensor)}
        rest = {k: v for k, v in state.items() if not isinstance(v, torch.Tensor)}
    if not weights:
        raise CorruptCheckpointError(f"{path} holds no tensors", str(path))
    ckpt = Checkpoint(source=path, source_format="dcp", weights=weights, step=step_from_name(path.name))
    training: dict[str, Any] = {}
    if "optimizer" in rest:
        training["optimizer"] = rest.pop("optimizer")
    for key in ("step", "global_step", "iter_num"):
        if isinstance(rest.get(key), int):
            ckpt.step = rest[key]
    training["loop"] = {k: v for k, v in rest.items() if isinstance(v, (int, float, str, bool)) or v is None}
    ckpt.training_state = training
    return ckpt
