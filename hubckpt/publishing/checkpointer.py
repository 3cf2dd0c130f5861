"""`Checkpointer`: publish a plain PyTorch training loop's checkpoints at the cost of one memory copy.

    ckpt = hubckpt.Checkpointer("me/exp1", model=model, optimizer=opt, scheduler=sched, every=500)
    resumed = ckpt.restore()                     # None on a fresh start; else the latest revision is loaded
    for step in range((resumed.step if resumed else 0) + 1, steps + 1):
        ...
        ckpt.save(step, metrics={"loss": loss.item()})   # publishes every 500th step
    ckpt.close()

What `save` does on the training thread: copy weights, optimizer, scheduler and grad-scaler state
into reused staging buffers (`staging.StagingPool`), take the RNG states (python, numpy, torch,
CUDA) and the loop state, and hand the lot to a background hand-off thread. That thread gives it to
the `Publisher`, which converts, uploads and indexes it; the buffers come back once written to the
spool. By default (Linux) the Publisher runs in a child process (`process/`) that reads
the buffers from shared memory, so its work never holds this process's GIL. The buffers are
allocated and touched ahead of need on a background thread: the weights'
right at construction, overlapping the start of the publishing process (the constructor returns
once they are ready), the optimizer's right after its first `step()` (a step hook), so the first
save — even one right after construction — costs what the later ones do.

A transformers `PreTrainedModel`'s `config.json` (and `generation_config.json`) is written once at
construction and published with every revision, so `load_model` and `hubckpt analyze` can build it;
`companions=` adds files of your own (a tokenizer's, say).

A restarted run finds what is already published: steps the hub's index lists are not captured or
published again, and `restore()` loads the latest revision (after the publisher has finished what a
killed process left in its journal).
"""

from __future__ import annotations

import atexit
import json
import logging
import os
import queue
import threading
import time
from collections.abc import Iterable
from concurrent.futures import Future
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from ..conversion.training_state import capture_rng
from ..errors import HubConfigError, PublishFailedError
from ..priority import IDLE, check_priority, idle_class_supported, in_background_priority, lower_priority
from .staging import Captured, StagingPool, StagingSet, capture, empty_buffers, spec_of, synchronize
from .worker import JobFuture

if TYPE_CHECKING:
    import torch

    from ..hub.writer import HubTarget
    from ..load.restore import Restored
    from .options import PublishOptions
    from .pipeline import PublishedRevision

logger = logging.getLogger(__name__)

LOOP_FORMAT = "hubckpt.Checkpointer/1"


def class_name(obj: Any) -> str | None:
    return None if obj is None else f"{type(obj).__module__}.{type(obj).__qualname__}"


DEFAULT_PUBLISH_MB_PER_S = 60.0  # see the publish_mb_per_s argument


class CapturePublisher(Protocol):
    """What the `Checkpointer` hands its captures to, whatever runs the publishing: the `Publisher` on threads
    of this process, or `PublisherProcess` in a child process. One interface, whatever the mode."""

    spool: Path
    targets: list[HubTarget]  # reads (what is published, restore) go to the first

    def allocate(self, entries: list[tuple[tuple[int, ...], torch.dtype, bool]]) -> list[torch.Tensor]:
        """Staging buffers this publisher can read (shared memory for a publishing process)."""
        ...

    def publish_captured(
        self,
        captured: Captured,
        *,
        step: int,
        metrics: dict[str, float] | None = None,
        tokens: int | None = None,
        epoch: float | None = None,
        final: bool = False,
        companions: Iterable[str | Path] = (),
    ) -> Future[PublishedRevision]:
        """Queue a capture as the revision of `step`; `captured.release()` once it is in the spool."""
        ...

    def wait(self, timeout: float | None = None) -> None: ...

    def close(self, timeout: float | None = None) -> None: ...

    def abort(self) -> None:
        """Stop without waiting (the training loop failed); what was handed over stays in the journal."""
        ...


