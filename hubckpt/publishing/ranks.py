"""Multi-rank publishing: every rank publishes its share of one revision, with no gather on rank 0.

Under an initialized default process group (`torchrun`, `accelerate launch`), `hubckpt.Checkpointer(...)`
builds a `RankedCheckpointer` (`Checkpointer.__new__`), and `save` / `wait` / `close` are collectives: every
rank calls them in the same order, with the same step. What happens for one save:

1. **agree** (training thread, not waited for): the ranks start exchanging (step, repo) on a small gloo group
   of ours (an asynchronous all_gather), so a slower rank does not stall this one. Ranks that disagree all
   get `RankMismatchError` naming every rank's step, and nothing is published: from `save()` when the
   exchange is done by the end of the capture, else from the background before anything is sent (the
   Future, `wait()`, `close()`). A rank that does not come within `rank_timeout` seconds makes the others
   raise it too (never a hang); the Checkpointer is then out of step and says so at once on every later call.
2. **capture** (training thread): each rank copies only its local shards (a DTensor's local tensor, of any
   placements on any device mesh: FSDP2, tensor parallel, both on a 2-D mesh, HSDP, uneven shards; a
   replicated / DDP model: its whole copy) into reused staging buffers, and notes which part of each full
   tensor it holds (its box, `sharding.py`: cached, metadata only). Training resumes.
3. **split** (background thread): the parameters (and optimizer state tensors, keyed by parameter name) are
   assigned to ranks in groups balanced by bytes, once (again when the state's tensors change), from
   metadata every rank exchanges in the background (each rank's box of each tensor; the distinct parts must
   tile the tensor). Every rank sends each owner its parts of the owner's group, point-to-point (gloo, on a
   second group of ours, so the background never shares a group with the training thread; every pair's both
   directions at once): each distinct part once, by one of the ranks holding it (replicas take turns; the
   owner sends nothing it holds itself over the wire). Whole dim-0 rows of a row-major tensor (FSDP2's
   shards) are contiguous bytes of the full tensor: received straight into their place, sent straight from
   the staging buffer; other parts are received into a buffer and copied by their runs. No rank ever holds
   more than its own group in full.
4. **write and record**: each owner writes `model-0000k-of-0000n.safetensors` (and
   `training_state/optimizer-0000k-of-0000n.safetensors`), every rank its own `training_state/rng-rank-R`
   files, into its own spool folder (`<spool>/rank-0000R-of-0000W/<revision>/`), hashing them; rank 0 also
   the small files (config, index, optimizer groups, loop / scheduler state) and the manifest but for its
   list of files (`_prepare`). Once the small ones are fsync'd, the rank records them in its journal
   (`rank_journal.py`: path, sha256, size; rank 0 also what it commits).
5. **upload**: each rank uploads its own files as LFS objects (`hub/uploaded.py`); the ranks exchange what
   each uploaded; if any failed, every rank's save fails with it.
6. **commit**: rank 0 completes checkpoint.json (world size, sharding, every file), makes the single commit
   of the revision, referencing the other ranks' uploads, then updates the index and applies retention as a
   single-process publish does (`stages`). The outcome is exchanged, so every rank's Future settles the
   same way; then each rank records the job finished and removes its folder.

A revision is visible whole or not at all: nothing is on a branch until the one commit. Only the first
hub (`hub=`) is published to.

**Waits are bounded.** A collective of the training thread waits at most `rank_timeout` (default 300 s) for
the other ranks; one of the background at most `background_timeout` (default: `rank_timeout`). The long
parts of a save, the uploads and rank 0's commit (which may wait for the hub's commit budget), run on a
helper thread while the backgrounds exchange a heartbeat every `HEARTBEAT_S`: they are bounded by the hub
requests' own stall bound (`HUBCKPT_HTTP_TIMEOUT` per request, with retries), not by `background_timeout`,
and a background that stops answering (stuck, or its process gone) makes every other rank's save fail
with `RankMismatchError` within `background_timeout` of its last answer. Out of step after that, the
Checkpointer's next `save()` raises at once.

**Crash safety.** A rank killed anywhere takes the job down (torchrun). Before every rank has recorded its
files of the revision in flight, the re-run redoes that step by training (`restore()` resumes from the latest
revision). After that, the re-run's `Checkpointer(...)` finishes it: every rank reads its journal, the ranks
exchange the jobs they hold (`_recover`, collective), and a job every rank holds completely (same repo,
world size, step, layout; its files present at their recorded sizes) is queued ahead of any save: each
rank uploads its files again (objects the hub has are not sent again; their sha256 is checked against the
journal), then rank 0 commits, unless the hub holds that revision with that content (`stages.read_view(...)
.holds`), or the branch holds it not yet indexed (`HubTarget.commit_revision` returns it, then it is
indexed). The journal is never trusted about the hub. Jobs some rank lacks are dropped with a log line
saying why, and redone by training. `restore()` waits for that first, so the latest revision it resolves
(once, on rank 0) includes what the journals finished. A save that failed because the ranks lost each other
(`RankMismatchError` in the background) stays recorded too, for the next `Checkpointer` to finish.
"""

from __future__ import annotations

import datetime as dt
import functools
import json
import logging
import math
import queue
import threading
import time
from collections.abc import Iterable
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import HubConfigError, PublishError, PublishFailedError, RankMismatchError, RestoreError
from ..faults import fault
from ..sharding import Box, box_numel, box_shape, box_slices, local_part, row_range, unwrap
from .checkpointer import LOOP_FORMAT, Checkpointer, class_name, model_files, publish_options
from .jobs import target_key
from .rank_journal import COMMIT_FOLDER, Pending, RankJournal, decide, fsync_files, layout_digest
from .staging import StagingPool, StagingSet

if TYPE_CHECKING:
    import torch

    from ..hub.uploaded import UploadedFile
    from .pipeline import PublishedRevision

logger = logging.getLogger(__name__)

RANKS_FORMAT = "hubckpt.ranks/1"
DEFAULT_RANK_TIMEOUT = 300.0  # seconds a collective of ours waits for the other ranks
PARTS_TAG = 1000  # + the tensor's index in the layout: the tag of its part's point-to-point send (`_assemble`)
HEARTBEAT_S = 0.5  # while ranks upload or commit, their backgrounds tell each other they are alive this often
WEIGHTS_INDEX = "model.safetensors.index.json"


def distributed_world() -> tuple[int, int] | None:
    """(rank, world size) under an initialized default process group, else None."""
    try:
        import torch.distributed as dist
    except ImportError:  # pragma: no cover - torch without distributed support
        return None
    if not dist.is_available() or not dist.is_initialized():
        return None
    return dist.get_rank(), dist.get_world_size()


def wants_ranks(model: Any) -> bool:
    """Whether a Checkpointer for `model` publishes collectively: several ranks, or DTensor parameters."""
    world = distributed_world()
    if world is None:
        return False
    if world[1] > 1:
        return True
    from torch.distributed.tensor import DTensor

    return any(isinstance(p, DTensor) for p in model.parameters())


def model_class_name(model: Any) -> str:
    """The model's own class name: not FSDP2's `FSDP<Name>` wrapper class, which subclasses it."""
    try:
        from torch.distributed.fsdp import FSDPModule
    except ImportError:  # pragma: no cover
        return type(model).__name__
    for cls in type(model).__mro__:
        if not issubclass(cls, FSDPModule):
            return cls.__name__
    return type(model).__name__  # pragma: no cover


