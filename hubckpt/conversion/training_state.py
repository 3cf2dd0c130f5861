"""Training state (optimizer, scheduler, scaler, RNG, loop) as safetensors + JSON — never pickle.

Any nesting of dicts (any scalar keys), lists, tuples, tensors, numpy arrays and JSON scalars is
split into `<name>.safetensors` (every tensor and array, keyed by its position) and `<name>.json`
(the structure, with typed placeholders), and rebuilt exactly by `load_state`:

    {"state": {"__dict__": [[0, {"exp_avg": {"__tensor__": "state.0.exp_avg"}, "step": {"__tensor__": ...}}]]},
     "param_groups": [{"lr": 0.001, "betas": {"__tuple__": [0.9, 0.999]}, "params": [0, 1]}]}

Placeholders: `__tensor__` (torch tensor), `__ndarray__` (numpy array, stored as a tensor + numpy dtype),
`__tuple__`, `__dict__` (a dict whose keys are not all strings: [[key, value], ...]), `__float__`
("nan", "inf", "-inf"), `__bytes__` (hex). Files are written in sorted key order, so the same state
gives byte-identical files.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import CorruptCheckpointError, UnsupportedCheckpointError

if TYPE_CHECKING:
    from ..formats.untrusted import Source

FORMAT_VERSION = 1


class _Encoder:
    def __init__(self) -> None:
        self.tensors: dict[str, Any] = {}

    def encode(self, value: Any, path: str) -> Any:
        import torch

        if isinstance(value, torch.Tensor):
            key = path or "value"
            self.tensors[key] = value.detach().cpu().contiguous()
            return {"__tensor__": key}
        if type(value).__module__ == "numpy" and hasattr(value, "dtype") and hasattr(value, "shape"):
            import numpy as np

            array = np.ascontiguousarray(value)
            key = path or "value"
            self.tensors[key] = torch.from_numpy(array.copy()) if array.dtype != object else None
            if self.tensors[key] is None:
                raise UnsupportedCheckpointError(f"training state entry {path!r} is a numpy object array")
            return {
                "__ndarray__": key,
                "dtype": str(array.dtype),
                "scalar": array.ndim == 0 and not isinstance(value, np.ndarray),
            }
        if isinstance(value, bool) or value is None or isinstance(value, (int, str)):
            return value
        if isinstance(value, float):
            return value if math.isfinite(value) else {"__float__": repr(value)}
        if isinstance(value, bytes):
            return {"__bytes__": value.hex()}
        if isinstance(value, tuple):
            return {"__tuple__": [self.encode(v, f"{path}.{i}") for i, v in enumerate(value)]}
        if isinstance(value, list):
            return [self.encode(v, f"{path}.{i}") for i, v in enumerate(value)]
        if isinstance(value, dict):
            if all(isinstance(k, str) and not k.startswith("__") for k in value):
                return {k: self.encode(value[k], f"{path}.{k}" if path else k) for k in value}
            items = []
            for k, v in value.items():
                if not isinstance(k, (str, int, float, bool)) and k is not None:
                    raise UnsupportedCheckpointError(f"training state entry {path!r} has a {type(k).__name__} key")
                items.append([k, self.encode(v, f"{path}.{k}" if path else str(k))])
            return {"__dict__": items}
        raise UnsupportedCheckpointError(
            f"training state entry {path or '(root)'!r} is a {type(value).__module__}.{type(value).__name__}, which "
            "cannot be stored without pickle"
        )


def encode_tree(value: Any) -> tuple[Any, dict[str, Any]]:
    """`value` as a JSON structure with typed placeholders, and the tensors the placeholders name."""
    encoder = _Encoder()
    return encoder.encode(value, ""), encoder.tensors


def decode_tree(value: Any, tensors: dict) -> Any:
    """The value `encode_tree` (or `save_state`) encoded, rebuilt around `tensors`."""
    if isinstance(value, list):
        return [decode_tree(v, tensors) for v in value]
    if not isinstance(value, dict):
        return value
    if "__tensor__" in value:
        return tensors[value["__tensor__"]]
    if "__ndarray__" in value:
        import numpy as np

        array = tensors[value["__ndarray__"]].numpy().astype(np.dtype(value["dtype"]), copy=True)
        return array[()] if value.get("scalar") else array
    if "__tuple__" in value:
        return tuple(decode_tree(v, tensors) for v in value["__tuple__"])
    if "__dict__" in value:
        return {k: decode_tree(v, tensors) for k, v in value["__dict__"]}
    if "__float__" in value:
        return float(value["__float__"])
    if "__bytes__" in value:
        return bytes.fromhex(value["__bytes__"])
    return {k: decode_tree(v, tensors) for k, v in value.items()}


def save_state(state: Any, folder: Path, name: str) -> dict[Path, str]:
    """Write `state` as `<name>.json` (+ `<name>.safetensors` when it holds tensors); return each file's sha256."""
    from .st_writer import write_safetensors

    structure, found = encode_tree(state)
    folder.mkdir(parents=True, exist_ok=True)
    files: dict[Path, str] = {}
    if found:
        shared = _shared_storages(found.values())
        tensors = {k: v.clone() if _storage(v) in shared else v for k, v in sorted(found.items())}
        files[folder / f"{name}.safetensors"], _ = write_safetensors(folder / f"{name}.safetensors", tensors)
    doc = {
        "format_version": FORMAT_VERSION,
        "tensors_file": f"{name}.safetensors" if found else None,
        "state": structure,
    }
    data = (json.dumps(doc, indent=2, sort_keys=True) + "\n").encode()
    (folder / f"{name}.json").write_bytes(data)
    files[folder / f"{name}.json"] = hashlib.sha256(data).hexdigest()
    return files