def publish_options(
    every: int | None, *, hub: Any, monitor: Any, mode: Any, **publisher_options: Any
) -> PublishOptions:
    """The `PublishOptions` a Checkpointer's arguments make (single- and multi-rank alike): `options=` (or the
    defaults) with the given `hub` / `monitor` / `mode` (None: as `options` says) and the other fields; `every`
    is checked here too."""
    from .options import PublishOptions

    if every is not None and every < 1:
        raise HubConfigError(f"every must be a positive number of steps, got {every}")
    given = {"hub": hub, "monitor": monitor, "mode": mode}
    options = publisher_options.pop("options", None) or PublishOptions()
    return options.replace(**{k: v for k, v in given.items() if v is not None}, **publisher_options)


class Checkpointer:
    """Capture a training loop's whole state at copy speed; publish it as a Hub revision in the background.

    Args:
        repo_id: `namespace/name` of the model repo.
        model, optimizer, scheduler, scaler: what `save` captures and `restore` fills (`scaler`: a
            `torch.amp.GradScaler`).
        hub: where to publish (`local`, `hf`, a URL, or a list; see `hubckpt.Publisher`).
        every: publish only steps that are multiples of `every` (and `final=True` saves); None: every call.
        monitor, mode: the metric deciding the `best` tag, "min" (the default) or "max".
        companions: files published beside the weights in every revision (config, tokenizer files...). A
            transformers model's own config.json / generation_config.json are added automatically.
        staging_sets: buffer sets for captures in flight (each the size of the whole state). With 1, a
            save waits while the previous one is still being written to the spool.
        background: where the publisher runs. "process" (the default where the platform allows it:
            Linux): a child process of its own, reading the staging buffers from shared memory, so it
            never holds the training loop's GIL and its priority (`nice`) really leaves the CPU to
            training; if this process dies, the child still publishes what was captured.
            "thread": threads of this process. The Checkpointer hands its captures to either through one
            interface (`CapturePublisher`).
        nice: the CPU priority of the background work: "idle" (Linux's idle scheduling class: it
            runs only on CPU time nothing else wants, so it never delays a training thread; see
            `hubckpt/priority.py`) or a nice increment 0..19 (a share of the CPU, which on current
            kernels still delays training threads; measured in bench/README.md). Default: "idle"
            with background="process" (where a GPU computes the cores are mostly idle and a revision
            appears as fast as at normal priority; where other work keeps the cores busy it appears
            later, and a save waiting for the previous one with staging_sets=1 waits longer: pass
            staging_sets=2 or nice=10 there), 0 with
            "thread" (a low-priority thread holding the GIL makes the training thread wait for it,
            so "idle" is refused there).
        publish_mb_per_s: a cap on the megabytes per second the publishing process reads to upload
            over LFS (background="process"; the local hub then receives at that pace too;
            huggingface.co's Xet uploads are not paced). "auto" (the default):
            DEFAULT_PUBLISH_MB_PER_S in process mode, none in thread mode; None: no cap. The cap
            only applies while it can make nothing wait: a publish's conversion (what holds the
            staging buffers) always runs at full speed, the rate rises so that an upload takes at
            most half the time between the last two saves, and the cap is lifted while another save
            is handed over, and for wait() and close(). What the idle class cannot stop is a
            publish slowing the training steps next to it while it runs; the cap spreads the upload
            over more time, so training runs closer to full speed meanwhile for about the same
            total cost, and a revision appears later (bench/README.md, "Fewer bytes and fewer
            threads per publish").
        **publisher_options: `hubckpt.PublishOptions` fields (keep_last, revision_template, token, ...),
            or `options=PublishOptions(...)` itself, as `hubckpt.Publisher` takes them.
    """

    def __new__(cls, *args: Any, **kwargs: Any) -> Checkpointer:
        # Under torch.distributed the same call builds the collective, multi-rank Checkpointer (ranks.py).
        if cls is Checkpointer and kwargs.get("model") is not None:
            from .ranks import RankedCheckpointer, wants_ranks

            if wants_ranks(kwargs["model"]):
                return super().__new__(RankedCheckpointer)
        return super().__new__(cls)

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
        companions: Iterable[str | os.PathLike] = (),
        staging_sets: int = 1,
        background: str | None = None,
        nice: int | str | None = None,
        publish_mb_per_s: float | str | None = "auto",
        **publisher_options: Any,
    ) -> None:
        from .process.parent import PublisherProcess
        from .publisher import Publisher
        from .shared_memory import SharedAllocator, shared_memory_supported

        if background is None:
            background = "process" if shared_memory_supported() else "thread"
        if background not in ("process", "thread"):
            raise HubConfigError(f"background must be 'process' or 'thread', got {background!r}")
        if background == "process" and not shared_memory_supported():
            raise HubConfigError(
                "background='process' needs Linux (memfd and descriptor passing); use background='thread'"
            )
        self.repo_id = repo_id
        self.model, self.optimizer, self.scheduler, self.scaler = model, optimizer, scheduler, scaler
        self.every = every
        self.background = background
        if nice is None:
            nice = (IDLE if idle_class_supported() else 10) if background == "process" else 0
        self.nice = nice = check_priority(nice)
        if background == "thread" and nice == IDLE:
            raise HubConfigError(
                "nice='idle' needs background='process': an idle-class thread holding the GIL "
                "would make the training thread wait for it. Pass a nice increment instead."
            )
        if publish_mb_per_s == "auto":
            publish_mb_per_s = DEFAULT_PUBLISH_MB_PER_S if background == "process" else None
        self.publish_mb_per_s = publish_mb_per_s
        if publish_mb_per_s is not None:
            if background != "process":
                raise HubConfigError("publish_mb_per_s= needs background='process' (it paces that process's I/O)")
            if (
                isinstance(publish_mb_per_s, bool)
                or not isinstance(publish_mb_per_s, (int, float))
                or not publish_mb_per_s > 0
            ):
                raise HubConfigError(
                    f"publish_mb_per_s must be a positive number of megabytes per second, 'auto' "
                    f"or None (no cap), got {publish_mb_per_s!r}"
                )
        for key in ("rank_timeout", "background_timeout"):  # (multi-rank only: the same script runs on one process)
            publisher_options.pop(key, None)
        options = publish_options(every, hub=hub, monitor=monitor, mode=mode, **publisher_options)
        # With a publishing process this process's own threads only copy and queue: nothing to lower.
        self._thread_nice = thread_nice = 0 if background == "process" else nice
        # The staging buffers are allocated and touched (page faults) on a background thread while the
        # publisher starts (a child process: importing torch takes a second or more), and the constructor
        # waits for the weights' before it returns: the first save, even one right after construction
        # (a step-0 checkpoint), costs one copy like the later ones.
        allocator = SharedAllocator() if background == "process" else None
        self._pool = StagingPool(
            staging_sets,
            on_start=lambda: lower_priority(thread_nice),
            allocate=allocator if allocator is not None else empty_buffers,
        )
        self._pool.prefault(spec_of(model.state_dict(), "model"))
        self.publisher: CapturePublisher
        try:
            if background == "process":
                self.publisher = PublisherProcess(
                    repo_id, options, nice=nice, mb_per_s=publish_mb_per_s, allocator=allocator
                )
            else:
                # Created on a lowered-priority thread: the publisher's worker (and the threads it starts) inherit it.
                self.publisher = in_background_priority(lambda: Publisher(repo_id, options=options), nice)
        except BaseException:
            self._pool.wait_prefault()
            if allocator is not None:
                allocator.close()
            raise
        self.companions = [
            *model_files(model, self.publisher.spool / "model-files"),
            *(Path(c).resolve() for c in companions),
        ]
        missing = [str(c) for c in self.companions if not c.is_file()]
        if missing:
            self.publisher.close()
            raise HubConfigError(f"companions= names files that do not exist: {', '.join(missing)}")
        first = self.publisher.targets[0]  # reads (what is published, restore) go to the first hub
        self._hub, self._token = first.hub, first.token
        self._optimizer_prefaulted = False
        self._hook = optimizer.register_step_post_hook(self._after_step) if optimizer is not None else None
        if optimizer is not None and optimizer.state:  # created mid-run: the optimizer has its state already
            self._after_step(optimizer, (), {})
        self._published = self._published_steps()
        self._pool.wait_prefault()  # (started before the publisher: mostly done by now; see above)
        self._template = options.revision_template
        self._error: BaseException | None = None
        self._failures: dict[int, BaseException] = {}  # step → why its save was not published, not reported yet
        self._outstanding: list[Future] = []  # saves handed over, not settled yet (for the exit message)
        self._saves: dict[int, Future] = {}  # step → the Future of its latest save
        self._failures_lock = threading.Lock()
        self._handoff: queue.Queue = queue.Queue()
        self._thread = threading.Thread(target=self._run, name="hubckpt-checkpointer", daemon=True)
        self._thread.start()
        self._closed = False
        # A script ending without close(): its captures still reach the child, and what is unpublished is said.
        atexit.register(self._at_exit)
        self.stalls: list[float] = []  # seconds each save blocked the training loop

    # -- ahead of need ----------------------------------------------------------------------------

    def _after_step(self, optimizer, args, kwargs) -> None:
        # After the first step the optimizer has its state: stage buffers for it in the background.
        # (Removing the hook from inside the hook would change the dict torch is iterating over.)
        if not self._optimizer_prefaulted and optimizer.state:
            self._optimizer_prefaulted = True
            self._pool.prefault(spec_of(optimizer.state_dict(), "optimizer"))

    def wait_staged(self) -> None:
        """Block until the staging buffers are allocated (normally nobody needs to wait)."""
        self._pool.wait_prefault()

    # -- saving -----------------------------------------------------------------------------------

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
        """Capture everything now and publish it in the background as the revision of `step`.

        Returns a Future of the `PublishedRevision`, or None when `every` says this step is not
        published. A step the hub already has is not captured again (the Future says `skipped`).
        `extra`: any JSON-serialisable value restored as `Restored.extra` (e.g. a data loader position).
        """
        self._raise_if_failed()
        if self._closed:
            raise HubConfigError("This Checkpointer is closed; create a new one.")
        if self.every and step % self.every and not final:
            return None
        if step in self._published and not final:  # (a final save of a published step makes it `final`)
            from .pipeline import PublishedRevision

            logger.info("step %d of %s is already published; not saved again", step, self.repo_id)
            done: Future = Future()
            done.set_result(PublishedRevision(self.repo_id, self._published[step], step, skipped=True))
            return done
        try:
            json.dumps(extra)
        except (TypeError, ValueError) as e:
            raise HubConfigError(f"extra= must be JSON-serialisable: {e}") from e
        started = time.perf_counter()
        staging_set = self._pool.acquire()  # waits while every set is still being written (backpressure)
        try:
            weights, training_state = self._capture(staging_set, step, tokens, epoch, extra)
        except BaseException:
            self._pool.release(staging_set)
            raise
        future = JobFuture()  # remembers whether its failure was raised to the caller by result()
        with self._failures_lock:
            self._outstanding = [f for f in self._outstanding if not f.done()] + [future]
            self._saves[step] = future
        self._published[step] = f"step {step}"  # its real name is the publisher's to render
        self._handoff.put(
            (
                self._pool.hold(staging_set, weights, training_state),
                dict(step=step, metrics=dict(metrics or {}), tokens=tokens, epoch=epoch, final=final),
                future,
            )
        )
        stall = time.perf_counter() - started
        self.stalls.append(stall)
        logger.info("captured step %d for %s (training blocked %.3fs)", step, self.repo_id, stall)
        return future

    def _capture(
        self, staging_set: StagingSet, step: int, tokens: int | None, epoch: float | None, extra: Any
    ) -> tuple[dict, dict]:
        weights = capture(self.model.state_dict(), staging_set, "model")
        state: dict[str, Any] = {}
        if self.optimizer is not None:
            state["optimizer"] = capture(self.optimizer.state_dict(), staging_set, "optimizer")
        if self.scheduler is not None:
            state["scheduler"] = capture(self.scheduler.state_dict(), staging_set, "scheduler")
        if self.scaler is not None:
            state["scaler"] = capture(self.scaler.state_dict(), staging_set, "scaler")
        state["rng"] = capture_rng()  # fresh small tensors and tuples, nothing to stage
        state["loop"] = {
            "format": LOOP_FORMAT,
            "step": step,
            "epoch": epoch,
            "tokens": tokens,
            "extra": extra,
            "classes": {
                "model": class_name(self.model),
                "optimizer": class_name(self.optimizer),
                "scheduler": class_name(self.scheduler),
                "scaler": class_name(self.scaler),
            },
        }
        synchronize()
        return weights, state

    def _run(self) -> None:
        lower_priority(self._thread_nice)
        while True:
            item = self._handoff.get()
            if item is None:
                self._handoff.task_done()
                return
            captured, options, future = item
            try:  # the staging set comes back to the pool when the publisher releases the capture
                inner = self.publisher.publish_captured(captured, companions=self.companions, **options)
                _chain(inner, future, on_done=lambda f, step=options["step"]: self._settled(step, f))
            except BaseException as e:  # re-raised by the next save / wait / close
                captured.release()
                logger.error("could not queue step %s of %s for publishing: %s", options.get("step"), self.repo_id, e)
                self._published.pop(options.get("step"), None)
                with self._failures_lock:
                    self._failures[options["step"]] = e
                if self._error is None:
                    self._error = e
                future.set_exception(e)
            finally:
                self._handoff.task_done()

    def _settled(self, step: int, published: Future) -> None:
        """A publish finished: remember the revision's real name, or forget the step if it failed, so that
        saving it again publishes it instead of answering `skipped` for a revision that does not exist."""
        error = None if published.cancelled() else published.exception()
        with self._failures_lock:
            if error is not None:
                self._failures[step] = error
            else:
                self._failures.pop(step, None)
        if error is not None or published.cancelled():
            self._published.pop(step, None)
        elif published.result().revision:
            self._published[step] = published.result().revision

    def _at_exit(self) -> None:
        """The interpreter exits and close() was never called: hand the captures over, say what is not published."""
        if self._closed:
            return
        deadline = time.monotonic() + 60
        while self._handoff.unfinished_tasks and time.monotonic() < deadline:
            time.sleep(0.05)
        with self._failures_lock:
            pending = sum(not f.done() for f in self._outstanding)
            failed = dict(self._failures)
        if pending:
            logger.warning(
                "exiting with %d save(s) of %s not published yet (Checkpointer.close() was not called): %s; "
                "`hubckpt jobs %s` lists them",
                pending,
                self.repo_id,
                "the publishing process finishes them after this process ends"
                if self.background == "process"
                else "they stay in the spool and resume at the next start",
                self.repo_id,
            )
        if failed:
            error = PublishFailedError([self._describe(s, e) for s, e in failed.items()], self.repo_id)
            logger.error("exiting: %s", error)

    def _describe(self, step: int, error: BaseException) -> dict[str, Any]:
        from ..revisions import render_revision_name

        try:
            name: str | None = render_revision_name(self._template, step=step)
        except Exception:  # noqa: BLE001 - a template needing tokens: the step says which
            name = None
        return {"revision": name, "step": step, "error": type(error).__name__, "message": str(error)}

    def _report(self, finish: Any) -> None:
        """Run the publisher's wait/close; raise one `PublishFailedError` naming every save that failed
        since the last report (what the publisher reported, and what failed on the way to it)."""
        error: PublishFailedError | None = None
        try:
            finish()
        except PublishFailedError as e:
            error = e
        with self._failures_lock:
            mine, self._failures = self._failures, {}
            seen = {step for step, f in self._saves.items() if getattr(f, "observed", False)}
        self._error = None
        # A failure the caller saw raised by its save's Future (`result()`) is not raised again.
        reported = [f for f in (error.failures if error is not None else []) if f.get("step") not in seen]
        mine = {step: e for step, e in mine.items() if step not in seen}
        if error is not None and not reported:
            error = None
        named = {f.get("step") for f in reported}
        extra = [self._describe(step, e) for step, e in sorted(mine.items()) if step not in named]
        if error is not None and not extra:
            if len(reported) == len(error.failures):
                raise error
            raise PublishFailedError(reported, self.repo_id) from error.__cause__
        if extra:
            first = error or next(e for step, e in sorted(mine.items()) if step not in named)
            raise PublishFailedError(reported + extra, self.repo_id) from first

    # -- lifecycle --------------------------------------------------------------------------------

    def wait(self, timeout: float | None = None) -> None:
        """Block until everything saved so far is published.

        Raises `PublishFailedError` naming every save that failed since the last `wait()` / `close()` (in
        either background mode, whether or not its Future was looked at); with `timeout`, `PublishError`
        after that many seconds (the jobs go on)."""
        self._handoff.join()
        self._report(lambda: self.publisher.wait(timeout))

    def close(self, timeout: float | None = None) -> None:
        """Publish everything saved, stop the background work; `PublishFailedError` if a save was not published.

        With `timeout`, stop waiting after that many seconds: what is unfinished stays in the journal
        for the next start (`PublishError` says so)."""
        if self._closed:
            return
        self._closed = True
        atexit.unregister(self._at_exit)
        try:
            self._handoff.join()
        finally:
            self._handoff.put(None)
            self._thread.join(timeout=60)
            if self._hook is not None:
                self._hook.remove()
        self._report(lambda: self.publisher.close(timeout))

    def __enter__(self) -> Checkpointer:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
            return
        # The loop failed: what was captured still reaches the publisher's journal; don't mask the error.
        self._closed = True
        atexit.unregister(self._at_exit)
        self._handoff.join()
        self._handoff.put(None)
        if self._hook is not None:
            self._hook.remove()
        self.publisher.abort()

    def _raise_if_failed(self) -> None:
        if self._error is not None:
            error, self._error = self._error, None
            with self._failures_lock:  # raised here: not again by wait() / close()
                self._failures = {k: v for k, v in self._failures.items() if v is not error}
            raise error

    # -- resuming ---------------------------------------------------------------------------------

    def _published_steps(self) -> dict[int, str]:
        from ..load.restore import read_index

        try:
            index = read_index(self.repo_id, hub=self._hub, token=self._token)
        except Exception as e:  # noqa: BLE001 - a hub we cannot read yet only means nothing is known as published
            logger.warning("could not read the index of %s (%s); assuming nothing is published yet", self.repo_id, e)
            return {}
        steps = {r.step: r.name for r in index.revisions if r.step is not None} if index else {}
        if steps:
            logger.info(
                "%s already has %d revisions (latest step %d); those steps are not saved again",
                self.repo_id,
                len(steps),
                max(steps),
            )
        return steps

    def restore(self, revision: str | None = None, *, step: int | None = None, strict: bool = True) -> Restored | None:
        """Load the latest published revision (or `revision` / `step`) into the model, optimizer, ...

        Returns None when nothing is published yet (a fresh run). Jobs a killed process left in the
        publisher's journal are finished first, so "latest" is really the latest.
        """
        from ..load.restore import read_index, restore

        self.publisher.wait()
        if revision is None and step is None:
            index = read_index(self.repo_id, hub=self._hub, token=self._token)
            if index is None or not index.live():
                logger.info("%s has no revision yet: starting from scratch", self.repo_id)
                return None
        self._published.update(self._published_steps())
        return restore(
            self.repo_id,
            revision,
            step=step,
            model=self.model,
            optimizer=self.optimizer,
            scheduler=self.scheduler,
            scaler=self.scaler,
            hub=self._hub,
            token=self._token,
            strict=strict,
        )