def _now() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass
class Item:
    """One tensor of the published state, as every rank sees it (metadata only)."""

    name: str  # key in its safetensors file
    group: str  # "model" or "optimizer"
    shape: tuple[int, ...]  # full shape
    dtype: str
    boxes: list[Box | None] | None = None  # the part each rank holds (`sharding.py`); None: every rank, whole
    owner: int = 0

    @functools.cached_property
    def itemsize(self) -> int:
        import torch

        return torch.empty((), dtype=getattr(torch, self.dtype)).element_size()

    @property
    def row_bytes(self) -> int:
        return math.prod(self.shape[1:]) * self.itemsize

    @property
    def nbytes(self) -> int:
        return math.prod(self.shape) * self.itemsize

    @property
    def rows(self) -> list[int] | None:
        """Rows per rank when the ranks hold consecutive dim-0 blocks in rank order (FSDP2's `fully_shard` on
        one mesh: the first layout hubckpt published, recorded as `rows`); else None."""
        if self.boxes is None:
            return None
        rows, at = [], 0
        for box in self.boxes:
            if box is not None and not box_numel(box):
                rows.append(0)
                continue
            span = row_range(box, self.shape)
            if span is None or span[0] != at:
                return None
            rows.append(span[1] - span[0])
            at = span[1]
        return rows if at == self.shape[0] else None

    def parts(self) -> dict[Box, list[int]]:
        """Each distinct non-empty part and the ranks holding it (replicas: several), in rank order."""
        held: dict[Box, list[int]] = {}
        for r, box in enumerate(self.boxes or []):
            if box is not None and box_numel(box):
                held.setdefault(box, []).append(r)
        return held


@dataclass
class Layout:
    """Which rank owns (writes) which tensor, and who sends it which part; the same on every rank."""

    world: int
    items: list[Item]
    tied: dict[str, str] = field(default_factory=dict)  # alias left out → name kept
    signature: tuple = ()
    _plans: dict[int, tuple[list[tuple[Item, list[tuple[int, Box]]]], list[int]]] = field(
        default_factory=dict, repr=False
    )
    _json: dict[str, Any] | None = field(default=None, repr=False)
    _digest: str | None = field(default=None, repr=False)

    def files(self, group: str) -> dict[int, str]:
        """owner rank → its file of `group` (owners without tensors of the group have none)."""
        owners = sorted({i.owner for i in self.items if i.group == group})
        n = len(owners)
        prefix = "model" if group == "model" else "training_state/optimizer"
        return {r: f"{prefix}-{k + 1:05d}-of-{n:05d}.safetensors" for k, r in enumerate(owners)}

    def plan(self, owner: int) -> tuple[list[tuple[Item, list[tuple[int, Box]]]], list[int]]:
        """What `owner` receives: for each tensor it owns and does not hold whole, each part once, with the
        rank that sends it (the owner itself where it holds that part, else one of its holders, taken in turn
        from tensor to tensor so that replicas share the sending); and the bytes each rank sends it."""
        if owner in self._plans:
            return self._plans[owner]
        plan: list[tuple[Item, list[tuple[int, Box]]]] = []
        sizes = [0] * self.world
        for k, item in enumerate(self.items):
            if item.owner != owner or item.boxes is None or item.boxes[owner] is None:
                continue
            parts = []
            for box, holders in item.parts().items():
                sender = owner if owner in holders else holders[k % len(holders)]
                parts.append((sender, box))
                sizes[sender] += box_numel(box) * item.itemsize
            plan.append((item, parts))
        self._plans[owner] = (plan, sizes)
        return plan, sizes

    def digest(self) -> str:
        """The layout's identity in the journals (`layout_digest` of `to_json()`), computed once per layout."""
        if self._digest is None:
            self._digest = layout_digest(self.to_json())
        return self._digest

    def to_json(self) -> dict[str, Any]:
        """checkpoint.json's `ranks`: per tensor its group, shape, dtype and owner, and which part each rank held:
        `rows` (rows per rank, in rank order) for consecutive dim-0 blocks (FSDP2 on one mesh: the format of the
        first multi-rank revisions, kept), else `layout`, an index into `layouts`: each distinct part (`box`: per
        dim, the runs [start, stop) of global indices) with the ranks holding it. Tensors with the same parts
        (every layer's q_proj, a weight and its optimizer moments) share one entry, so the file stays small at
        1,024 ranks. Neither is set for a tensor every rank holds whole."""
        if self._json is not None:  # (the same layout serves every save until the state's tensors change)
            return self._json
        tensors: dict[str, Any] = {}
        layouts: dict[tuple, int] = {}
        listed: list[Any] = []
        for i in self.items:
            entry: dict[str, Any] = {
                "group": i.group,
                "shape": list(i.shape),
                "dtype": i.dtype,
                "rows": i.rows,
                "owner": i.owner,
            }
            if i.boxes is not None and entry["rows"] is None:  # any other layout: each part and its holders
                key = tuple(i.boxes)
                if key not in layouts:
                    layouts[key] = len(listed)
                    listed.append(
                        [
                            {"box": [[list(run) for run in runs] for runs in box], "ranks": holders}
                            for box, holders in i.parts().items()
                        ]
                    )
                entry["layout"] = layouts[key]
            tensors[i.name] = entry
        doc: dict[str, Any] = {"world_size": self.world, "tensors": tensors, "tied": self.tied}
        if listed:
            doc["layouts"] = listed
        self._json = doc
        return doc


_KINDS = ("save", "close")


@dataclass
class Agreement:
    """An agreement of the ranks on one call, started (an asynchronous all_gather) and not yet checked."""

    call: tuple
    work: Any  # torch.distributed Work
    gathered: list[Any]
    mine: Any
    what: str


@dataclass
class _CaptureFailed:
    """A save this rank could not capture: its background tells the other ranks' (`_handshake`)."""

    agreement: Agreement | None  # still to be settled, if not settled in save()
    error: str


@dataclass
class _Recover:
    """A job this rank's journal holds written and every rank can finish (`_recover`)."""

    pending: Pending


def build_layout(world: int, everyone: list[tuple], tied: dict[str, str], signature: tuple = ()) -> Layout:
    """The layout from every rank's signature ((name, group, shape, dtype, box) per tensor): the same tensors on
    every rank, their parts tiling each tensor (every element held, each distinct part once), owners balanced
    by bytes (deterministic: every rank computes the same)."""
    names = [tuple(x[:4]) for x in everyone[0]]
    for r, theirs in enumerate(everyone):
        if [tuple(x[:4]) for x in theirs] != names:
            diff = sorted(set(map(str, names)) ^ set(str(tuple(x[:4])) for x in theirs))[:5]
            raise RankMismatchError(
                f"rank {r} holds other tensors (names, shapes or dtypes) than rank 0: {', '.join(diff)}"
            )
    items = []
    for k, (name, group, shape, dtype) in enumerate(names):
        boxes: list[Box | None] | None = [theirs[k][4] for theirs in everyone]
        if boxes is not None and all(b is None for b in boxes):
            boxes = None
        elif boxes is not None:  # a rank holding it whole holds the one part that is all of it
            whole = tuple(((0, n),) for n in shape)
            boxes = [whole if b is None else b for b in boxes]
        item = Item(name, group, tuple(shape), dtype, boxes)
        if boxes is not None:
            held = sum(box_numel(b) for b in item.parts())
            if held != math.prod(shape):
                raise HubConfigError(
                    f"{name}: the ranks' distinct parts hold {held} elements of its {math.prod(shape)} "
                    f"(shape {tuple(shape)}): they overlap or leave a gap, so hubckpt cannot put the tensor together"
                )
        items.append(item)
    loads = [0] * world
    for item in sorted(items, key=lambda i: (-i.nbytes, i.name)):  # balanced by bytes, deterministic
        item.owner = min(range(world), key=lambda r: (loads[r], r))
        loads[item.owner] += item.nbytes
    return Layout(world, items, dict(tied), signature)


@dataclass
class Exchange:
    """What one rank sends and receives to put together the tensors it owns (`route`): point-to-point
    messages, one per part, tagged with `PARTS_TAG` + the tensor's index in the layout (each rank sends at
    most one part of a tensor, so (sender, owner, tag) names one message)."""

    full: dict[str, torch.Tensor]  # the tensors this rank owns, filled by the receives and `finish()`
    sends: list[tuple[int, int, torch.Tensor]]  # (owner, tag, the part's bytes: a view of the staging buffer)
    recvs: list[tuple[int, int, torch.Tensor]]  # (sender, tag, where the bytes land)
    scattered: list[tuple[torch.Tensor, Item, Box, torch.Tensor]]  # (full value, item, box, its bytes)

    def finish(self) -> dict[str, torch.Tensor]:
        """After every receive: the parts that are not whole dim-0 rows copied into place by their runs."""
        from ..sharding import as_bytes, byte_shape

        for value, item, box, raw in self.scattered:
            local = raw.reshape(byte_shape(box_shape(box), item.itemsize))
            target = as_bytes(value)
            for into, src in box_slices(box, item.itemsize):
                target[into] = local[src]
        return self.full


