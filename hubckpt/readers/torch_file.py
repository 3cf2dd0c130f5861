"""Single-file checkpoints: safetensors, plain `torch.save` state dicts, nanoGPT-style dicts, Lightning `.ckpt`."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

from .. import safe_pickle
from ..checkpoint import Checkpoint
from ..errors import UnsupportedCheckpointError
from .detect import sniff_file
from .steps import step_from_name
from .tensors import COMPILE_PREFIX, LazyWeights, read_safetensors, safetensors_keys, strip_compile_prefix

_STEP_KEYS = ("global_step", "iter_num", "step", "steps", "iteration", "num_updates")
_MODEL_KEYS = ("model", "model_state_dict", "state_dict", "module", "net", "weights")
_OPTIMIZER_KEYS = ("optimizer", "optimizer_state_dict", "optim", "opt")
_SCHEDULER_KEYS = ("scheduler", "lr_scheduler", "scheduler_state_dict")


def step_of(data: dict) -> tuple[int | None, int | None]:
    """(step, tokens) recorded in a loaded torch.save dict (nanoGPT `iter_num`, Lightning `global_step`...)."""
    step = next(
        (int(data[k]) for k in _STEP_KEYS if isinstance(data.get(k), int) and not isinstance(data[k], bool)), None
    )
    tokens = data.get("tokens") if isinstance(data.get("tokens"), int) else None
    return step, tokens


def _is_tensor_dict(value: Any) -> bool:
    import torch

    return (
        isinstance(value, dict)
        and bool(value)
        and all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in value.items())
    )


def _scalar(value: Any) -> bool:
    return value is None or isinstance(value, (bool, int, float, str))


def _plain(value: Any) -> bool:
    """JSON-like data (configs, model_args), kept in the loop state."""
    if _scalar(value):
        return True
    if isinstance(value, (list, tuple)):
        return all(_plain(v) for v in value)
    if isinstance(value, dict):
        return all(isinstance(k, str) and _plain(v) for k, v in value.items())
    return False


def _strip_common_prefix(weights: dict, prefix: str) -> dict:
    if weights and all(k.startswith(prefix) for k in weights):
        return {k[len(prefix) :]: v for k, v in weights.items()}
    return weights


def read_torch_file(path: Path, *, allow_globals: Iterable[str] = ()) -> Checkpoint:
    import torch

    kind = sniff_file(path)
    if kind == "safetensors":
        keys = safetensors_keys(path)
        if any(COMPILE_PREFIX in k for k in keys):
            return Checkpoint(
                source=path,
                source_format="safetensors",
                weights=strip_compile_prefix(read_safetensors(path)),
                step=step_from_name(path.name),
            )
        return Checkpoint(
            source=path,
            source_format="safetensors",
            weights=LazyWeights(lambda: read_safetensors(path)),
            step=step_from_name(path.name),
            weight_files=[path],
        )
    if kind == "legacy-tar":
        safe_pickle.load(path)  # raises the refusal with its explanation
    data = safe_pickle.load(path, allow_globals=allow_globals)
    if _is_tensor_dict(data):
        return Checkpoint(
            source=path, source_format="torch", weights=strip_compile_prefix(data), step=step_from_name(path.name)
        )
    if not isinstance(data, dict):
        raise UnsupportedCheckpointError(f"{path} holds a {type(data).__name__}, not a state dict", str(path))

    if "state_dict" in data and (
        "pytorch-lightning_version" in data or "optimizer_states" in data or "global_step" in data
    ):
        return _lightning(path, data)
    model_key = next((k for k in _MODEL_KEYS if _is_tensor_dict(data.get(k))), None)
    top_tensors = {k: v for k, v in data.items() if isinstance(k, str) and isinstance(v, torch.Tensor)}
    if model_key is None and top_tensors:
        # A state dict with a few extra entries next to the tensors (e.g. a step counter).
        data = {"model": top_tensors, **{k: v for k, v in data.items() if k not in top_tensors}}
        model_key = "model"
    if model_key is None:
        raise UnsupportedCheckpointError(
            f"{path} is a dict without model weights hubckpt can find (looked for a flat dict of tensors at the top "
            f"level or under {', '.join(_MODEL_KEYS)}); its keys are {sorted(map(str, data))[:20]}",
            str(path),
        )
    ckpt = Checkpoint(
        source=path,
        source_format="nanogpt" if "iter_num" in data else "torch",
        weights=strip_compile_prefix(data[model_key]),
    )
    training: dict[str, Any] = {}
    loop: dict[str, Any] = {}
    for key, value in data.items():
        if key == model_key:
            continue
        if key in _OPTIMIZER_KEYS:
            training["optimizer"] = value
        elif key in _SCHEDULER_KEYS:
            training["scheduler"] = value
        elif key in ("scaler", "grad_scaler"):
            training["scaler"] = value
        elif key in ("rng", "rng_state", "rng_states"):
            training["rng"] = value
        elif _plain(value):
            loop[key] = value
        else:
            ckpt.skipped.append((f"{path.name}:{key}", "entry of a type hubckpt does not carry over"))
    ckpt.step = next((int(data[k]) for k in _STEP_KEYS if isinstance(data.get(k), int)), None)
    if ckpt.step is None:
        ckpt.step = step_from_name(path.name)
    if isinstance(data.get("epoch"), (int, float)):
        ckpt.epoch = float(data["epoch"])
    for key in ("best_val_loss", "val_loss", "loss", "train_loss"):
        if isinstance(data.get(key), (int, float)):
            ckpt.metrics[key] = float(data[key])
    if isinstance(data.get("tokens"), int):
        ckpt.tokens = data["tokens"]
    training["loop"] = loop
    ckpt.training_state = training
    return ckpt


def _lightning(path: Path, data: dict) -> Checkpoint:
    weights = _strip_common_prefix(strip_compile_prefix(data["state_dict"]), "model.")
    ckpt = Checkpoint(source=path, source_format="lightning", weights=weights)
    ckpt.step = int(data["global_step"]) if isinstance(data.get("global_step"), int) else step_from_name(path.name)
    if isinstance(data.get("epoch"), int):
        ckpt.epoch = float(data["epoch"])
    training: dict[str, Any] = {}
    if data.get("optimizer_states"):
        training["optimizers"] = list(data["optimizer_states"])
    if data.get("lr_schedulers"):
        training["schedulers"] = list(data["lr_schedulers"])
    training["loop"] = {
        k: v
        for k, v in data.items()
        if k in ("epoch", "global_step", "pytorch-lightning_version", "hyper_parameters") and _plain(v)
    }
    for key in sorted(
        set(data)
        - {
            "state_dict",
            "optimizer_states",
            "lr_schedulers",
            "epoch",
            "global_step",
            "pytorch-lightning_version",
            "hyper_parameters",
        }
    ):
        ckpt.skipped.append((f"{path.name}:{key}", "Lightning entry not carried over"))
    ckpt.training_state = training
    return ckpt
