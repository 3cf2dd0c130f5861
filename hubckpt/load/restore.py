"""`restore`: put a published revision's weights and training state back into live objects, bit for bit.

    resumed = hubckpt.restore("me/exp1", model=model, optimizer=opt, scheduler=sched)   # latest revision
    for step in range(resumed.step + 1, steps + 1): ...

What it reads, all pinned to the revision's commit: `model*.safetensors` (into the model's own
parameters and buffers, see `read_into`), `training_state/` (optimizer, scheduler, grad scaler, RNG,
loop state; safetensors + JSON, no pickle crosses the wire) and `checkpoint.json` (step, epoch,
tokens, metrics). Everything is checked before anything is changed — parameter names and shapes,
the optimizer's type and param-group layout, the scheduler's type — so a mismatch leaves every
object as it was, and the error lists what differs.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import RestoreError, StateMismatchError, TrainingStateMissingError
from ..formats.manifest import TRAINING_STATE_DIR
from ..formats.untrusted import Source, check_type, load_json, printable
from .download import read_capped
from .fit import check_keys, check_optimizer
from .read_into import TensorEntry, read_header, read_tensor, reader_into_fresh_memory
from .resolve import repo_revisions
from .restored import Restored

if TYPE_CHECKING:
    import torch

    from ..formats.index import RevisionIndex

logger = logging.getLogger(__name__)

WEIGHT_FILES = {"model.safetensors", "model.safetensors.index.json"}
_SHARD = re.compile(r"^model-\d{5}-of-\d{5}\.safetensors$")
_HOW_TO_PUBLISH = (
    "Publish revisions with their training state: hubckpt.Checkpointer(repo, model=..., "
    "optimizer=..., scheduler=...).save(step), Publisher.publish(state_dict=..., "
    "training_state={...}), or a Trainer checkpoint folder (optimizer.pt, scheduler.pt, rng_state.pth) "
    "with HubckptCallback / `hubckpt publish`."
)
MAX_LISTED = 20


def read_index(repo_id: str, *, hub: Any = None, token: Any = None) -> RevisionIndex | None:
    """The repo's `revisions.json` on `main`, or None when the repo or the index does not exist yet."""
    from huggingface_hub.errors import RepositoryNotFoundError, RevisionNotFoundError

    try:
        return repo_revisions(repo_id, hub=hub, token=token).index()
    except (RepositoryNotFoundError, RevisionNotFoundError):
        return None


def fetch_revision(
    repo_id: str,
    revision: str | None = None,
    *,
    step: int | None = None,
    hub: Any = None,
    token: Any = None,
    weights: bool = True,
    everything: bool = False,
    ranked_unfetched: bool = False,
) -> tuple[Any, dict, dict]:
    """(RevisionInfo pinned to its commit, checkpoint.json or {}, {path in repo: verified local path}).

    Fetches `training_state/` and `checkpoint.json` (+ the safetensors weights, or every file with
    `everything=True`) into the shared cache, each checked against its sha256. Raises
    `TrainingStateMissingError`, before downloading any weights, for a revision without training state.
    `ranked_unfetched`: a revision published by several ranks (`checkpoint.json` has `ranks`) is not
    fetched (no local paths): `load/shards.py` reads what it needs of it by Range, not whole files.
    """
    from .download import Downloader

    revisions = repo_revisions(repo_id, hub=hub, token=token)
    info = revisions.resolve(revision, step=step)
    downloader = Downloader(revisions.reader)
    files = downloader.revision_files(info)
    state_files = sorted(p for p in files.files if p.startswith(f"{TRAINING_STATE_DIR}/"))
    if not any(p.endswith(".json") for p in state_files):
        raise TrainingStateMissingError(
            f"{repo_id}@{info.name} has no {TRAINING_STATE_DIR}/ (it was published from weights alone), so training "
            f"cannot resume from it; its weights load with hubckpt.load_state_dict / from_pretrained. {_HOW_TO_PUBLISH}"
        )
    manifest = dict(files.manifest or {})
    if ranked_unfetched and manifest.get("ranks"):
        return info, manifest, {}
    if everything:
        wanted = sorted(files.files)
    else:
        wanted = state_files + ([p for p in files.files if p in WEIGHT_FILES or _SHARD.match(p)] if weights else [])
    local = downloader.fetch_many(files, wanted)
    return info, manifest, local