def route(layout: Layout, rank: int, staged: dict[str, torch.Tensor]) -> Exchange:
    """`rank`'s part of putting the owners' tensors together (`Layout.plan`: each distinct part sent once, by
    one of the ranks holding it): each part it sends, straight from its staging buffer; for each tensor it
    owns, the parts it receives, straight into their place in the full tensor where they are whole dim-0
    rows (a row-major tensor's rows are contiguous bytes: FSDP2's shards), else into a buffer copied by its
    runs at `finish()`. Its own parts are copied here, tensors it holds whole cloned (the staging buffers
    take the next capture)."""
    import torch

    ex = Exchange({}, [], [], [])
    index = {id(item): k for k, item in enumerate(layout.items)}
    for owner in range(layout.world):
        for item, parts in layout.plan(owner)[0]:
            tag = PARTS_TAG + index[id(item)]
            if owner != rank:
                ex.sends += [(owner, tag, _bytes(staged[item.name])) for sender, _ in parts if sender == rank]
                continue
            value = torch.empty(item.shape, dtype=getattr(torch, item.dtype))
            ex.full[item.name] = value
            flat = value.reshape(-1).view(torch.uint8)
            for sender, box in parts:
                rows = row_range(box, item.shape)
                into = None if rows is None else flat[rows[0] * item.row_bytes : rows[1] * item.row_bytes]
                if sender == rank:
                    if into is not None:
                        into.copy_(_bytes(staged[item.name]))
                    else:
                        ex.scattered.append((value, item, box, _bytes(staged[item.name])))
                    continue
                if into is None:
                    into = torch.empty(box_numel(box) * item.itemsize, dtype=torch.uint8)
                    ex.scattered.append((value, item, box, into))
                ex.recvs.append((sender, tag, into))
    for item in layout.items:  # held whole here (replicated)
        if item.owner == rank and item.name not in ex.full:
            ex.full[item.name] = staged[item.name].clone()
    return ex


def _bytes(t: torch.Tensor) -> torch.Tensor:
    import torch

    return t.contiguous().reshape(-1).view(torch.uint8)


def rank0_error(outcome: tuple, failure: Exception | None, fallback: type, context: str) -> Exception:
    """The error every rank raises for what failed on rank 0 (`outcome`: ("error", class name, message)): the
    same hubckpt error class and message on every rank (rank 0 raises its own); an error of another library
    becomes `fallback` naming it."""
    from .. import errors

    _, kind, message = outcome
    cls = getattr(errors, kind, None)
    if isinstance(cls, type) and issubclass(cls, errors.HubckptError):
        if failure is not None:
            return failure
        error = cls.__new__(cls)  # (its own __init__ may want more than the message: the message is what is told)
        error.args = (message,)
        return error
    return fallback(f"{context}: {kind}: {message}")


_WARNED_WORLDS: set[tuple[str, tuple[str, ...]]] = set()  # (spool, folders) said already in this process


def _warn_other_worlds(base: Path, world: int, rank: int) -> None:
    """One warning (once per process and spool) naming the journal folders of another world size in `base`:
    a re-run on W ranks reads only `rank-*-of-W`, so the saves a job on another world size left unfinished
    are never finished nor dropped by this one. Never deleted here: another job may own them (its lock says
    whether one runs on this host now)."""
    from ..errors import SpoolBusyError
    from .jobs import lock_spool, release_spool

    others = sorted(
        p
        for p in base.glob("rank-*-of-*")
        if p.is_dir() and p.name.rpartition("-of-")[2].isdigit() and int(p.name.rpartition("-of-")[2]) != world
    )
    key = (str(base), tuple(p.name for p in others))
    if not others or key in _WARNED_WORLDS:
        return
    _WARNED_WORLDS.add(key)
    described = []
    for folder in others:
        jobs = sum(1 for p in folder.iterdir() if p.is_dir() and p.name != "model-files")
        try:
            lock = lock_spool(folder)
        except SpoolBusyError as e:
            described.append(f"{folder.name} ({jobs} unfinished save folder(s); in use: {e})")
        except OSError as e:
            described.append(f"{folder.name} ({jobs} unfinished save folder(s); not readable: {e})")
        else:
            release_spool(folder, lock)
            described.append(f"{folder.name} ({jobs} unfinished save folder(s); no process holds it)")
    logger.warning(
        "rank %d: %s holds journals of another world size than this job's %d, which this job neither finishes "
        "nor removes: %s. A job on that world size with this spool resumes them; if none will, remove the "
        "folders no process holds (rm -r %s/rank-*-of-<W>)",
        rank,
        base,
        world,
        "; ".join(described),
        base,
    )


