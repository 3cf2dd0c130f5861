"""Restore a revision published by several ranks (`checkpoint.json` has `ranks`) on any world size.

    resumed = hubckpt.restore("me/exp1", model=fsdp_model, optimizer=opt)   # on every rank (collective)

The revision holds full tensors: the weights in `model-0000k-of-0000n.safetensors`, the optimizer state
as full tensors keyed `<parameter FQN>.<state key>` in `training_state/optimizer-0000k-of-0000n.safetensors`
(`training_state/optimizer.json`: param groups named by FQN, and which file holds which tensor), each
rank's RNG in `training_state/rng-rank-R`, the loop state in `training_state/loop`. So a revision saved on
any world size, with any layout, restores into any other: what each rank needs is its part of each full tensor,
its box (`sharding.py`: any DTensor placements on any mesh; `Partial` is refused with `HubConfigError`).
Each rank reads only byte ranges of its own part (HTTP Range reads, `lazy.py`): a part of whole dim-0 rows
(FSDP2's `fully_shard`, ColwiseParallel's Shard(0)) is one contiguous range of the tensor's bytes; a part cut
on another dim (RowwiseParallel's Shard(1)) is read as the rows that cover it, one range per run of rows
(`_StridedShard`: several), then sliced, so such a rank reads more bytes than it keeps (for Shard(1) on
n ranks, n times its part). Replicated parameters (DDP, a plain model, tensor parallel's plain norms)
are read whole. The part is the same on the same layout and world size, so that restore is bit-exact.

The revision is resolved once, on rank 0, and its commit broadcast, so every rank reads the same one.
Everything is read and checked before anything changes; a parameter-name or shape mismatch raises
`StateMismatchError` on every rank (their verdicts are exchanged), with the model unchanged. After every
rank's reads the ranks exchange once more, so a read failing on one rank (hub, network, disk) fails every
rank's restore with nothing applied anywhere. A rank that does not come to an exchange within the group's
timeout is a `RankMismatchError` naming what was waited for. RNG states
are restored only when the world size matches the one that saved (`Restored.rng_restored`).

Without a process group (a plain process), it restores the full tensors into a plain model.
"""

from __future__ import annotations

import contextlib
import logging
import math
from typing import TYPE_CHECKING, Any, cast

from ..errors import HubckptError, RankMismatchError, RestoreError, StateMismatchError
from ..formats.untrusted import Source, check_type, load_json, printable
from ..sharding import Box, as_bytes, box_shape, box_slices, byte_shape, local_part, unwrap
from .fit import check_keys, check_optimizer

if TYPE_CHECKING:
    import torch

    from .restored import Restored

logger = logging.getLogger(__name__)

OPTIMIZER_DOC = "training_state/optimizer.json"
SCHEDULER_DOC = "training_state/scheduler.json"
SCALER_DOC = "training_state/scaler.json"


def _world(group: Any) -> tuple[int, int]:
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(group), dist.get_world_size(group)
    return 0, 1


def _together(fn: Any, what: str, repo_id: str, group: Any) -> None:
    """One collective of restore's: a rank that does not arrive within the group's timeout (it did not call
    restore, or ended, died or is stuck) makes it raise `RankMismatchError` naming what it waited for, not
    the process group's own error."""
    try:
        fn()
    except Exception as e:  # noqa: BLE001 - a timeout or a lost peer: one clear error
        raise RankMismatchError(
            f"{repo_id}: rank {_world(group)[0]} waited in vain for the other ranks {what} (every rank must call "
            f"restore(); a rank ended, died, or did not arrive within the process group's timeout): "
            f"{type(e).__name__}: {e}"
        ) from e


def _all(value: Any, group: Any, what: str, repo_id: str) -> list[Any]:
    """Every rank's `value` (just `[value]` without a process group)."""
    import torch.distributed as dist

    rank, world = _world(group)
    if world == 1:
        return [value]
    out: list[Any] = [None] * world
    _together(lambda: dist.all_gather_object(out, value, group=group), what, repo_id, group)
    return out


def under_ranks(model: Any) -> bool:
    """Whether restoring into `model` is collective: a process group of several ranks, or DTensor parameters."""
    import torch.distributed as dist

    if not dist.is_available() or not dist.is_initialized():
        return False
    if dist.get_world_size() > 1:
        return True
    from torch.distributed.tensor import DTensor

    return any(isinstance(p, DTensor) for p in model.parameters())


def _said(failure: Exception | None, rank: int) -> str | None:
    """What a rank tells the others of its failure (None: it has none)."""
    return None if failure is None else f"rank {rank}: {type(failure).__name__}: {failure}"