# -- the plan: everything checked before anything changes --------------------------------------------


def weight_entries(local: dict[str, Path]) -> dict[str, TensorEntry]:
    """Every weight tensor of a revision (single file, or shards listed by their index), from the headers."""
    if "model.safetensors.index.json" in local:
        source = Source(path="model.safetensors.index.json")
        doc = check_type(load_json(read_capped(local[source.path or ""], source), source), dict, source, "content")
        weight_map = check_type(doc.get("weight_map") or {}, dict, source, "weight_map")
        entries: dict[str, TensorEntry] = {}
        for shard in sorted(set(weight_map.values())):
            if not isinstance(shard, str) or shard not in local:
                raise source.error(
                    f"it maps tensors to {printable(str(shard), 80)!r}, which the revision does not have"
                )
            entries.update(read_header(local[shard]))
        return entries
    if "model.safetensors" in local:
        return read_header(local["model.safetensors"])
    raise RestoreError("the revision has no model.safetensors (or shards with an index)")


def _listed(lines: list[str]) -> str:
    shown = lines[:MAX_LISTED]
    more = f"\n  ... and {len(lines) - MAX_LISTED} more" if len(lines) > MAX_LISTED else ""
    return "\n  " + "\n  ".join(shown) + more


def plan_weights(model: torch.nn.Module, entries: dict[str, TensorEntry]) -> tuple[list, list[str]]:
    """([(entry, destination tensor)], mismatches) for reading the revision's weights into `model`."""
    targets = model.state_dict()
    tied: dict[tuple, list[str]] = {}
    for name, t in targets.items():
        if t.numel():
            tied.setdefault((t.untyped_storage().data_ptr(), t.storage_offset(), tuple(t.shape)), []).append(name)
    reads, mismatches = [], []
    for name, t in targets.items():
        entry = entries.get(name)
        if entry is None:
            group = (
                tied.get((t.untyped_storage().data_ptr(), t.storage_offset(), tuple(t.shape)), []) if t.numel() else []
            )
            if any(other in entries for other in group if other != name):
                continue  # a tied weight, published once under another of its names
            mismatches.append(f"missing in the revision: {name} {tuple(t.shape)}")
        elif entry.shape != tuple(t.shape):
            mismatches.append(f"shape of {name}: revision {entry.shape}, model {tuple(t.shape)}")
        elif entry.dtype != t.dtype:
            mismatches.append(f"dtype of {name}: revision {entry.dtype}, model {t.dtype}")
        else:
            reads.append((entry, t))
    for name in sorted(set(entries) - set(targets)):
        mismatches.append(f"not in the model: {name} {entries[name].shape}")
    return reads, mismatches


