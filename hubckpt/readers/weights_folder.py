"""transformers Trainer `checkpoint-N/` folders, and any folder of model weights (safetensors or .bin)."""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .. import safe_pickle
from ..checkpoint import Checkpoint
from ..errors import CorruptCheckpointError
from .detect import read_json
from .steps import step_from_name
from .tensors import (
    COMPILE_PREFIX,
    LazyWeights,
    read_safetensors,
    read_sharded,
    read_tensor_dict,
    safetensors_keys,
    strip_compile_prefix,
)

if TYPE_CHECKING:
    import torch

# Files copied next to the weights: configs, tokenizers, templates. Everything else is reported as skipped.
SAFE_SUFFIXES = (".json", ".txt", ".jinja", ".model", ".md", ".yaml", ".yml", ".tiktoken")
WEIGHT_NAMES = {
    "model.safetensors",
    "model.safetensors.index.json",
    "pytorch_model.bin",
    "pytorch_model.bin.index.json",
}
TRAINING_FILES = {
    "optimizer.pt": "optimizer",
    "optimizer.bin": "optimizer",
    "scheduler.pt": "scheduler",
    "scaler.pt": "scaler",
}
_SHARD = re.compile(r"^(model|pytorch_model)-\d{5}-of-\d{5}\.(safetensors|bin)$")
_RNG = re.compile(r"^rng_state(_\d+)?\.pth$")


def _load_weights(folder: Path, allow_globals: Iterable[str]) -> dict:
    for index in ("model.safetensors.index.json", "pytorch_model.bin.index.json"):
        if (folder / index).is_file():
            return read_sharded(folder / index, allow_globals)
    if (folder / "model.safetensors").is_file():
        return read_safetensors(folder / "model.safetensors")
    if (folder / "pytorch_model.bin").is_file():
        return read_tensor_dict(folder / "pytorch_model.bin", allow_globals)
    files = sorted(folder.glob("*.safetensors"))
    if len(files) == 1:
        return read_safetensors(files[0])
    raise CorruptCheckpointError(
        f"{folder} has no model weights hubckpt can pick unambiguously (model.safetensors, pytorch_model.bin, "
        f"or shards with an index); found {[f.name for f in files] or 'none'}",
        str(folder),
    )


def _metrics_from_log(state: dict) -> dict[str, float]:
    """The latest value of every numeric metric in `log_history` (up to the checkpoint's step)."""
    step = state.get("global_step")
    metrics: dict[str, float] = {}
    for entry in state.get("log_history") or []:
        if not isinstance(entry, dict):
            continue
        if isinstance(step, int) and isinstance(entry.get("step"), int) and entry["step"] > step:
            continue
        for key, value in entry.items():
            if key not in ("step", "epoch") and isinstance(value, (int, float)) and not isinstance(value, bool):
                metrics[key] = float(value)
    return dict(sorted(metrics.items()))


def _best_metric_name(state: dict) -> dict[str, str]:
    """trainer_state.json records the best value but not the metric's name: find which logged metric had it.

    Returns {"metric": name, "mode": "min"|"max"} (the Trainer's metric_for_best_model and its direction), or {}.
    """
    best = state.get("best_metric")
    history = [e for e in state.get("log_history") or [] if isinstance(e, dict)]
    candidates = sorted(
        {k for e in history for k, v in e.items() if v == best and k not in ("step", "epoch")},
        key=lambda k: (not k.startswith("eval_"), k),
    )
    if not candidates:
        return {}
    metric = candidates[0]
    values = [e[metric] for e in history if isinstance(e.get(metric), (int, float))]
    mode = "max" if values and best == max(values) and best != min(values) else "min"
    return {"metric": metric, "mode": mode}