def _raise_together(failure: Exception | None, said: list[str | None], where: str) -> None:
    """After an exchange of `_said`: raise on every rank if any rank failed, before anything is applied. A
    rank's own hubckpt error is raised as it is; the other ranks (and a failure of another library) raise
    `RestoreError` naming each rank's failure."""
    if failure is not None and isinstance(failure, HubckptError):
        raise failure
    if any(said):
        raise RestoreError(
            f"{where}: nothing was restored on any rank: " + "; ".join(s for s in said if s)
        ) from failure


def restore_shards(
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
    group: Any = None,
    strict: bool = True,
) -> Restored:
    """Collective: every rank restores its slices of a (multi-rank) revision (module docstring). `strict=False`:
    weights whose names, shapes or dtypes differ, and training state the revision lacks, are left out and
    listed in `Restored.mismatches` instead of raising (as `restore` does for one process)."""
    import torch
    import torch.distributed as dist

    from ..conversion.training_state import load_state, restore_rng
    from .loaders import open_revision
    from .resolve import repo_revisions
    from .restored import Restored

    rank, world = _world(group)
    module = unwrap(model)
    # Resolved once: rank 0 finds the commit, every rank reads at it.
    found: list[Any] = [None]
    if rank == 0:
        try:
            info = repo_revisions(repo_id, hub=hub, token=token).resolve(revision, step=step)
            found = [("ok", info.name, info.commit)]
        except Exception as e:  # noqa: BLE001 - told to every rank
            found = [("error", type(e).__name__, str(e))]
    if world > 1:
        src = dist.get_global_rank(group, 0) if group is not None else 0
        _together(
            lambda: dist.broadcast_object_list(found, src=src, group=group), "to resolve the revision", repo_id, group
        )
    kind, name, commit = found[0]
    if kind == "error":
        raise RestoreError(f"{repo_id}: could not resolve the revision to restore: {name}: {commit}")

    with contextlib.ExitStack() as stack:
        # -- plan: names and shapes; every rank's verdict (or its failure to read the plan) exchanged
        failure: Exception | None = None
        problems: list[str] = []
        try:
            lazy = stack.enter_context(open_revision(repo_id, commit, hub=hub, token=token))
            manifest = lazy.rev.reader.read_json("checkpoint.json", commit) or {}
            saved_world = (manifest.get("ranks") or {}).get("world_size")
            small = [p for p in lazy.rev.files.files if p.startswith("training_state/") and p.endswith(".json")]
            mine_rng = f"training_state/rng-rank-{rank:05d}"
            wanted = [p for p in small if not p.startswith("training_state/rng-rank-")]
            same_world = saved_world == world
            if same_world:
                wanted += [p for p in lazy.rev.files.files if p.startswith(mine_rng)]
            local_files = lazy.rev.downloader.fetch_many(lazy.rev.files, sorted(wanted))

            # -- plan: names and shapes, every rank's verdict exchanged before anything changes
            targets: dict[str, torch.Tensor] = {}
            seen: set[int] = set()
            everything = module.state_dict(keep_vars=True)
            for key, value in everything.items():
                if id(value) not in seen:
                    seen.add(id(value))
                    targets[key] = value
            stored = set(lazy.keys())
            tied = dict(lazy.rev.tied)
            problems = [f"missing in the revision: {k}" for k in targets if k not in stored and k not in tied]
            problems += [f"not in the model: {k}" for k in sorted(stored - set(everything) - set(tied))]
            for key, value in targets.items():
                if key in stored and tuple(lazy.shape(key)) != tuple(value.shape):
                    problems.append(
                        f"shape of {key}: {tuple(lazy.shape(key))} in the revision, {tuple(value.shape)} here"
                    )
                elif key in stored and lazy.meta(key).torch_dtype != value.dtype:
                    problems.append(f"dtype of {key}: {lazy.meta(key).torch_dtype} in the revision, {value.dtype} here")
        except Exception as e:  # noqa: BLE001 - told to every rank before anything changes
            failure = e
        told = _all((problems, _said(failure, rank)), group, "to compare the names and shapes", repo_id)
        _raise_together(failure, [t[1] for t in told], f"{repo_id}@{name}")
        verdicts = [t[0] for t in told]
        mismatches: list[str] = []
        if any(verdicts):
            listed = sorted({p for v in verdicts for p in v})
            if strict:
                raise StateMismatchError(
                    f"{repo_id}@{name} does not fit this model ({len(listed)} differences): " + "; ".join(listed[:20]),
                    listed,
                )
            mismatches = listed  # (the metadata is the same on every rank: so is what is left out)
            targets = {
                k: v
                for k, v in targets.items()
                if k in stored and tuple(lazy.shape(k)) == tuple(v.shape) and lazy.meta(k).torch_dtype == v.dtype
            }

        def read(meta_file: str, start: int, dtype: Any, full_shape: tuple, box: Box | None, key: str) -> torch.Tensor:
            """This rank's part (`box`; None: all) of the tensor at byte `start` of `meta_file`, by Range reads:
            whole dim-0 rows (FSDP2) are one contiguous range; any other part is read as the rows covering each
            of its dim-0 runs (one range a run), then sliced on the other dims."""
            item = torch.empty((), dtype=dtype).element_size()
            row_bytes = item * math.prod(full_shape[1:])
            if box is None:
                runs: tuple[tuple[int, int], ...] = ((0, full_shape[0]),) if full_shape else ((0, 1),)
            else:
                runs = box[0]
            out = torch.empty(box_shape(box) if box is not None else full_shape, dtype=dtype)
            flat = out.reshape(-1).view(torch.uint8)
            whole_rows = box is None or all(r == ((0, n),) for r, n in zip(box[1:], full_shape[1:]))
            at = 0
            for first, stop in runs:
                n = (stop - first) * row_bytes
                if not n:
                    continue
                raw, _ = lazy.rev.reader.read_range(
                    meta_file, commit, start + first * row_bytes, start + first * row_bytes + n
                )
                if len(raw) != n:
                    raise RestoreError(f"{repo_id}@{name}/{meta_file}: {key}: read {len(raw)} bytes, expected {n}")
                got = torch.frombuffer(bytearray(raw), dtype=torch.uint8)
                if whole_rows:
                    flat[at : at + n] = got
                    at += n
                    continue
                assert box is not None
                rows = got.reshape(byte_shape((stop - first, *full_shape[1:]), item))
                sub = ((0, stop - first),), *box[1:]
                piece = torch.empty(box_shape(sub), dtype=dtype)
                target = as_bytes(piece)
                for src, into in box_slices(sub, item):
                    target[into] = rows[src]
                flat[at : at + piece.numel() * item] = piece.reshape(-1).view(torch.uint8)
                at += piece.numel() * item
            return out

        # -- read: every rank its parts; then one exchange, so that every rank applies or none does
        try:
            weights: dict[str, torch.Tensor] = {}
            boxes: dict[str, Box | None] = {}
            for key, value in targets.items():
                meta = lazy.meta(key)
                boxes[key] = local_part(value, key)[1]
                weights[key] = read(meta.file, meta.start, meta.torch_dtype, tuple(meta.shape), boxes[key], key)

            loop = (
                load_state(local_files["training_state/loop.json"].parent, "loop")
                if "training_state/loop.json" in local_files
                else {}
            )
            recorded = loop.get("classes") if isinstance(loop, dict) else None
            classes: dict[str, Any] = recorded if isinstance(recorded, dict) else {}
            unfit: list[str] = []  # training state that does not fit what was given (the same on every rank)
            for kind, obj, doc_path in (
                ("optimizer", optimizer, OPTIMIZER_DOC),
                ("scheduler", scheduler, SCHEDULER_DOC),
                ("scaler", scaler, SCALER_DOC),
            ):
                if obj is not None and doc_path not in local_files:
                    (unfit if strict else mismatches).append(f"{kind}: the revision has no {kind} state")
            opt_state: dict[str, Any] | None = None
            parts: list[str] = []
            if optimizer is not None and OPTIMIZER_DOC in local_files:
                names = {id(p): n for n, p in module.named_parameters()}
                by_name = {n: p for n, p in module.named_parameters()}
                source = Source(repo_id, name, OPTIMIZER_DOC)
                doc = _optimizer_doc(local_files[OPTIMIZER_DOC], source, set(by_name), set(lazy.rev.files.files))
                index_of: dict[str, int] = {}
                for g in optimizer.param_groups:
                    for p in g["params"]:
                        index_of[names[id(p)]] = len(index_of)
                saved_groups = doc["param_groups"]
                if [len(g["params"]) for g in saved_groups] != [
                    len(g["params"]) for g in optimizer.param_groups
                ] or any(n not in index_of for g in saved_groups for n in g["params"]):
                    raise StateMismatchError(
                        f"{repo_id}@{name}: the optimizer's param groups differ from the saved ones"
                    )
                state: dict[int, dict[str, Any]] = {}
                for tensor_name, file in sorted(doc["weight_map"].items()):
                    fqn, _, key = tensor_name.rpartition(".")
                    header, data_start = lazy._header(file)
                    entry = header.get(tensor_name)
                    if not isinstance(entry, dict):
                        raise source.error(f"it maps {printable(tensor_name, 80)!r} to {file}, which does not hold it")
                    param = by_name[fqn]
                    dtype = _dtype(entry["dtype"])
                    full_shape = tuple(entry["shape"])
                    from torch.distributed.tensor import DTensor

                    # A DTensor parameter's state of its own shape is a DTensor of its layout (any placements): this
                    # rank reads its part. Other state (a step count) is read whole.
                    distributed = isinstance(param, DTensor) and full_shape == tuple(param.shape)
                    box = local_part(param, fqn)[1] if distributed else None
                    start = data_start + entry["data_offsets"][0]
                    value = read(file, start, dtype, full_shape, box, tensor_name)
                    if distributed:
                        dparam = cast(Any, param)
                        value = DTensor.from_local(
                            value,
                            dparam.device_mesh,
                            dparam.placements,
                            run_check=False,
                            shape=param.shape,
                            stride=param.stride(),
                        )
                    state.setdefault(index_of[fqn], {})[key] = value
                groups = [{**g, "params": [index_of[n] for n in g["params"]]} for g in saved_groups]
                opt_state = {"state": state, "param_groups": groups}
                unfit += check_optimizer(optimizer, opt_state, classes.get("optimizer"))
                parts.append("optimizer")
            sched = None
            if scheduler is not None and SCHEDULER_DOC in local_files:
                sched = load_state(local_files[SCHEDULER_DOC].parent, "scheduler")
                unfit += check_keys("scheduler", scheduler, sched, classes.get("scheduler"))
            scaled = None
            if scaler is not None and SCALER_DOC in local_files:
                scaled = load_state(local_files[SCALER_DOC].parent, "scaler")
                unfit += check_keys("scaler", scaler, scaled, classes.get("scaler"))
            if unfit:
                raise StateMismatchError(
                    f"{repo_id}@{name} does not fit what was given ({len(unfit)} difference(s); nothing was restored): "
                    + "; ".join(unfit[:20]),
                    unfit,
                )
            rng = None
            if same_world and f"{mine_rng}.json" in local_files:
                rng = load_state(local_files[f"{mine_rng}.json"].parent, f"rng-rank-{rank:05d}")
        except Exception as e:  # noqa: BLE001 - told to every rank before anything is applied
            failure = e
    said = _all(_said(failure, rank), group, "to say whether they read their parts", repo_id)
    _raise_together(failure, said, f"{repo_id}@{name}")

    # -- apply: everything was read and checked
    with torch.no_grad():
        for key, value in targets.items():
            local_part(value, key)[0].copy_(weights[key])
    if opt_state is not None:
        optimizer.load_state_dict(opt_state)  # type: ignore[union-attr]
    if sched is not None:
        scheduler.load_state_dict(sched)
        parts.append("scheduler")
    if scaled is not None:
        scaler.load_state_dict(scaled)
        parts.append("scaler")
    if rng is not None:
        restore_rng(rng)
        parts.append("rng")
    elif saved_world is not None and saved_world != world:
        logger.info(
            "%s@%s was saved on %s ranks, restored on %s: RNG states not restored", repo_id, name, saved_world, world
        )
    if mismatches:
        logger.warning("restoring %s@%s without: %s", repo_id, name, "; ".join(mismatches[:20]))
    restored = Restored(
        repo_id,
        name,
        commit,
        manifest.get("step"),
        epoch=manifest.get("epoch"),
        tokens=manifest.get("tokens"),
        metrics=dict(manifest.get("metrics") or {}),
        extra=loop.get("extra") if isinstance(loop, dict) else None,
        parts=parts + (["loop"] if loop else []),
        mismatches=mismatches,
    )
    restored.rng_restored = rng is not None
    return restored