class RankedCheckpointer(Checkpointer):
    """The `Checkpointer` under torch.distributed (module docstring). Built by `Checkpointer(...)` on every rank.

    Extra arguments: `rank_timeout` (seconds, default 300): how long a collective of ours waits for the
    other ranks before every rank raises `RankMismatchError`. `background_timeout` (seconds, default
    `rank_timeout`): how long one rank's background waits for the other ranks' backgrounds to arrive at
    an exchange; their uploads and rank 0's commit do not count against it (they are alive: they say so
    every `HEARTBEAT_S`), those are bounded by the hub requests' own stall bound (`HUBCKPT_HTTP_TIMEOUT`).
    """

    def __init__(
        self,
        repo_id: str,
        *,
        model: torch.nn.Module,
        optimizer: torch.optim.Optimizer | None = None,
        scheduler: Any = None,
        scaler: Any = None,
        hub: Any = None,
        every: int | None = None,
        monitor: str | None = None,
        mode: str | None = None,
        companions: Iterable[Any] = (),
        staging_sets: int = 1,
        background: str | None = None,
        nice: int | str | None = None,
        publish_mb_per_s: float | str | None = "auto",
        rank_timeout: float = DEFAULT_RANK_TIMEOUT,
        background_timeout: float | None = None,
        **publisher_options: Any,
    ) -> None:
        import torch.distributed as dist

        from ..names import split_repo_id
        from .jobs import default_spool
        from .publisher import hub_targets
        from .stages import Run

        split_repo_id(repo_id)
        if staging_sets < 1:
            raise HubConfigError(f"staging_sets must be at least 1, got {staging_sets}")
        world = distributed_world()
        assert world is not None
        self.rank, self.world = world
        self.repo_id = repo_id
        self.model = model
        self._module = unwrap(model)
        self.optimizer, self.scheduler, self.scaler = optimizer, scheduler, scaler
        self.every = every
        self.background = "thread"
        self.rank_timeout = float(rank_timeout)
        self.background_timeout = self.rank_timeout if background_timeout is None else float(background_timeout)
        for what, value in (("rank_timeout", self.rank_timeout), ("background_timeout", self.background_timeout)):
            if not (math.isfinite(value) and value > 0):
                raise HubConfigError(f"{what} must be a positive number of seconds, got {value!r}")
        options = publish_options(every, hub=hub, monitor=monitor, mode=mode, **publisher_options)
        self.options = options
        targets = hub_targets(repo_id, options.hubs, token=options.token, root=options.root, private=options.private)
        if len(targets) > 1:
            raise HubConfigError("multi-rank publishing publishes to one hub; pass a single hub=")
        self.target = targets[0]
        self._hub, self._token = self.target.hub, self.target.token
        self._run_ctx = Run(repo_id, options, monitor=options.monitor, mode=options.mode)
        # Keyed by rank: several ranks (of one job, on one host) may share one HUBCKPT_SPOOL value.
        base = options.spool_dir or default_spool(repo_id)
        self.spool = Path(base) / f"rank-{self.rank:05d}-of-{self.world:05d}"
        self.spool.mkdir(parents=True, exist_ok=True)
        timeout = dt.timedelta(seconds=self.rank_timeout)
        # Two groups of our own (collective, in the same order on every rank): one for the training thread's
        # agreements, one for the background's transfers; never the caller's default group.
        self._ctl = dist.new_group(backend="gloo", timeout=timeout)
        self._bg = dist.new_group(backend="gloo", timeout=dt.timedelta(seconds=self.background_timeout))
        self._bg_broken: str | None = None  # why the backgrounds are out of step (one did not arrive in time)
        self._broken: str | None = None  # why our collectives are out of step (a rank did not arrive)
        self._spool_lock = self._lock_spool()
        _warn_other_worlds(Path(base), self.world, self.rank)
        self._journal = RankJournal(self.spool)
        self._repo_key = target_key(self.target)
        self.companions = [Path(c).resolve() for c in companions]
        self._files_dir = self.spool / "model-files"
        self.stalls: list[float] = []
        self._layout: Layout | None = None
        # Reused staging buffers of this rank's local shapes, allocated and touched ahead of need on a
        # background thread: the weights' now, the optimizer's after its first step (a step hook).
        self._pool = StagingPool(staging_sets)
        self._pool.prefault(self._spec("model"))
        self._optimizer_prefaulted = False
        self._hook = optimizer.register_step_post_hook(self._after_step) if optimizer is not None else None
        if optimizer is not None and optimizer.state:  # created mid-run: the optimizer has its state already
            self._after_step(optimizer, (), {})
        self._jobs: queue.Queue[tuple | None] = queue.Queue()
        self._failed: list[dict[str, Any]] = []  # saves that failed in the background, not reported yet
        self._closed = False
        self._published: dict[int, str] = {}
        # Rank 0 alone reads the hub; its outcome (what it read, or its error) goes to every rank, so a hub it
        # cannot reach fails every rank at once with the same error, not the others after rank_timeout.
        failure: Exception | None = None
        shared: list[Any] = [("ok", {})]
        if self.rank == 0:
            try:
                self.target.ensure_repo()
                shared = [("ok", self._published_steps())]
                model_files(self._module, self._files_dir, class_name=model_class_name(self._module))
            except Exception as e:  # noqa: BLE001 - told to every rank, raised on every rank below
                failure, shared = e, [("error", type(e).__name__, str(e))]
        try:
            self._collective(
                lambda: dist.broadcast_object_list(shared, src=0, group=self._ctl), "what rank 0 read of the hub"
            )
            if shared[0][0] == "error":
                raise rank0_error(shared[0], failure, PublishError, f"{repo_id}: rank 0 could not prepare the repo")
        except BaseException:
            self._pool_lock_release()
            raise
        self._published = dict(shared[0][1])
        self._recover()  # (queues the jobs the journals can finish: the background runs them first)
        self._thread = threading.Thread(target=self._work, name="hubckpt-ranks", daemon=True)
        self._thread.start()

    def _lock_spool(self) -> Any:
        """Collective (constructor): hold this rank's spool folder for the job's life, so another job on this
        host with the same spool and world size (a re-run started while ranks of the old one still run) cannot
        finish, drop or overwrite this job's saves from the journal. Busy on any rank: `SpoolBusyError` on
        every rank, naming the ranks and the process holding each folder."""
        import torch.distributed as dist

        from ..errors import SpoolBusyError
        from .jobs import lock_spool, release_spool

        lock, busy = None, None
        try:
            lock = lock_spool(self.spool, hint="another job's rank on this host still runs: stop it, or wait for it")
        except SpoolBusyError as e:
            busy = f"rank {self.rank}: {e}"
        everyone: list[Any] = [None] * self.world
        self._collective(lambda: dist.all_gather_object(everyone, busy, group=self._ctl), "whose the spool is")
        if any(everyone):
            if lock is not None:
                release_spool(self.spool, lock)
            raise SpoolBusyError("; ".join(e for e in everyone if e))
        return lock

    # -- finishing what a killed run left (the journals) ---------------------------------------------------

    def _recover(self) -> None:
        """Collective (constructor): the ranks exchange the jobs their journals hold written but not finished;
        a job every rank holds completely (same repo, world size, step, layout) is queued to be finished in
        the background (upload again, then rank 0's commit unless the hub has it); the others are dropped,
        with a log line saying why (training redoes those steps)."""
        import shutil

        import torch.distributed as dist

        pending = {p.job: p for p in self._journal.pending(self._repo_key)}
        mine = {
            job: [*p.key(), p.complete(self.spool / job), p.record.get("commit") is not None]
            for job, p in pending.items()
        }
        everyone: list[Any] = [None] * self.world
        self._collective(
            lambda: dist.all_gather_object(everyone, mine, group=self._ctl), "the jobs their journals hold"
        )
        finish, dropped = decide(everyone)
        for job, why in dropped.items():
            if job in pending:
                logger.warning(
                    "rank %d: not finishing %s of %s from the journal: %s", self.rank, job, self.repo_id, why
                )
                self._journal.finished(job, self._repo_key, "dropped", why)
                shutil.rmtree(self.spool / job, ignore_errors=True)
        self._journal.compact()
        for job in finish:
            logger.info("rank %d: finishing %s of %s from the journal (a run was killed)", self.rank, job, self.repo_id)
            self._jobs.put((_Recover(pending[job]),))

    def _finish_recovered(self, pending: Pending) -> None:
        """Background: a journal's job, uploaded again and committed (or found on the hub); never raises."""
        import shutil

        record = pending.record
        folder = self.spool / pending.job
        files = {str(f["path"]): folder / str(f["path"]) for f in record.get("files") or []}
        expected = {str(f["path"]): str(f["sha256"]) for f in record.get("files") or []}
        outcome, why = "published", ""
        try:
            commit, held = self._finish(pending.job, folder, files, expected, None, record.get("commit"))
        except RankMismatchError as e:  # the ranks lost each other again: left for the next run
            logger.error(
                "rank %d: could not finish %s of %s from the journal (left in it for the next run): %s",
                self.rank,
                pending.job,
                self.repo_id,
                e,
            )
            return
        except Exception as e:  # noqa: BLE001 - said here; the re-run's training redoes the step
            outcome, why = "failed", f"{type(e).__name__}: {e}"
            logger.error(
                "rank %d: could not finish %s of %s from the journal (training redoes that step): %s",
                self.rank,
                pending.job,
                self.repo_id,
                why,
            )
        else:
            self._published[pending.step] = pending.job
            logger.info(
                "rank %d: %s of %s finished from the journal: %s%s",
                self.rank,
                pending.job,
                self.repo_id,
                commit,
                " (the hub had it already)" if held else "",
            )
        self._journal.finished(pending.job, self._repo_key, outcome, why)
        self._journal.compact()
        shutil.rmtree(folder, ignore_errors=True)

    # -- what is published -----------------------------------------------------------------------------

    def _state(self) -> tuple[dict[str, tuple[str, torch.Tensor]], dict[str, str], list[dict[str, Any]]]:
        """name → (group, live tensor), tied aliases, the optimizer's param groups named by parameter FQN."""
        tensors: dict[str, tuple[str, torch.Tensor]] = {}
        tied: dict[str, str] = {}
        first: dict[int, str] = {}
        for name, value in self._module.state_dict(keep_vars=True).items():
            if id(value) in first:
                tied[name] = first[id(value)]
                continue
            first[id(value)] = name
            tensors[name] = ("model", value)
        groups: list[dict[str, Any]] = []
        if self.optimizer is not None:
            import torch

            names = {id(p): n for n, p in self._module.named_parameters()}
            for group in self.optimizer.param_groups:
                fqns = [names[id(p)] for p in group["params"]]
                groups.append({**{k: v for k, v in group.items() if k != "params"}, "params": fqns})
                for p, fqn in zip(group["params"], fqns):
                    for key, value in sorted(self.optimizer.state.get(p, {}).items()):
                        if isinstance(value, torch.Tensor):
                            tensors[f"{fqn}.{key}"] = ("optimizer", value)
        return tensors, tied, groups

    def _signature(
        self, tensors: dict[str, tuple[str, torch.Tensor]], locals_: dict[str, tuple[torch.Tensor, Box | None]]
    ) -> tuple:
        """This rank's view of the state's layout (metadata only, on the training thread)."""
        mine = []
        for name, (group, value) in tensors.items():
            mine.append((name, group, tuple(value.shape), str(value.dtype).removeprefix("torch."), locals_[name][1]))
        return tuple(mine)

    def _handshake(self, error: str | None) -> None:
        """The first background exchange of every save (one small all_gather on the background's group):
        whether each rank captured it. A rank that failed its capture makes every rank's save fail here."""
        import torch.distributed as dist

        everyone: list[Any] = [None] * self.world
        self._bg_call(lambda: dist.all_gather_object(everyone, error, group=self._bg), "to start the save")
        errors = [e for e in everyone if e]
        if errors:
            raise PublishError(
                f"{self.repo_id}: not published: a rank failed to capture this save: {'; '.join(errors)}"
            )

    def _ensure_layout(self, signature: tuple, tied: dict[str, str]) -> Layout:
        """The layout for this state (background thread). Exchanged, collectively on the background's group,
        only when this rank's signature changed (the first save; the optimizer's state appears after its first
        step on every rank alike); every rank's background runs the same jobs in the same order."""
        import torch.distributed as dist

        if self._layout is not None and self._layout.signature == signature:
            return self._layout
        everyone: list[Any] = [None] * self.world
        try:
            dist.all_gather_object(everyone, signature, group=self._bg)
        except Exception as e:  # noqa: BLE001 - a dead peer: the same clear error on every rank
            raise RankMismatchError(
                f"{self.repo_id}: rank {self.rank} could not exchange the state's layout with the other ranks "
                f"(a rank ended or died): {e}"
            ) from e
        self._layout = build_layout(self.world, everyone, tied, signature)
        return self._layout

    # -- saving (training thread) ------------------------------------------------------------------

    def _collective(self, fn: Any, what: str) -> None:
        """Run one collective of ours on the training thread's group; a rank that does not arrive within
        `rank_timeout` (or is gone) makes it raise `RankMismatchError` here, and every later call at once:
        after a timed-out collective the ranks are out of step on our group for good."""
        if self._broken is not None:
            raise RankMismatchError(self._broken)
        try:
            fn()
        except Exception as e:  # noqa: BLE001 - a timeout or a dead peer: the same clear error on every rank
            self._broken = (
                f"{self.repo_id}: the ranks are out of step since rank {self.rank} waited in vain for them to "
                f"agree on {what}; this Checkpointer makes no collective call any more. Close it, and create a new "
                "Checkpointer on every rank (or restart the job: Checkpointer.restore() resumes from the latest "
                "revision)."
            )
            raise RankMismatchError(
                f"{self.repo_id}: rank {self.rank} waited up to rank_timeout={self.rank_timeout:g}s for the other "
                f"ranks to agree on {what}; some rank did not call the same Checkpointer method (a skipped save(), "
                f"or a rank that ended or died): {e}"
            ) from e

    def _post(self, call: tuple, known: bool = False) -> Agreement:
        """Start the agreement on a call (kind, step, repo): one asynchronous all_gather of four integers on
        our training-thread group (the fourth: whether this rank holds the step as published already). Only
        the training thread starts collectives on that group, in call order."""
        import zlib

        import torch
        import torch.distributed as dist

        if self._broken is not None:
            raise RankMismatchError(self._broken)
        mine = torch.tensor(
            [_KINDS.index(call[0]), -1 if call[1] is None else call[1], zlib.crc32(call[2].encode()), int(known)],
            dtype=torch.int64,
        )
        gathered = [torch.empty_like(mine) for _ in range(self.world)]
        what = f"{call[0]}()"
        work: Any = None

        def start() -> None:
            nonlocal work
            work = dist.all_gather(gathered, mine, group=self._ctl, async_op=True)

        self._collective(start, what)
        return Agreement(call, work, gathered, mine, what)

    def _settle(self, agreement: Agreement) -> bool:
        """Wait (at most `rank_timeout`) until every rank made its call; raise `RankMismatchError` on every rank
        when they differ (a collective's outcome: the same everywhere). Returns whether every rank holds the
        step as published already."""
        self._collective(agreement.work.wait, agreement.what)
        call, mine = agreement.call, agreement.mine
        everyone = [
            (_KINDS[int(g[0])], None if int(g[1]) == -1 else int(g[1]), call[2] if int(g[2]) == int(mine[2]) else "?")
            for g in agreement.gathered
        ]
        if any(c != everyone[0] for c in everyone):
            described = ", ".join(
                f"rank {r}: {c[0]}({'step ' + str(c[1]) if c[0] == 'save' else ''})" for r, c in enumerate(everyone)
            )
            raise RankMismatchError(
                f"{self.repo_id}: the ranks called different Checkpointer methods or steps ({described}); "
                "nothing was published. Every rank must call save(step) with the same step, in the same order."
            )
        return all(int(g[3]) for g in agreement.gathered)

    def _agree(self, call: tuple) -> None:
        """Every rank made the same call (kind, step, repo), waited for here."""
        self._settle(self._post(call))

    def save(
        self,
        step: int,
        *,
        metrics: dict[str, float] | None = None,
        tokens: int | None = None,
        epoch: float | None = None,
        final: bool = False,
        extra: Any = None,
    ) -> Future[PublishedRevision] | None:
        """Collective: capture this rank's shards now; publish the revision of `step` in the background.

        Every rank calls it with the same step. Returns a Future of the `PublishedRevision` (the same
        outcome on every rank), or None when `every` says this step is not published."""
        import torch

        from ..conversion.training_state import capture_rng
        from ..revisions import render_revision_name

        if self._closed:
            raise HubConfigError("This Checkpointer is closed; create a new one.")
        if self.every and step % self.every and not final:
            return None
        if self._bg_broken is not None:  # (a save could not be published: say so now, not after a capture)
            raise RankMismatchError(self._bg_broken)
        try:
            json.dumps(extra)
        except (TypeError, ValueError) as e:
            raise HubConfigError(f"extra= must be JSON-serialisable: {e}") from e
        started = time.perf_counter()
        # The ranks' agreement on (step, repo) is started here and not waited for: the capture below needs
        # only this rank's own shards, so save() does not stall for a slower rank. If the others have arrived
        # by the end of the capture, a mismatch raises right here; else the background checks it before
        # anything is sent or published, and the save's Future, wait() and close() raise it.
        known = step in self._published and not final
        agreement: Agreement | None = self._post(("save", int(step), self.repo_id), known)
        if known:  # skipped only if every rank skips it (a failure may not have reached every rank's view yet)
            from .pipeline import PublishedRevision

            assert agreement is not None
            everyone_knows = self._settle(agreement)
            agreement = None
            if everyone_knows:
                done: Future = Future()
                done.set_result(PublishedRevision(self.repo_id, self._published[step], step, skipped=True))
                return done
        try:
            tensors, tied, groups = self._state()
            locals_ = {name: local_part(value, name) for name, (_, value) in tensors.items()}
            signature = self._signature(tensors, locals_)
            staging_set = self._pool.acquire()  # waits while every set is still being sent (backpressure)
            try:
                staging_set.ensure({n: (tuple(t.shape), t.dtype, False) for n, (t, _) in locals_.items()})
                staged = {}
                for name, (local, _) in locals_.items():
                    staged[name] = staging_set.buffers[name]
                    staged[name].copy_(local)
                if agreement is not None and agreement.work.is_completed():
                    self._settle(agreement)
                    agreement = None
            except BaseException:
                self._pool.release(staging_set)
                raise
            state: dict[str, Any] = {"rng": capture_rng()}
            if self.scheduler is not None:
                state["scheduler"] = self.scheduler.state_dict()
            if self.scaler is not None:
                state["scaler"] = self.scaler.state_dict()
            if torch.cuda.is_available():
                torch.cuda.synchronize()
            name = render_revision_name(self.options.revision_template, step=step, tokens=tokens, epoch=epoch)
            loop = {
                "format": LOOP_FORMAT,
                "step": step,
                "epoch": epoch,
                "tokens": tokens,
                "extra": extra,
                "world_size": self.world,
                "classes": {
                    "model": class_name(self._module),
                    "optimizer": class_name(self.optimizer),
                    "scheduler": class_name(self.scheduler),
                    "scaler": class_name(self.scaler),
                },
            }
            job = dict(
                name=name, step=step, metrics=dict(metrics or {}), tokens=tokens, epoch=epoch, final=final, loop=loop
            )
        except RankMismatchError:  # the ranks disagree (or one is gone): every rank knows it already
            raise
        except Exception as e:
            # This rank failed its capture while the others may have captured: its background still takes
            # part in the save's first background exchange, with the error, so every rank fails that save
            # at once instead of waiting for this rank's slices until the background group times out.
            self._jobs.put((_CaptureFailed(agreement, f"rank {self.rank}: {type(e).__name__}: {e}"),))
            raise
        future: Future = Future()
        self._published[step] = name
        self._jobs.put((job, agreement, signature, tied, staging_set, staged, state, groups, future))
        fault("ranks.after_capture")
        stall = time.perf_counter() - started
        self.stalls.append(stall)
        logger.info("rank %d captured step %d for %s (training blocked %.3fs)", self.rank, step, self.repo_id, stall)
        return future

    def _spec(self, group: str) -> dict[str, tuple[tuple[int, ...], torch.dtype, bool]]:
        """The staging buffers `group`'s tensors need on this rank (local shapes; metadata only)."""
        tensors, _, _ = self._state()
        spec = {}
        for name, (g, value) in tensors.items():
            if g == group:
                local = local_part(value, name)[0]
                spec[name] = (tuple(local.shape), local.dtype, False)
        return spec

    def _after_step(self, optimizer: Any, args: Any, kwargs: Any) -> None:
        if not self._optimizer_prefaulted and optimizer.state:
            self._optimizer_prefaulted = True
            self._pool.prefault(self._spec("optimizer"))

    # -- the background -------------------------------------------------------------------------------

    def _work(self) -> None:
        while True:
            item = self._jobs.get()
            if item is None:
                self._jobs.task_done()
                return
            if isinstance(item[0], _Recover):
                try:
                    self._finish_recovered(item[0].pending)
                finally:
                    self._jobs.task_done()
                continue
            if isinstance(item[0], _CaptureFailed):
                failed = item[0]
                try:
                    if failed.agreement is not None:
                        self._settle(failed.agreement)  # (a mismatch: every rank fails this save there)
                    self._handshake(failed.error)
                except BaseException as e:  # noqa: BLE001 - save() raised the cause on this rank already
                    logger.debug("rank %d: the failed capture told the other ranks: %s", self.rank, e)
                finally:
                    self._jobs.task_done()
                continue
            job, agreement, signature, tied, staging_set, staged, state, groups, future = item
            try:
                try:
                    if agreement is not None:
                        self._settle(agreement)
                    self._handshake(None)
                    try:
                        layout = self._ensure_layout(signature, tied)
                    except RankMismatchError as e:
                        if e.__cause__ is None:  # the ranks hold other tensors: said alike on every rank
                            raise
                        raise self._out_of_step("to exchange the state's layout", e.__cause__) from e
                except BaseException:
                    self._pool.release(staging_set)
                    raise
                result = self._publish(job, layout, staging_set, staged, state, groups)
            except BaseException as e:  # noqa: BLE001 - re-raised by the Future, wait() and close()
                logger.error("rank %d: publishing %s of %s failed: %s", self.rank, job["name"], self.repo_id, e)
                self._published.pop(job["step"], None)
                self._failed.append(
                    {"revision": job["name"], "step": job["step"], "error": type(e).__name__, "message": str(e)}
                )
                future.set_exception(e)
            else:
                future.set_result(result)
                try:  # after the Future: its record says "published" already, a compaction only tidies
                    self._journal.compact()
                except Exception as e:  # noqa: BLE001 - the next compaction drops the finished record
                    logger.warning("rank %d: compacting the journal after %s: %s", self.rank, job["name"], e)
            finally:
                self._jobs.task_done()

    def _assemble(self, layout: Layout, staged: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """The full values of the tensors this rank owns, from every rank's parts (`route`): point-to-point
        on the background's group, every pair's both directions in flight together, straight from the
        staging buffers into the full tensors (one `gather` per owner moved one owner's bytes at a time,
        through a packing and an unpacking copy)."""
        import torch.distributed as dist

        ex = route(layout, self.rank, staged)
        timeout = dt.timedelta(seconds=self.background_timeout)

        def exchange() -> None:
            works = [dist.irecv(buf, src=r, group=self._bg, tag=tag) for r, tag, buf in ex.recvs]
            works += [dist.isend(buf, dst=r, group=self._bg, tag=tag) for r, tag, buf in ex.sends]
            for work in works:
                if work is not None:  # (None only on a rank outside the group)
                    work.wait(timeout)

        if ex.sends or ex.recvs:
            self._bg_call(exchange, "to send one another their parts of the tensors each writes")
        return ex.finish()

    def _bg_call(self, fn: Any, what: str) -> None:
        """One collective of the background's group. A rank whose background does not arrive within
        `background_timeout` (stuck, or gone) makes it raise `RankMismatchError` here; the backgrounds are out
        of step after that, so every later save of this Checkpointer fails at once (`save()` raises)."""
        if self._bg_broken is not None:
            raise RankMismatchError(self._bg_broken)
        try:
            fn()
        except Exception as e:  # noqa: BLE001 - a timeout or a dead peer: the same clear error on every rank
            raise self._out_of_step(what, e) from e

    def _out_of_step(self, what: str, e: BaseException) -> RankMismatchError:
        """The backgrounds are out of step for good (a collective of theirs failed): the error to raise."""
        if self._bg_broken is None:
            self._bg_broken = (
                f"{self.repo_id}: the ranks' background work is out of step since rank {self.rank} waited in vain "
                f"for the other ranks' backgrounds {what}; this Checkpointer publishes nothing more. Close it, and "
                "create a new Checkpointer on every rank (or restart the job: Checkpointer.restore() resumes from "
                "the latest revision)."
            )
        return RankMismatchError(
            f"{self.repo_id}: rank {self.rank} waited up to background_timeout={self.background_timeout:g}s "
            f"for the other ranks' backgrounds {what}: a rank's background is stuck, or a rank ended or died: {e}"
        )

    def _together(self, fn: Any, what: str) -> list[tuple[str | None, Any]]:
        """Run `fn` on this rank (a helper thread) while every rank runs its own; return every rank's
        (error, value), the same on every rank. The backgrounds exchange a heartbeat every `HEARTBEAT_S`
        meanwhile, so the time `fn` takes (an upload, a commit waiting for the hub's budget: bounded by the
        hub requests' own timeouts) is not held against `background_timeout`; a background that stops
        answering is."""
        import torch
        import torch.distributed as dist

        box: list[tuple[str | None, Any]] = []

        def run() -> None:
            try:
                box.append((None, fn()))
            except Exception as e:  # noqa: BLE001 - told to every rank
                box.append((f"rank {self.rank}: {type(e).__name__}: {e}", None))

        helper = threading.Thread(target=run, name="hubckpt-ranks-io", daemon=True)
        helper.start()
        while True:
            helper.join(HEARTBEAT_S)
            mine = torch.tensor([0 if helper.is_alive() else 1], dtype=torch.int64)
            flags = [torch.empty_like(mine) for _ in range(self.world)]
            self._bg_call(lambda flags=flags, mine=mine: dist.all_gather(flags, mine, group=self._bg), what)
            if all(int(f) for f in flags):
                break
        everyone: list[Any] = [None] * self.world
        self._bg_call(lambda: dist.all_gather_object(everyone, box[0], group=self._bg), what)
        return everyone

    def _publish(
        self,
        job: dict,
        layout: Layout,
        staging_set: StagingSet,
        staged: dict[str, torch.Tensor],
        state: dict,
        groups: list,
    ) -> PublishedRevision:
        import shutil

        from safetensors.torch import save_file

        from ..conversion.training_state import save_state
        from ..errors import HubckptError
        from ..hub.uploaded import sha256_file
        from .pipeline import PublishedRevision

        try:
            full = self._assemble(layout, staged)
        except HubckptError:
            raise
        except Exception as e:  # noqa: BLE001 - a gather that failed (a peer gone or stuck): out of step
            raise self._out_of_step("to send their slices", e) from e
        finally:
            self._pool.release(staging_set)  # the slices are sent: the buffers may take the next capture
        name = job["name"]
        folder = self.spool / name
        shutil.rmtree(folder, ignore_errors=True)
        files: dict[str, Path] = {}
        hashes: dict[str, tuple[str, int]] = {}
        parts: dict[str, Any] | None = None
        error: str | None = None
        written = False
        try:
            for group in ("model", "optimizer"):
                mine = layout.files(group).get(self.rank)
                if mine is None:
                    continue
                tensors = {i.name: full[i.name] for i in layout.items if i.group == group and i.owner == self.rank}
                (folder / mine).parent.mkdir(parents=True, exist_ok=True)
                save_file(tensors, str(folder / mine), metadata={"format": "pt"})
                files[mine] = folder / mine
            rng_dir = folder / "training_state"
            for path in save_state(state["rng"], rng_dir, f"rng-rank-{self.rank:05d}"):
                files[path.relative_to(folder).as_posix()] = path
            del full
            hashes = {rel: (sha256_file(path), path.stat().st_size) for rel, path in files.items()}
            if self.rank == 0:
                parts = self._prepare(job, layout, state, groups, folder)
            small = [folder / COMMIT_FOLDER / str(f["path"]) for f in (parts or {}).get("small", [])]
            # Only the small files: the tensor files are hashed again by the upload, which refuses one a
            # machine crash tore (rank_journal's docstring), and fsync'ing them delays every revision.
            fsync_files(small)
            self._journal.written(
                name,
                repo=self._repo_key,
                world=self.world,
                rank=self.rank,
                step=job["step"],
                layout=layout.digest(),
                files=[{"path": rel, "sha256": sha, "size": size} for rel, (sha, size) in sorted(hashes.items())],
                commit=parts,
            )
            written = True
            fault("ranks.after_write")
        except Exception as e:  # noqa: BLE001 - told to every rank by the first exchange of _finish
            error = f"rank {self.rank}: {type(e).__name__}: {e}"
            logger.debug("rank %d: writing %s", self.rank, name, exc_info=True)
        expected = {rel: sha for rel, (sha, _) in hashes.items()}
        try:
            commit, skipped = self._finish(name, folder, files, expected, error, parts, hashes=hashes)
        except RankMismatchError as e:
            # The ranks lost each other (one died, or is stuck): whether every rank recorded this job is not
            # known here, so it stays in the journal, its files with it; the next Checkpointer on every rank
            # (a re-run) finishes it if every rank did.
            if written:
                raise RankMismatchError(
                    f"{e} ({name}: this rank's files stay recorded in its journal; the next Checkpointer on every "
                    "rank finishes the revision if every rank recorded its files)"
                ) from e
            shutil.rmtree(folder, ignore_errors=True)
            raise
        except Exception as e:
            if written:
                self._journal.finished(name, self._repo_key, "failed", f"{type(e).__name__}: {e}")
                self._journal.compact()
            shutil.rmtree(folder, ignore_errors=True)
            raise
        self._journal.finished(name, self._repo_key, "published")
        # (compacted by _work once the Future is settled: only unfinished jobs stay, the journal does not grow)
        shutil.rmtree(folder, ignore_errors=True)
        return PublishedRevision(self.repo_id, name, job["step"], {target_key(self.target): commit}, skipped=skipped)

    def _finish(
        self,
        name: str,
        folder: Path,
        files: dict[str, Path],
        expected: dict[str, str],
        error: str | None,
        parts: dict[str, Any] | None,
        *,
        hashes: dict[str, tuple[str, int]] | None = None,
    ) -> tuple[str, bool]:
        """Every rank uploads its files of revision `name` (written, or left by a killed run), then rank 0
        commits the revision (`parts`: what it recorded for that); (commit, whether the hub had it already)."""
        from ..hub.uploaded import upload_files

        def upload() -> list[UploadedFile]:
            if error is not None:
                raise PublishError(error)
            uploaded = upload_files(self.target, files, hashes=hashes)
            for u in uploaded:
                if expected.get(u.path) != u.sha256:
                    raise PublishError(
                        f"{folder / u.path} has sha256 {u.sha256}, not the {expected.get(u.path)} recorded in the "
                        "journal: the spool was changed or damaged"
                    )
            fault("ranks.after_upload")
            return uploaded

        everyone = self._together(upload, "while uploading")
        errors = [err for err, _ in everyone if err]
        if errors:
            raise PublishError(f"{name} of {self.repo_id} was not published: " + "; ".join(errors))
        fault("ranks.after_exchange")
        uploaded = [f for _, ups in everyone for f in ups]

        def commit() -> tuple[str, bool] | None:
            if self.rank != 0:
                return None
            if parts is None:
                raise PublishError("rank 0 holds no record of the revision's small files")
            try:
                return self._commit(parts, uploaded, folder)
            except Exception:
                logger.exception("committing %s of %s", name, self.repo_id)
                raise

        result = self._together(commit, "while rank 0 commits")[0]
        if result[0] is not None:
            raise PublishError(f"{name} of {self.repo_id} was not published: {result[0]}")
        return tuple(result[1])

    def _prepare(self, job: dict, layout: Layout, state: dict, groups: list, folder: Path) -> dict[str, Any]:
        """Rank 0: the revision's small files in `folder/commit` and everything else its commit needs (the
        manifest but its list of files, which the other ranks' uploads complete): what the journal records,
        so a re-run can commit the revision without the live state. JSON only."""
        import hashlib

        from ..conversion.training_state import save_state
        from ..formats.manifest import _versions
        from ..formats.numbers import encode_number

        small = folder / COMMIT_FOLDER
        small.mkdir(parents=True, exist_ok=True)
        for f in [*sorted(self._files_dir.glob("*.json")), *self.companions]:
            (small / f.name).write_bytes(f.read_bytes())
        weights = [i for i in layout.items if i.group == "model"]
        files = layout.files("model")
        index = {
            "metadata": {"total_size": sum(i.nbytes for i in weights)},
            "weight_map": {i.name: files[i.owner] for i in sorted(weights, key=lambda i: i.name)},
        }
        (small / WEIGHTS_INDEX).write_text(json.dumps(index, indent=2, sort_keys=True) + "\n")
        ts = small / "training_state"
        opt_files = layout.files("optimizer")
        if self.optimizer is not None:
            doc = {
                "format": RANKS_FORMAT,
                "param_groups": groups,
                "weight_map": {i.name: opt_files[i.owner] for i in layout.items if i.group == "optimizer"},
            }
            ts.mkdir(parents=True, exist_ok=True)
            (ts / "optimizer.json").write_text(json.dumps(doc, indent=2, sort_keys=True) + "\n")
        save_state(job["loop"], ts, "loop")
        for part in ("scheduler", "scaler"):
            if part in state:
                save_state(state[part], ts, part)
        listed = [
            {
                "path": p.relative_to(small).as_posix(),
                "sha256": hashlib.sha256(p.read_bytes()).hexdigest(),
                "size": p.stat().st_size,
            }
            for p in sorted(small.rglob("*"))
            if p.is_file()
        ]
        dtypes: dict[str, int] = {}
        for i in weights:
            dtypes[i.dtype] = dtypes.get(i.dtype, 0) + 1
        manifest = {
            "format_version": 1,
            "step": job["step"],
            "epoch": encode_number(job["epoch"]),
            "tokens": job["tokens"],
            "metrics": {k: encode_number(v) for k, v in sorted(job["metrics"].items())},
            "best": None,
            "source": {"format": "live", "name": job["name"]},
            "weights": {
                "tensors": len(weights),
                "parameters": sum(math.prod(i.shape) for i in weights),
                "bytes": sum(i.nbytes for i in weights),
                "shards": len(files),
                "dtypes": dtypes,
                "tied": dict(sorted(layout.tied.items())),
                "dtype_conversion": "keep",
            },
            "training_state": sorted(
                [
                    "loop",
                    "rng",
                    *(["optimizer"] if self.optimizer is not None else []),
                    *[p for p in ("scheduler", "scaler") if p in state],
                ]
            ),
            "ranks": {"format": RANKS_FORMAT, **layout.to_json()},
            "files": [],  # (listed at the commit: these small files and every rank's uploads)
            "skipped": [],
            "versions": _versions(),
        }
        captured = {
            "revision": job["name"],
            "step": job["step"],
            "final": job["final"],
            "metrics": job["metrics"],
            "epoch": job["epoch"],
            "tokens": job["tokens"],
            "captured_at": _now(),
        }
        parts = {"name": job["name"], "step": job["step"], "captured": captured, "manifest": manifest, "small": listed}
        return json.loads(json.dumps(parts))  # what the journal holds is what the commit uses, live or re-run

    def _commit(self, parts: dict[str, Any], uploaded: list[UploadedFile], folder: Path) -> tuple[str, bool]:
        """Rank 0: the revision's one commit (of `_prepare`'s small files and every rank's uploads), the
        index and retention; (commit, whether the hub had this revision with this content already)."""
        from ..cards import render_revision_card
        from ..formats.manifest import MANIFEST_FILE, dumps, manifest_digest
        from ..hub.uploaded import operation
        from . import stages
        from .journal import JobRecord
        from .layout import CARD_FILE

        small = folder / COMMIT_FOLDER
        name, step = parts["name"], parts["step"]
        listed = [*parts["small"], *[u.to_json() for u in uploaded]]
        manifest = {**parts["manifest"], "files": sorted(listed, key=lambda f: str(f["path"]))}
        (small / MANIFEST_FILE).write_bytes(dumps(manifest))
        digest = manifest_digest(manifest)
        target, run = self.target, self._run_ctx
        record = JobRecord(f"{step:012d}-{name}", captured=dict(parts["captured"]), manifest_sha256=digest)
        view = stages.read_view(target)
        held = view.holds(name, digest)
        if held is not None:  # the same content again (a re-run): nothing to commit
            return held, True
        stages.refuse_collision(view.index, target, name, digest)
        earlier = [
            r
            for r in view.index.revisions
            if r.step is not None and r.step < step and not r.pruned and r.name in view.branches
        ]
        info = stages.revision_info(record.captured, manifest, commit=None)
        card = render_revision_card(
            repo_id=self.repo_id,
            repo_url=target.repo_url,
            info=info,
            previous=earlier[-1].name if earlier else None,
            monitor=run.monitor,
            mode=run.mode,
            files=sorted(str(f["path"]) for f in listed),
            options=run.options.card,
        ).encode()
        commit = target.commit_revision(
            name,
            small,
            start_from=earlier[-1].name if earlier else "main",
            message=f"Checkpoint {name} (step {step}, {self.world} ranks)",
            manifest_sha256=digest,
            extra_files={CARD_FILE: card},
            uploaded=[operation(u) for u in uploaded],
        )
        fault("ranks.after_commit")
        updated = stages.index(run, target, record, manifest, commit, small, replace=False)
        stages.retain(run, target, updated, has_config=(small / "config.json").is_file())
        logger.info("published %s of %s from %d ranks: %s", name, self.repo_id, self.world, commit)
        return commit, False

    # -- lifecycle -------------------------------------------------------------------------------------

    def wait_staged(self) -> None:
        """(The staging buffers are made at the first save: nothing to wait for.)"""

    def _raise_if_failed(self) -> None:
        failed, self._failed = self._failed, []
        if failed:
            raise PublishFailedError(failed, self.repo_id)

    def wait(self, timeout: float | None = None) -> None:
        """Block until everything this rank saved is published; `PublishFailedError` names every save that
        failed (the same on every rank)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while self._jobs.unfinished_tasks:
            if deadline is not None and time.monotonic() > deadline:
                raise PublishError(f"{self.repo_id}: still publishing after {timeout}s; the jobs go on")
            time.sleep(0.01)
        self._raise_if_failed()

    def close(self, timeout: float | None = None) -> None:
        """Collective: publish everything saved, stop the background thread, re-raise a failure.

        Returns only once this rank's part of every save is done (its uploads; rank 0: the commits),
        so a rank may `os._exit` right after."""
        if self._closed:
            return
        if self._broken is None and self._bg_broken is None:  # out of step (said already): only this rank's work
            self._agree(("close", None, self.repo_id))
        self._closed = True
        try:
            self.wait(timeout)
        finally:
            self._jobs.put(None)
            self._thread.join(timeout=60)
            if self._hook is not None:
                self._hook.remove()
            self._release_spool()
        self._raise_if_failed()

    def _pool_lock_release(self) -> None:
        """The constructor failed: give the spool back (no background runs yet)."""
        if self._spool_lock is not None:
            from .jobs import release_spool

            release_spool(self.spool, self._spool_lock)
            self._spool_lock = None

    def _release_spool(self) -> None:
        """Give the spool lock back once the background has ended (while it runs, it may still write there)."""
        if not self._thread.is_alive() and self._spool_lock is not None:
            from .jobs import release_spool

            release_spool(self.spool, self._spool_lock)
            self._spool_lock = None

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
            return
        self._closed = True  # the loop failed: the other ranks fail too (torchrun); don't mask the error
        self._jobs.put(None)
        # The background ends after the job it runs (its collectives bounded by background_timeout; a minute at
        # most here); then the spool is free for the next Checkpointer of this process (a retry after the error).
        self._thread.join(timeout=min(self.background_timeout, 60.0))
        if self._hook is not None:
            self._hook.remove()
        self._release_spool()
        if self._spool_lock is not None:
            logger.warning(
                "rank %d: the background of %s did not end; %s stays locked until this process exits",
                self.rank,
                self.repo_id,
                self.spool,
            )

    def restore(self, revision: str | None = None, *, step: int | None = None, strict: bool = True) -> Any:
        """Collective: load the latest published revision (or `revision` / `step`) into this rank's shards of
        the model and optimizer (`load/shards.py`); None on every rank when nothing is published yet.

        Resolved once, on rank 0. The same world size restores each rank's RNG too (bit-exact resume);
        another world size restores exact values but not the RNG (`Restored.rng_restored` is False)."""
        import torch.distributed as dist

        from ..load.restore import read_index
        from ..load.shards import restore_shards

        self.wait()
        live: list[Any] = [("ok", True)]
        failure: Exception | None = None
        if self.rank == 0 and revision is None and step is None:
            try:
                index = read_index(self.repo_id, hub=self._hub, token=self._token)
                live = [("ok", bool(index is not None and index.live()))]
            except Exception as e:  # noqa: BLE001 - told to every rank, raised on every rank below
                failure, live = e, [("error", type(e).__name__, str(e))]
        self._collective(lambda: dist.broadcast_object_list(live, src=0, group=self._ctl), "restore()")
        if live[0][0] == "error":
            raise rank0_error(live[0], failure, RestoreError, f"{self.repo_id}: rank 0 could not read the index")
        if not live[0][1]:
            logger.info("%s has no revision yet: starting from scratch", self.repo_id)
            return None
        return restore_shards(
            self.repo_id,
            revision,
            step=step,
            model=self.model,
            optimizer=self.optimizer,
            scheduler=self.scheduler,
            scaler=self.scaler,
            hub=self._hub,
            token=self._token,
            group=self._ctl,
            strict=strict,
        )


__all__ = [
    "RankedCheckpointer",
    "Exchange",
    "build_layout",
    "route",
    "distributed_world",
    "model_class_name",
    "wants_ranks",
]
