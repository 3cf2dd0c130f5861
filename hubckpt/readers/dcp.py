"""torch.distributed.checkpoint folders, consolidated into one state dict without unsafe unpickling.

Two layouts, both as written by any number of ranks (each rank's slices are put back together here):

- the default one (`dcp.save(state)`): `.metadata` + `__<rank>_<n>.distcp`. DCP's own reader unpickles
  `.metadata` with plain `pickle.load` and non-tensor items with `torch.load(weights_only=False)`, either
  of which runs code from a hostile folder. Here the metadata goes through an unpickler that only builds
  DCP's own metadata classes and a few torch/builtin types, and non-tensor items through
  `torch.load(weights_only=True)`.
- `HuggingFaceStorageWriter(save_distributed=True)` without consolidation: one safetensors file per rank
  (`shard-0000r-model-0000k-of-0000n.safetensors`), each slice's place in the full tensor recorded in the
  file's `DCP_SHARDING_INFO` metadata. No pickle at all; the slices must tile each tensor exactly (no
  gap, no overlap), or the folder is refused. (With `enable_consolidation=True` the folder also holds
  the consolidated `model-*.safetensors` + index, read as a plain weights folder; `sharded/` is skipped.)
"""

from __future__ import annotations

import io
import math
import pickle
import re
from pathlib import Path
from typing import Any

from ..checkpoint import Checkpoint
from ..errors import CorruptCheckpointError, UnsafeCheckpointError
from .detect import DCP_SHARDING_KEY, dcp_sharded_files, sniff_file
from .steps import step_from_name
from .tensors import strip_compile_prefix

# Scalars a DCP state may carry at its top level that give the training step.
STEP_KEYS = ("step", "global_step", "iter_num")

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


def _safe_planner(keys: set[str] | None = None):
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

    return SafePlanner(keys)


def peek_dcp_step(path: Path) -> int | None:
    """The step a DCP folder records (a top-level `step` / `global_step` / `iter_num`), reading nothing else."""
    from torch.distributed.checkpoint.metadata import BytesStorageMetadata
    from torch.distributed.checkpoint.state_dict_loader import _load_state_dict

    if not (path / ".metadata").is_file():
        return None
    reader = _safe_reader(path)
    try:
        metadata = reader.read_metadata()
        keys = {k for k in STEP_KEYS if isinstance(metadata.state_dict_metadata.get(k), BytesStorageMetadata)}
        if not keys:
            return None
        state: dict[str, Any] = {}
        _load_state_dict(state, storage_reader=_safe_reader(path), planner=_safe_planner(keys), no_dist=True)
    except Exception:  # noqa: BLE001 - unsafe or corrupt: read_dcp refuses it with the reason
        return None
    for key in STEP_KEYS:
        if isinstance(state.get(key), int) and not isinstance(state[key], bool):
            return int(state[key])
    return None


def read_dcp(path: Path) -> Checkpoint:
    """Consolidate a DCP folder; a `model` sub-dict (as TorchTitan/FSDP save) becomes the weights."""
    import torch

    if not (path / ".metadata").is_file() and dcp_sharded_files(path):
        return read_dcp_safetensors(path)
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
    for key in STEP_KEYS:
        if isinstance(rest.get(key), int) and not isinstance(rest[key], bool):
            ckpt.step = rest[key]
    training["loop"] = {k: v for k, v in rest.items() if isinstance(v, (int, float, str, bool)) or v is None}
    ckpt.training_state = training
    return ckpt


def _corrupt(path: Path, message: str) -> CorruptCheckpointError:
    return CorruptCheckpointError(f"{path}: {message}", str(path))


_RANK_FILE = re.compile(r"^shard-(\d+)-model-(\d+)-of-(\d+)\.safetensors$")


def _check_every_rank_file(path: Path, files: list[Path]) -> None:
    """Rank k's files are `shard-0000k-*`: ranks 1..N must all be there (a missing middle rank is a gap).

    The format records neither the world size nor the full shapes, so a missing *last* rank (the trailing
    rows of every tensor) cannot be told from smaller tensors; docs/convert.md says so.
    """
    ranks = {int(m.group(1)) for f in files if (m := _RANK_FILE.match(f.name))}
    missing = sorted(set(range(1, max(ranks, default=0) + 1)) - ranks)
    if missing:
        raise _corrupt(
            path,
            f"per-rank file shard-{missing[0]:05d}-* is missing (ranks' files found: {sorted(ranks)}); "
            "copy the folder again from where every rank wrote it",
        )