def _optimizer_doc(path: Any, source: Source, params: set[str], files: set[str]) -> dict[str, Any]:
    """`training_state/optimizer.json`, checked (untrusted: read from a hub): param groups naming this model's
    parameters, and a weight map from `<parameter>.<state key>` to a file of the revision. A
    `HubContentError` (nothing changed yet) for anything else, not a KeyError from deep in the restore."""
    from .download import read_capped

    doc = check_type(load_json(read_capped(path, source), source), dict, source, "content")
    groups = check_type(doc.get("param_groups"), list, source, "param_groups")
    for group in groups:
        check_type(group, dict, source, "param group")
        for fqn in check_type(group.get("params"), list, source, "param group's params"):
            check_type(fqn, str, source, "parameter name")
    weight_map = check_type(doc.get("weight_map"), dict, source, "weight_map")
    for tensor_name, file in weight_map.items():
        fqn = tensor_name.rpartition(".")[0]
        if fqn not in params:
            raise source.error(
                f"it holds state of {printable(tensor_name, 80)!r}, a parameter this model does not have"
            )
        if not isinstance(file, str) or file not in files:
            raise source.error(
                f"it maps {printable(tensor_name, 80)!r} to {printable(str(file), 80)!r}, not a file of the revision"
            )
    return doc


def _dtype(name: str) -> Any:
    from .lazy import torch_dtype

    return torch_dtype(name)


__all__ = ["restore_shards", "under_ranks"]
