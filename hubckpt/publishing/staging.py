"""Capture a whole training state into reused, pre-faulted staging buffers: the training loop's only cost.

Copying into buffers that already exist runs at memory bandwidth; allocating fresh ones for every
checkpoint costs page faults and is 7–10× slower (see the performance floors). So a `StagingPool`
keeps `sets` buffer sets, each a dict from a tensor's path in the captured tree
(`model/wte.weight`, `optimizer/state/3/exp_avg`) to a CPU tensor, and allocates *and touches* them
on a background thread ahead of need (`prefault`), so that even the first capture only copies.

A set is taken by `acquire()` (blocking while every set is in use: backpressure, never a skipped
checkpoint), filled by `capture()`, and handed to a publisher as a `Captured`, whose `release()` gives
the set back once its contents are written to the spool. The `Publisher` stages `publish(state_dict=...)`
in a pool of its own; the `Checkpointer` stages a whole training state in its pool and hands it to a
`checkpointer.CapturePublisher` (the `Publisher` itself on a thread, or `process.parent.PublisherProcess`).

Tensors sharing memory (tied weights) are told apart by one key, `alias_key`: the same view of the same
memory is captured once, and shares one buffer in the copy too.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch

logger = logging.getLogger(__name__)

Spec = dict[str, tuple[tuple[int, ...], "torch.dtype", bool]]  # path → (shape, dtype, pinned)
# Buffers for a batch of (shape, dtype, pinned), in order: one call per batch, so an allocator may put a
# whole batch in one allocation (shared memory: one memfd per batch).
Allocate = Callable[[list[tuple[tuple[int, ...], "torch.dtype", bool]]], list["torch.Tensor"]]


def empty_buffers(entries: list[tuple[tuple[int, ...], torch.dtype, bool]]) -> list[torch.Tensor]:
    """Fresh CPU buffers (page-locked where `pinned`, for asynchronous copies from the GPU)."""
    import torch

    return [torch.empty(shape, dtype=dtype, pin_memory=pinned) for shape, dtype, pinned in entries]


def alias_key(t: torch.Tensor) -> tuple[Any, ...] | None:
    """What makes two tensors the same view of the same memory (None for an empty tensor: never shared)."""
    if not t.numel():
        return None
    to_local = getattr(t, "to_local", None)  # a DTensor (FSDP2): its own storage is not a real one
    if to_local is not None and callable(to_local):
        local = to_local()
        return ("dtensor", alias_key(local), tuple(t.shape), str(getattr(t, "placements", None)))
    return (
        t.device.type,
        t.untyped_storage().data_ptr(),
        t.storage_offset(),
        tuple(t.shape),
        tuple(t.stride()),
        t.dtype,
    )


def iter_tensors(value: Any, path: str) -> Iterator[tuple[str, torch.Tensor]]:
    """(path, tensor) for every tensor in a tree of dicts, lists and tuples, in capture order."""
    import torch

    if isinstance(value, torch.Tensor):
        yield path, value
    elif isinstance(value, dict):
        for k, v in value.items():
            yield from iter_tensors(v, f"{path}/{k}")
    elif isinstance(value, (list, tuple)):
        for i, v in enumerate(value):
            yield from iter_tensors(v, f"{path}/{i}")


def spec_of(tree: Any, prefix: str) -> Spec:
    """The buffers a capture of `tree` needs (metadata only: cheap enough for the training thread)."""
    import torch

    pin = torch.cuda.is_available()
    spec: Spec = {}
    seen: set[tuple[Any, ...] | None] = set()
    for path, t in iter_tensors(tree, prefix):
        key = alias_key(t)
        if key is not None and key in seen:
            continue
        seen.add(key)
        spec[path] = (tuple(t.shape), t.dtype, pin and t.device.type == "cuda")
    return spec


class StagingSet:
    """One set of staging buffers (path → CPU tensor)."""

    def __init__(self, index: int, allocate: Allocate | None = None) -> None:
        self.index = index
        self.allocate = allocate or empty_buffers
        self.buffers: dict[str, torch.Tensor] = {}
        self.allocated_on_capture = 0  # buffers the training thread had to allocate (prefault missed them)

    def nbytes(self) -> int:
        return sum(b.numel() * b.element_size() for b in self.buffers.values())

    def ensure(self, spec: Spec) -> int:
        """Allocate and touch every buffer of `spec` not already there; return the bytes allocated."""
        import torch

        missing = [
            (path, shape, dtype, pinned)
            for path, (shape, dtype, pinned) in spec.items()
            if (buf := self.buffers.get(path)) is None or tuple(buf.shape) != shape or buf.dtype != dtype
        ]
        fresh = self.allocate([(shape, dtype, pinned) for _, shape, dtype, pinned in missing]) if missing else []
        added = 0
        for (path, *_), buf in zip(missing, fresh):
            buf.view(-1).view(torch.uint8).zero_() if buf.numel() and buf.is_contiguous() else buf.zero_()
            self.buffers[path] = buf
            added += buf.numel() * buf.element_size()
        return added


class StagingPool:
    """`sets` staging sets, pre-faulted by one background thread."""

    def __init__(
        self, sets: int = 1, on_start: Callable[[], None] | None = None, allocate: Allocate | None = None
    ) -> None:
        if sets < 1:
            raise ValueError("staging sets must be at least 1")
        self._sets = [StagingSet(i, allocate) for i in range(sets)]
        self._free = list(self._sets)
        self._busy_prefault: set[int] = set()
        self._cond = threading.Condition()
        self._todo: queue.Queue[Spec] = queue.Queue()
        self._thread: threading.Thread | None = None
        self._on_start = on_start  # run first on the background thread (e.g. to lower its priority)

    # -- ahead of need (background) ---------------------------------------------------------------

    def prefault(self, spec: Spec) -> None:
        """Allocate and touch buffers for `spec` in every set, on the background thread."""
        if not spec:
            return
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="hubckpt-staging", daemon=True)
            self._thread.start()
        self._todo.put(spec)

    def _run(self) -> None:
        if self._on_start is not None:
            self._on_start()
        while True:
            spec = self._todo.get()
            try:
                for staging_set in self._sets:
                    with self._cond:  # a set being captured into or published is left alone until released
                        while staging_set not in self._free:
                            self._cond.wait()
                        self._free.remove(staging_set)
                        self._busy_prefault.add(staging_set.index)
                    try:
                        added = staging_set.ensure(spec)
                    finally:
                        with self._cond:
                            self._busy_prefault.discard(staging_set.index)
                            self._free.append(staging_set)
                            self._free.sort(key=lambda s: s.index)
                            self._cond.notify_all()
                    if added:
                        logger.debug(
                            "staging set %d: %.1f MiB allocated ahead of need", staging_set.index, added / 2**20
                        )
            except Exception as e:  # noqa: BLE001 - a failed prefault only makes the first capture slower
                logger.warning("pre-allocating staging buffers failed (%s); captures will allocate instead", e)
            finally:
                self._todo.task_done()

    def wait_prefault(self) -> None:
        """Block until every pending prefault is done (tests and benchmarks)."""
        if self._thread is not None:
            self._todo.join()

    # -- the training thread --------------------------------------------------------------------

    def acquire(self) -> StagingSet:
        with self._cond:
            while not self._free:
                self._cond.wait()
            return self._free.pop(0)

    def release(self, staging_set: StagingSet) -> None:
        with self._cond:
            if staging_set not in self._free:
                self._free.append(staging_set)
                self._free.sort(key=lambda s: s.index)
                self._cond.notify_all()

    def nbytes(self) -> int:
        return sum(s.nbytes() for s in self._sets)

    def hold(
        self, staging_set: StagingSet, weights: dict[str, Any], training_state: dict[str, Any] | None = None
    ) -> Captured:
        """A capture in `staging_set` (filled by `capture`), whose `release()` gives the set back to this pool."""
        return Captured(weights, training_state or {}, staging_set, on_release=lambda: self.release(staging_set))

    def take(self, weights: dict[str, Any], training_state: dict[str, Any] | None = None) -> Captured:
        """Copy `weights` (and `training_state`) into a free set now (blocking while none is free)."""
        staging_set = self.acquire()
        try:
            captured = capture(weights, staging_set, "weights")
            state = capture(training_state, staging_set, "training_state") if training_state else {}
            synchronize()
        except BaseException:
            self.release(staging_set)
            raise
        return self.hold(staging_set, captured, state)


class Captured:
    """Live tensors copied into staging buffers and handed to a publisher, which calls `release()` once
    they are written to the spool (or the job ended): then the buffers may be reused.

    `release()` runs `on_release` once, however often it is called. `staging_set` is where the tensors
    live (a publishing process is sent only their names in it); None where they are not a set of ours
    (the publishing process's own view of the shared buffers).
    """

    def __init__(
        self,
        weights: dict[str, Any],
        training_state: dict[str, Any],
        staging_set: StagingSet | None = None,
        *,
        on_release: Callable[[], None] | None = None,
    ) -> None:
        self.weights = weights
        self.training_state = training_state
        self.staging_set = staging_set
        self._on_release = on_release
        self._lock = threading.Lock()

    @property
    def released(self) -> bool:
        return self._on_release is None

    def release(self) -> None:
        with self._lock:
            on_release, self._on_release = self._on_release, None
        if on_release is not None:
            on_release()


def capture(value: Any, staging_set: StagingSet, path: str, aliases: dict[Any, Any] | None = None) -> Any:
    """A copy of `value` whose tensors live in `staging_set`'s buffers (same nesting, containers rebuilt).

    Tensors sharing memory (tied weights) share one buffer in the copy too. CUDA tensors are copied
    asynchronously into pinned buffers; call `synchronize()` before using the copy.
    """
    import torch

    aliases = {} if aliases is None else aliases
    if isinstance(value, torch.Tensor):
        src = value.detach()
        key = alias_key(src)
        if key is not None and key in aliases:
            return aliases[key]
        buf = staging_set.buffers.get(path)
        if buf is None or buf.shape != src.shape or buf.dtype != src.dtype:
            (buf,) = staging_set.allocate([(tuple(src.shape), src.dtype, src.device.type == "cuda")])
            staging_set.buffers[path] = buf
            staging_set.allocated_on_capture += 1
        buf.copy_(src, non_blocking=src.device.type == "cuda")
        if key is not None:
            aliases[key] = buf
        return buf
    if isinstance(value, dict):
        return {k: capture(v, staging_set, f"{path}/{k}", aliases) for k, v in value.items()}
    if isinstance(value, list):
        return [capture(v, staging_set, f"{path}/{i}", aliases) for i, v in enumerate(value)]
    if isinstance(value, tuple):
        return tuple(capture(v, staging_set, f"{path}/{i}", aliases) for i, v in enumerate(value))
    return value  # JSON scalars, numpy arrays from get_state() (fresh copies already)


def synchronize() -> None:
    """Wait for asynchronous device-to-host copies of a capture."""
    import torch

    if torch.cuda.is_available():
        torch.cuda.synchronize()