def restore(
    repo_id: str,
    revision: str | None = None,
    *,
    step: int | None = None,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer | None = None,
    scheduler: Any = None,
    scaler: Any = None,
    hub: Any = None,
    token: Any = None,
    strict: bool = True,
) -> Restored:
    """Restore a published revision into `model` (and optimizer / scheduler / scaler / RNG) for exact resume.

    `revision`: a branch, tag or commit, or `latest` (default), `best`, `final`; or `step=`.
    With `strict=False`, weights whose names or shapes differ are left out and listed in
    `Restored.mismatches` (and logged) instead of raising; type mismatches of the optimizer or
    scheduler always raise. Raises `TrainingStateMissingError` when the revision has no training
    state, `StateMismatchError` listing every difference; in both cases nothing was changed.

    Args:
        repo_id: the repo, `namespace/name`.
        revision: a branch, tag or commit, or `latest` (default), `best`, `final`.
        step: the revision published at this training step (instead of `revision`).
        model: the model to load the weights into (in place, into its own tensors).
        optimizer: the optimizer to restore, if any.
        scheduler: the learning-rate scheduler to restore, if any.
        scaler: the grad scaler to restore, if any.
        hub: `local` (default), `hf`, a URL or a `Hub`.
        token: token for that hub; None picks the hub's own.
        strict: raise on weights whose names or shapes differ (False: load the rest, list them).

    Returns:
        A `Restored`: the step to continue from, metrics, `extra`, and what was restored.

    Raises:
        TrainingStateMissingError: the revision was published without `training_state/`.
        StateMismatchError: names, shapes, dtypes, optimizer or scheduler types differ (`mismatches`).
        RevisionLookupError: no revision at that step, or no best/final.
        UnknownRevisionError: no branch, tag or commit of that name.
        IntegrityError: a downloaded file does not match its recorded sha256.
    """
    import torch

    from ..conversion.training_state import load_state, restore_rng
    from .shards import restore_shards, under_ranks

    shards = dict(model=model, optimizer=optimizer, scheduler=scheduler, scaler=scaler, hub=hub, token=token)
    if under_ranks(model):  # collective: every rank reads its own slices (load/shards.py)
        return restore_shards(repo_id, revision, step=step, strict=strict, **shards)
    info, manifest, local = fetch_revision(repo_id, revision, step=step, hub=hub, token=token, ranked_unfetched=True)
    name, commit = info.name, info.commit
    if manifest.get("ranks"):  # published by several ranks: read by Range there, only what this model needs
        return restore_shards(repo_id, commit, strict=strict, **shards)
    state_dir = local[next(p for p in sorted(local) if p.startswith(f"{TRAINING_STATE_DIR}/"))].parent
    parts = sorted(Path(p).stem for p in local if p.startswith(f"{TRAINING_STATE_DIR}/") and p.endswith(".json"))
    fresh = reader_into_fresh_memory()  # load_state reads only <part>.safetensors beside each part's JSON
    state = {
        part: load_state(
            state_dir, part, read_tensors=fresh, source=Source(repo_id, name, f"{TRAINING_STATE_DIR}/{part}.json")
        )
        for part in parts
    }
    loop_state = state.get("loop")
    loop: dict[str, Any] = loop_state if isinstance(loop_state, dict) else {}
    classes = loop.get("classes") or {}

    reads, weight_problems = plan_weights(model, weight_entries(local))
    problems = list(weight_problems) if strict else []
    skipped = [] if strict else list(weight_problems)
    for kind, obj in (("optimizer", optimizer), ("scheduler", scheduler), ("scaler", scaler)):
        if obj is None:
            continue
        if kind not in state:
            (problems if strict else skipped).append(f"{kind}: the revision has no {kind} state")
        elif kind == "optimizer":
            problems += check_optimizer(obj, state[kind], classes.get(kind))
        else:
            problems += check_keys(kind, obj, state[kind], classes.get(kind))
    if problems:
        raise StateMismatchError(
            f"{repo_id}@{name} does not fit what was given ({len(problems)} difference(s); "
            f"nothing was restored):{_listed(problems)}",
            problems,
        )
    if skipped:
        logger.warning("restoring %s@%s without:%s", repo_id, name, _listed(skipped))

    # Apply: the in-memory parts first (their checks mirror torch's own), then the weights, RNG last.
    restored = []
    if optimizer is not None and "optimizer" in state:
        optimizer.load_state_dict(state["optimizer"])
        restored.append("optimizer")
    for kind, obj in (("scheduler", scheduler), ("scaler", scaler)):
        if obj is not None and kind in state:
            obj.load_state_dict(state[kind])
            restored.append(kind)
    with torch.no_grad():
        handles: dict[Path, Any] = {}
        try:
            for entry, dest in reads:
                handle = handles.get(entry.file) or handles.setdefault(entry.file, open(entry.file, "rb"))
                read_tensor(entry, dest, handle=handle)
        finally:
            for handle in handles.values():
                handle.close()
    if "rng" in state:
        restore_rng(state["rng"])
        restored.append("rng")

    step_value = manifest.get("step", loop.get("step", loop.get("global_step")))
    epoch = manifest.get("epoch", loop.get("epoch"))
    tokens = manifest.get("tokens", loop.get("tokens"))
    result = Restored(
        repo_id=repo_id,
        revision=name,
        commit=commit,
        step=step_value,
        epoch=epoch,
        tokens=tokens,
        metrics=dict(manifest.get("metrics") or {}),
        extra=loop.get("extra"),
        parts=restored,
        mismatches=skipped,
        folder=state_dir.parent,
    )
    logger.info(
        "restored %s@%s (commit %s, step %s): weights%s",
        repo_id,
        name,
        commit[:10],
        step_value,
        "".join(f", {p}" for p in restored),
    )
    return result