def read_dcp_safetensors(path: Path) -> Checkpoint:
    """Put the per-rank safetensors files of `HuggingFaceStorageWriter(save_distributed=True)` back together.

    Every file must carry `DCP_SHARDING_INFO`; each tensor's slices must have one dtype and rank and tile
    the full tensor exactly (its shape is where the slices end). Sizes are checked before any full tensor
    is allocated, so a hostile header cannot make this allocate more than the files hold.
    """
    import json

    import torch
    from safetensors import SafetensorError, safe_open

    files = dcp_sharded_files(path)
    _check_every_rank_file(path, files)
    # name -> [(file, offsets, shape)]
    chunks: dict[str, list[tuple[Path, list[int], list[int]]]] = {}
    for file in files:
        sniff_file(file)
        try:
            with safe_open(str(file), framework="pt") as f:
                raw = (f.metadata() or {}).get(DCP_SHARDING_KEY)
                if raw is None:
                    raise _corrupt(
                        file, f"has no {DCP_SHARDING_KEY} metadata, unlike the other per-rank files beside it"
                    )
                try:
                    info = json.loads(raw)
                except ValueError as e:
                    raise _corrupt(file, f"its {DCP_SHARDING_KEY} metadata is not JSON: {e}") from e
                if not isinstance(info, dict):
                    raise _corrupt(file, f"its {DCP_SHARDING_KEY} metadata is not a JSON object")
                for name in f.keys():
                    shape = list(f.get_slice(name).get_shape())
                    entry = info.get(name)
                    offsets = entry.get("saved_offsets") if isinstance(entry, dict) else None
                    if (
                        not isinstance(offsets, list)
                        or len(offsets) != len(shape)
                        or not all(isinstance(o, int) and not isinstance(o, bool) and o >= 0 for o in offsets)
                    ):
                        raise _corrupt(file, f"{name!r} has no valid saved_offsets for its {len(shape)} dimensions")
                    chunks.setdefault(name, []).append((file, offsets, shape))
        except SafetensorError as e:
            raise _corrupt(file, f"not a valid safetensors file: {e}") from e
    if not chunks:
        raise _corrupt(path, "holds no tensors")

    full_shapes: dict[str, list[int]] = {}
    for name, parts in sorted(chunks.items()):
        ranks = {len(shape) for _, _, shape in parts}
        if len(ranks) != 1:
            raise _corrupt(path, f"the slices of {name!r} have different numbers of dimensions")
        filled = [p for p in parts if math.prod(p[2]) > 0] or parts  # an empty slice may sit past the end
        full = [max(o[d] + s[d] for _, o, s in filled) for d in range(ranks.pop())]
        covered = sum(math.prod(shape) for _, _, shape in parts)
        if covered != math.prod(full):
            raise _corrupt(
                path,
                f"the slices of {name!r} hold {covered} elements but tile a {tuple(full)} tensor of "
                f"{math.prod(full)}: a rank's file is missing, or slices overlap",
            )
        full_shapes[name] = full

    weights: dict[str, torch.Tensor] = {}
    for name, parts in sorted(chunks.items()):
        out: torch.Tensor | None = None
        seen = torch.zeros(full_shapes[name], dtype=torch.bool)
        for file, offsets, shape in parts:
            with safe_open(str(file), framework="pt") as f:
                part = f.get_tensor(name)
            if out is None:
                out = torch.empty(full_shapes[name], dtype=part.dtype)
            elif part.dtype != out.dtype:
                raise _corrupt(file, f"the slices of {name!r} have different dtypes ({part.dtype}, {out.dtype})")
            region = tuple(slice(o, o + s) for o, s in zip(offsets, shape))
            if bool(seen[region].any()):
                raise _corrupt(file, f"slices of {name!r} overlap")
            seen[region] = True
            out[region] = part
        if out is not None:  # every name has at least one slice
            weights[name] = out
    ckpt = Checkpoint(
        source=path, source_format="dcp", weights=strip_compile_prefix(weights), step=step_from_name(path.name)
    )
    subfolders = sorted(sub for sub in path.iterdir() if sub.is_dir())
    ckpt.skipped = [(sub.name + "/", "sub-folders are not carried over") for sub in subfolders]
    return ckpt