def _storage(t) -> int | None:
    return t.untyped_storage().data_ptr() if t.numel() else None


def _shared_storages(tensors) -> set[int]:
    """Storages that more than one of `tensors` uses: those are copied apart (safetensors files must not alias;
    in practice it is small state, such as RNG states and steps)."""
    counts = Counter(p for p in map(_storage, tensors) if p is not None)
    return {p for p, n in counts.items() if n > 1}


def load_state(
    folder: Path, name: str, *, read_tensors: Callable[[Path], dict] | None = None, source: Source | None = None
) -> Any:
    """Rebuild what `save_state` wrote.

    `<name>.json` is untrusted input (a revision's `training_state/` is a file of somebody's repo): it is
    read size- and depth-capped, and its `tensors_file` must be exactly `<name>.safetensors` in `folder`,
    so no other file (absolute path, `../`, another part's) is ever read; else `HubContentError`.

    `read_tensors(path)` reads the `.safetensors` file (default: `safetensors.torch.load_file`, whose
    tensors are copy-on-write views of a memory map; pass a reader into fresh memory for state that
    training will write into). `source`: where the JSON came from, for the error (default: its local path).
    """
    from safetensors.torch import load_file

    from ..formats.untrusted import MAX_JSON_BYTES, Source, check_type, load_json, printable

    doc_path = folder / f"{name}.json"
    source = source or Source(path=str(doc_path))
    try:
        with doc_path.open("rb") as f:
            raw = f.read(MAX_JSON_BYTES + 1)
    except OSError as e:
        raise CorruptCheckpointError(f"{doc_path} is missing or cannot be read: {e}", str(doc_path)) from e
    doc = check_type(load_json(raw, source), dict, source, "content")
    version = doc.get("format_version", 0)
    if isinstance(version, bool) or not isinstance(version, int):
        raise source.error(f"its format_version is {printable(repr(version), 40)}, not an integer")
    if version > FORMAT_VERSION:
        raise UnsupportedCheckpointError(f"{doc_path} was written by a newer hubckpt; upgrade hubckpt", str(doc_path))
    tensors_file = doc.get("tensors_file")
    if tensors_file is not None and tensors_file != f"{name}.safetensors":
        shown = printable(tensors_file, 120) if isinstance(tensors_file, str) else type(tensors_file).__name__
        raise source.error(
            f"it names {shown!r} as its tensors file, which is not {name}.safetensors beside it (no other file is read)"
        )
    if "state" not in doc:
        raise source.error("it has no 'state'")
    tensors = (read_tensors or load_file)(folder / tensors_file) if tensors_file else {}
    try:
        return decode_tree(doc["state"], tensors)
    except (KeyError, TypeError, ValueError, AttributeError) as e:  # a placeholder that names nothing, wrong types
        raise source.error(f"its state does not decode ({printable(repr(e), 100)})") from None


