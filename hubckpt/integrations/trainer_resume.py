"""Turn a published revision back into a folder `Trainer.train(resume_from_checkpoint=DIR)` accepts.

The stock Trainer reads `optimizer.pt`, `scheduler.pt`, `scaler.pt`, `rng_state*.pth` and
`trainer_state.json` next to the weights, and cannot read a safetensors optimizer state. A revision
keeps all of that pickle-free in `training_state/`; here it is re-materialised *locally* as
`torch.save` files of plain tensors, lists and numbers, which load with `torch.load(weights_only=True)`
(no allowlist needed: numpy RNG arrays are written as lists, which numpy's `set_state` accepts).

    hubckpt pull me/exp1@step-0000500 ckpt --trainer-checkpoint
    trainer.train(resume_from_checkpoint="ckpt")

The Trainer's `log_history` is not part of the published training state; `HubckptCallback` publishes
it as `log_history.json` beside the weights, and it is merged back into `trainer_state.json` here.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import uuid
from pathlib import Path
from typing import Any

from ..errors import DestinationExistsError, TrainingStateMissingError
from ..formats.manifest import TRAINING_STATE_DIR, read_manifest

logger = logging.getLogger(__name__)

LOG_HISTORY_FILE = "log_history.json"
_NOT_COPIED = {"README.md", LOG_HISTORY_FILE, ".gitattributes"}


def require_training_state(paths, where: str) -> None:
    """TrainingStateMissingError unless `paths` (of a revision) include training_state/ parts."""
    if not any(str(p).startswith(f"{TRAINING_STATE_DIR}/") and str(p).endswith(".json") for p in paths):
        raise TrainingStateMissingError(
            f"{where} has no {TRAINING_STATE_DIR}/, so a Trainer cannot resume from it. Publish Trainer checkpoints "
            "with HubckptCallback (or `hubckpt publish` of checkpoint-N/ folders with optimizer.pt, scheduler.pt, "
            "rng_state.pth), or plain loops with hubckpt.Checkpointer."
        )


def _plain(value: Any) -> Any:
    """The same state with numpy arrays and scalars as lists and Python numbers (weights_only-loadable)."""
    if type(value).__module__ == "numpy":
        return value.tolist() if hasattr(value, "tolist") else value
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    if isinstance(value, tuple):
        return tuple(_plain(v) for v in value)
    return value


def _trainer_state(loop: dict, manifest: dict, folder: Path) -> dict:
    """trainer_state.json: the Trainer's own (published as the `loop` part), else one built from the loop state."""
    if "global_step" in loop:
        state = dict(loop)
    else:  # a Checkpointer revision: enough for the Trainer to know where it is
        state = {
            "global_step": loop.get("step", manifest.get("step")) or 0,
            "epoch": loop.get("epoch", manifest.get("epoch")) or 0.0,
            "num_input_tokens_seen": loop.get("tokens") or 0,
        }
    history = folder / LOG_HISTORY_FILE
    if history.is_file():  # a file of somebody's repo: capped, and a list of records or nothing
        from ..formats.untrusted import Source, check_type, load_json
        from ..load.download import read_capped

        source = Source(path=LOG_HISTORY_FILE)
        doc = check_type(load_json(read_capped(history, source), source), dict, source, "content")
        state["log_history"] = check_type(doc.get("log_history") or [], list, source, "log_history")
    state.setdefault("log_history", [])
    return state


def write_trainer_checkpoint(revision_folder: str | Path, dest: str | Path, *, overwrite: bool = False) -> Path:
    """Write `dest` as a Trainer checkpoint folder from a downloaded revision folder; return `dest`."""
    import torch

    from ..conversion.training_state import load_state
    from ..load.read_into import reader_into_fresh_memory

    src, dest = Path(revision_folder), Path(dest)
    if dest.exists() and any(dest.iterdir()) and not overwrite:
        raise DestinationExistsError(
            f"{dest} already exists and is not empty; choose another folder or pass overwrite=True (CLI: --overwrite)"
        )
    state_dir = src / TRAINING_STATE_DIR
    parts = sorted(p.stem for p in state_dir.glob("*.json")) if state_dir.is_dir() else []
    require_training_state([f"{TRAINING_STATE_DIR}/{p}.json" for p in parts], src.name)
    fresh = reader_into_fresh_memory()
    state = {part: load_state(state_dir, part, read_tensors=fresh) for part in parts}
    manifest = read_manifest(src) or {}

    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.parent / f".{dest.name}.tmp-{uuid.uuid4().hex[:12]}"
    tmp.mkdir()
    try:
        for path in sorted(src.iterdir()):
            if path.is_file() and path.name not in _NOT_COPIED:
                shutil.copyfile(path, tmp / path.name)  # resolves the cache's symlinks: a self-contained folder
        for part, filename in (("optimizer", "optimizer.pt"), ("scheduler", "scheduler.pt"), ("scaler", "scaler.pt")):
            if part in state:
                torch.save(_plain(state[part]), tmp / filename)
        rng = state.get("rng") or {}
        per_rank = (
            {k: v for k, v in rng.items() if k.startswith("rng_state")} if "python" not in rng else {"rng_state": rng}
        )
        for name, value in sorted(per_rank.items()):
            torch.save(_plain(value), tmp / f"{name}.pth")
        loop = state.get("loop")
        if not isinstance(loop, dict):
            loop = {}
        (tmp / "trainer_state.json").write_text(
            json.dumps(_trainer_state(loop, manifest, src), indent=2, sort_keys=True) + "\n"
        )
        if dest.exists():
            shutil.rmtree(dest)
        os.replace(tmp, dest)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    logger.info("wrote Trainer checkpoint %s (%s)", dest, ", ".join(sorted(p.name for p in dest.iterdir())))
    return dest


def pull_trainer_checkpoint(
    repo_id: str,
    revision: str | None,
    dest: str | Path,
    *,
    step: int | None = None,
    hub: Any = None,
    token: Any = None,
    overwrite: bool = False,
) -> Path:
    """Download a revision (pinned to its commit) and write it to `dest` as a Trainer checkpoint folder."""
    from ..load.restore import fetch_revision

    info, _, local = fetch_revision(repo_id, revision, step=step, hub=hub, token=token, everything=True)
    top = [path for name, path in local.items() if "/" not in name]
    logger.info("pulled %s@%s (commit %s)", repo_id, info.name, info.commit[:10])
    return write_trainer_checkpoint(top[0].parent, dest, overwrite=overwrite)


def log_history_file(checkpoint_folder: Path) -> Path | None:
    """Write the Trainer's log_history next to its checkpoint (published as a companion); None if absent."""
    state_path = checkpoint_folder / "trainer_state.json"
    try:
        history = json.loads(state_path.read_text()).get("log_history")
    except (OSError, ValueError):
        return None
    if not history:
        return None
    path = checkpoint_folder / LOG_HISTORY_FILE
    path.write_text(json.dumps({"log_history": history}, indent=2, sort_keys=True) + "\n")
    return path