def model_files(model: Any, folder: Path, *, class_name: str | None = None) -> list[Path]:
    """A transformers model's config.json (and generation_config.json) written into `folder`; [] otherwise.

    Without them a revision holds bare tensors that `load_model` / `hubckpt analyze` cannot build.
    (transformers leaves `_name_or_path`, possibly a local path, out of what it writes.)"""
    config = getattr(model, "config", None)
    if not callable(getattr(config, "to_json_file", None)) or not callable(getattr(model, "save_pretrained", None)):
        return []
    import copy

    folder.mkdir(parents=True, exist_ok=True)
    assert config is not None  # checked above: it has to_json_file
    config = copy.deepcopy(config)
    # as save_pretrained records it: load_model picks the class (`class_name`: the model's own, not a wrapper's)
    config.architectures = [class_name or type(model).__name__]
    config.to_json_file(folder / "config.json")
    written = [folder / "config.json"]
    generation = getattr(model, "generation_config", None)
    can_generate = getattr(model, "can_generate", None)
    if (
        generation is not None
        and callable(getattr(generation, "to_json_file", None))
        and (can_generate is None or can_generate())
    ):
        generation.to_json_file(folder / "generation_config.json")
        written.append(folder / "generation_config.json")
    return written


def _chain(inner: Future, outer: Future, on_done=None) -> None:
    """`outer` settles as `inner` does (after `on_done(inner)`, so its waiters see the bookkeeping done)."""

    def done(f: Future) -> None:
        if on_done is not None:
            try:
                on_done(f)
            except Exception:  # noqa: BLE001 - bookkeeping must never leave `outer` unsettled
                logger.exception("after publishing")
        if f.exception() is not None:
            outer.set_exception(f.exception())
        else:
            outer.set_result(f.result())

    inner.add_done_callback(done)
