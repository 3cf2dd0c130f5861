"""Reading weight files: safetensors (validated by the safetensors parser) and torch pickles (weights-only)."""

from __future__ import annotations

from collections.abc import Callable, ItemsView, Iterable, Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING

from .. import safe_pickle
from ..errors import CorruptCheckpointError
from .detect import read_json, safetensors_header, sniff_file

if TYPE_CHECKING:
    import torch

COMPILE_PREFIX = "_orig_mod."  # what torch.compile puts in front of every key


def read_safetensors(path: Path) -> dict[str, torch.Tensor]:
    """All tensors of a safetensors file; any malformation (offsets, sizes, header) is a CorruptCheckpointError."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    sniff_file(path)  # header length checked before the parser allocates anything
    try:
        return load_file(path)
    except (SafetensorError, OSError, ValueError, RuntimeError) as e:
        raise CorruptCheckpointError(f"{path} is not a valid safetensors file: {e}", str(path)) from e


def read_tensor_dict(path: Path, allow_globals: Iterable[str] = ()) -> dict[str, torch.Tensor]:
    """A flat name → tensor dict from a safetensors file or a weights-only torch pickle."""
    import torch

    kind = sniff_file(path)
    if kind == "safetensors":
        return read_safetensors(path)
    data = safe_pickle.load(path, allow_globals=allow_globals)
    if not isinstance(data, dict) or not all(isinstance(v, torch.Tensor) for v in data.values()):
        raise CorruptCheckpointError(f"{path} does not hold a flat dict of tensors", str(path))
    return data


def read_sharded(index_path: Path, allow_globals: Iterable[str] = ()) -> dict[str, torch.Tensor]:
    """Every shard named by a `*.index.json`; shard names must stay inside the folder."""
    index = read_json(index_path)
    weight_map = index.get("weight_map")
    if not isinstance(weight_map, dict) or not weight_map:
        raise CorruptCheckpointError(f"{index_path} has no 'weight_map'", str(index_path))
    folder = index_path.parent.resolve()
    shards: dict[str, list[str]] = {}
    for key, shard in weight_map.items():
        if not isinstance(shard, str) or "/" in shard or "\\" in shard or shard in ("", ".", ".."):
            raise CorruptCheckpointError(
                f"{index_path} maps {key!r} to {shard!r}, which is not a file inside {folder}", str(index_path)
            )
        shards.setdefault(shard, []).append(key)
    out: dict[str, torch.Tensor] = {}
    for shard, keys in sorted(shards.items()):
        shard_path = folder / shard
        if not shard_path.is_file():
            raise CorruptCheckpointError(f"{index_path} names {shard}, which is missing", str(index_path))
        tensors = read_tensor_dict(shard_path, allow_globals)
        missing = sorted(set(keys) - tensors.keys())
        if missing:
            raise CorruptCheckpointError(f"{shard_path} lacks tensors its index names: {missing[:5]}", str(shard_path))
        out.update({k: tensors[k] for k in keys})
    return out


def strip_compile_prefix(weights: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A copy without torch.compile's `_orig_mod.` prefix (the caller's dict is left as is)."""
    if not any(COMPILE_PREFIX in k for k in weights):
        return weights
    return {k.replace(COMPILE_PREFIX, ""): v for k, v in weights.items()}


def safetensors_keys(path: Path) -> list[str]:
    """Tensor names of a safetensors file, from its header alone (no tensor data is read)."""
    return [k for k in safetensors_header(path) if k != "__metadata__"]


class LazyWeights(Mapping[str, "torch.Tensor"]):
    """Weights read on first use: a converter that reuses the files as they are never reads the tensors."""

    def __init__(self, load: Callable[[], dict[str, torch.Tensor]]) -> None:
        self._load = load
        self._data: dict[str, torch.Tensor] | None = None

    def _loaded(self) -> dict[str, torch.Tensor]:
        if self._data is None:
            self._data = self._load()
        return self._data

    def __getitem__(self, key: str) -> torch.Tensor:
        return self._loaded()[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._loaded())

    def __len__(self) -> int:
        return len(self._loaded())

    def items(self) -> ItemsView[str, torch.Tensor]:
        return self._loaded().items()