def _safetensors_files(folder: Path) -> list[Path]:
    """The safetensors files the weights come from, when they can be reused as they are (else [])."""
    index = folder / "model.safetensors.index.json"
    if index.is_file():
        weight_map = read_json(index).get("weight_map")
        if not isinstance(weight_map, dict) or not weight_map:
            return []
        shards = sorted(set(weight_map.values()))
        if not all(
            isinstance(s, str)
            and s.endswith(".safetensors")
            and "/" not in s
            and "\\" not in s
            and (folder / s).is_file()
            for s in shards
        ):
            return []
        files = [folder / s for s in shards]
    elif (folder / "pytorch_model.bin.index.json").is_file():
        return []  # what _load_weights reads first
    elif (folder / "model.safetensors").is_file():
        files = [folder / "model.safetensors"]
    elif (folder / "pytorch_model.bin").is_file():
        return []
    else:
        files = sorted(folder.glob("*.safetensors"))
        if len(files) != 1:
            return []
    keys = [k for f in files for k in safetensors_keys(f)]
    if any(COMPILE_PREFIX in k for k in keys):
        return []  # names must be rewritten
    if index.is_file() and sorted(keys) != sorted(read_json(index)["weight_map"]):
        return []  # the index and the shards disagree: let the full reader report it
    return files


def read_weights_folder(folder: Path, *, allow_globals: Iterable[str] = ()) -> Checkpoint:
    """Read a Trainer checkpoint folder (or a plain folder of weights + companions).

    Weights stored as safetensors are not read here (`LazyWeights`): the converter reuses the files as
    they are (`Checkpoint.weight_files`) and reads the tensors only if it must rewrite them.
    """
    reusable = _safetensors_files(folder)
    weights: Mapping[str, torch.Tensor]
    if reusable:
        weights = LazyWeights(lambda: strip_compile_prefix(_load_weights(folder, allow_globals)))
    else:
        weights = strip_compile_prefix(_load_weights(folder, allow_globals))
    ckpt = Checkpoint(source=folder, source_format="safetensors", weights=weights, weight_files=reusable)
    training: dict[str, Any] = {}
    state_path = folder / "trainer_state.json"
    if state_path.is_file():
        ckpt.source_format = "trainer"
        state = read_json(state_path)
        ckpt.step = state.get("global_step") if isinstance(state.get("global_step"), int) else None
        ckpt.epoch = float(state["epoch"]) if isinstance(state.get("epoch"), (int, float)) else None
        tokens = state.get("num_input_tokens_seen")
        ckpt.tokens = int(tokens) if isinstance(tokens, (int, float)) and tokens > 0 else None
        ckpt.metrics = _metrics_from_log(state)
        if state.get("best_metric") is not None:
            ckpt.best = {
                "value": state.get("best_metric"),
                "checkpoint": state.get("best_model_checkpoint"),
                "step": state.get("best_global_step"),
                **_best_metric_name(state),
            }
        training["loop"] = {k: state[k] for k in sorted(state) if k != "log_history"}
    if ckpt.step is None:
        ckpt.step = step_from_name(folder.name)
    uses_bin = (folder / "pytorch_model.bin").exists() or (folder / "pytorch_model.bin.index.json").exists()
    for path in sorted(p for p in folder.iterdir() if p.is_file()):
        name = path.name
        if name in WEIGHT_NAMES or _SHARD.match(name) or (name.endswith(".safetensors") and not uses_bin):
            continue
        if name == "trainer_state.json":
            continue
        if name in TRAINING_FILES:
            training[TRAINING_FILES[name]] = safe_pickle.load(path, allow_globals=allow_globals)
        elif _RNG.match(name):
            training.setdefault("rng", {})[name.removesuffix(".pth")] = safe_pickle.load(
                path, allow_globals=allow_globals
            )
        elif name == "training_args.bin":
            ckpt.skipped.append((name, "pickled TrainingArguments: never unpickled (it could run code)"))
        elif name.endswith(SAFE_SUFFIXES) and not name.startswith("."):
            ckpt.companions.append(path)
        else:
            ckpt.skipped.append((name, "not a known safe file type"))
    for sub in sorted(p for p in folder.iterdir() if p.is_dir()):
        ckpt.skipped.append((sub.name + "/", "sub-folders are not carried over"))
    ckpt.training_state = training
    return ckpt