def save_training_state(training_state: dict[str, Any], folder: Path) -> dict[Path, str]:
    """One `<part>.json` (+ `.safetensors`) per part: optimizer, scheduler, scaler, rng, loop...; each file's sha256
    (hashed as it was written: the files are not read again)."""
    files: dict[Path, str] = {}
    for part in sorted(training_state):
        files.update(save_state(training_state[part], folder, part))
    return files


def load_training_state(folder: str | Path) -> dict[str, Any]:
    """Every part of a `training_state/` folder, rebuilt: pass them to `optimizer.load_state_dict(...)` etc.

    Args:
        folder: a `training_state/` folder (from `hubckpt convert`, `pull --training-state`, a revision).

    Returns:
        Part name (`optimizer`, `scheduler`, `scaler`, `rng`, `loop`...) -> its state, as the object's
        `state_dict()` gave it.

    Raises:
        CorruptCheckpointError: a part's JSON cannot be read.
        HubContentError: a part's JSON is not valid, over the size or depth cap, or names a tensors file
            other than `<part>.safetensors` beside it (nothing else is read).
        UnsupportedCheckpointError: a part written by a newer hubckpt.
    """
    folder = Path(folder)
    return {p.stem: load_state(folder, p.stem) for p in sorted(folder.glob("*.json"))}


def restore_rng(rng: dict[str, Any]) -> None:
    """Restore python / numpy / torch (and CUDA, when present and available) RNG states.

    States saved by `capture_rng` or by the transformers Trainer (`rng_state.pth`). Pass `state["rng"]` as
    loaded by `load_training_state`: both layouts (`capture_rng()`'s and the Trainer's
    `{"rng_state": ...}`) are recognised.

    Args:
        rng: the saved states; generators it does not name are left as they are.

    Raises:
        RuntimeError: torch refuses a state (e.g. one saved by an incompatible torch build).
    """
    import random

    import numpy as np
    import torch

    if "python" not in rng and isinstance(rng.get("rng_state"), dict):
        rng = rng["rng_state"]  # a Trainer checkpoint: {"rng_state": {...}} (rank 0's file rng_state.pth)
    if "python" in rng:
        version, internal, gauss = rng["python"]
        random.setstate((version, tuple(internal), gauss))
    if "numpy" in rng:
        np.random.set_state(tuple(rng["numpy"]))
    if "cpu" in rng:
        torch.set_rng_state(rng["cpu"])
    if "cuda" in rng and torch.cuda.is_available():
        states = rng["cuda"] if isinstance(rng["cuda"], list) else [rng["cuda"]]
        torch.cuda.set_rng_state_all(states) if len(states) > 1 else torch.cuda.set_rng_state(states[0])


def capture_rng() -> dict[str, Any]:
    """The current python / numpy / torch (and CUDA) RNG states, in the Trainer's layout.

    Returns:
        `{"python", "numpy", "cpu"[, "cuda"]}`: pass it as `training_state={"rng": ...}` when publishing,
        and back to `restore_rng` to resume the same random draws.
    """
    import random

    import numpy as np
    import torch

    state: dict[str, Any] = {"python": random.getstate(), "numpy": np.random.get_state(), "cpu": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state
