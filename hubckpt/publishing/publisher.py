"""The Publisher: every checkpoint becomes a documented Hub revision, in order, in the background.

Pipeline per checkpoint (DESIGN §6), each stage recorded in the journal and idempotent:

1. capture  — `publish()` records the checkpoint (a path, or live tensors copied into reused staging
              buffers; `publish_captured()`: tensors the `Checkpointer` staged itself) and returns a
              Future; the training loop carries on.
2. convert  — verified safetensors + checkpoint.json + training_state/ into the spool.
3. commit   — per target: the card rendered for that hub, one commit on a new branch started from the
              previous revision.
4. index    — revisions.json, the repo card and the chart on `main` (compare-and-swap, retried);
              the final checkpoint's files land on `main` too.
5. retain   — revisions the retention policy no longer keeps are marked pruned in the index update of
              stage 4 (no commit of their own), then their branches are deleted; tags `best` /
              `final` follow the index.

This module is the thin facade; the parts are `jobs` (journal + spool + lock + per-hub job state),
`worker` (queue, Futures, liveness), `pipeline` (one job through the stages for every target),
`stages` (the stage functions), `layout` (what `main` holds), `options` (`PublishOptions`) and
`staging` (live tensors; checkpoints on disk: `readers.peek_step`, `snapshots.take_snapshot`).

A job is published on a hub only when that hub has it (its index and refs are checked, not only the
journal), so a second hub or a re-created repo gets everything. One ordered worker thread runs stages
2–5; a job is queued at most once, and publishing a step that is already queued joins its Future.
`publish()` blocks while `max_pending` jobs wait (backpressure): a checkpoint is never dropped. A failed
job fails its Future and is raised, with every other failure since, as one `PublishFailedError` by
the next `wait()` or `close()` (or the `with` block's end) — never by `publish()`, which captures the
next checkpoint whatever failed before; it stays listed in `hubckpt jobs` and blocks nothing else. An
interpreter exiting with a Publisher never closed logs what is unfinished or failed.
A final save of a step that is queued, running or published already marks that revision `final`
(its index entry, the `final` tag, its files on `main`) without new content: see `Pipeline`.
A process killed at any point resumes from the journal and
the spool on the next `Publisher` start (or `hubckpt resume`), publishing each revision exactly once.
"""

from __future__ import annotations

import atexit
import datetime as dt
import logging
import threading
import time
from collections.abc import Iterable
from concurrent.futures import Future
from pathlib import Path
from typing import Any

from ..errors import (
    HubConfigError,
    PublishError,
    PublishFailedError,
    UnsupportedCheckpointError,
)
from ..faults import fault
from ..formats.manifest import MANIFEST_FILE
from ..hub.retries import is_transient
from ..hub.select import Hub, resolve_hub, token_for
from ..hub.writer import HubTarget
from ..readers import peek_step
from ..revisions import render_revision_name, validate_revision_name
from ..snapshots import take_snapshot
from . import stages
from .jobs import JobStore, default_spool, target_key
from .journal import JobRecord
from .options import PublishOptions
from .pipeline import Pipeline, PublishedRevision
from .policies import Retention
from .staging import Captured, StagingPool, empty_buffers
from .worker import Worker

logger = logging.getLogger(__name__)


def _now() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def hub_targets(
    repo_id: str, hubs: list, *, token: str | dict | None = None, root: str | Path | None = None, private: bool = False
) -> list[HubTarget]:
    """One `HubTarget` per hub (`local`, `hf`, a URL or a `Hub`), each with its own token (see `Publisher`)."""
    resolved = [(h, h if isinstance(h, Hub) else resolve_hub(h, root=root)) for h in hubs]
    return [HubTarget(r, repo_id, token=token_for(r, h, token), private=private) for h, r in resolved]


class Publisher:
    """Publish checkpoints of one training run to one repo (on one or several hubs).

    Args:
        repo_id: `namespace/name` of the model repo (created if missing).
        options: how to publish (`PublishOptions`); default: `PublishOptions()`.
        **overrides: any `PublishOptions` field (`hub`, `token`, `keep_last`, `revision_template`,
            `spool_dir`, ...), applied over `options`.

    Raises:
        HubConfigError: a bad option or repo id.
        SpoolBusyError: another process publishes from the same spool.

    Example:
        >>> with Publisher("me/exp1", keep_last=5) as pub:
        ...     for step in ...:
        ...         pub.publish(state_dict=model.state_dict(), step=step, metrics={"loss": loss})
    """

    def __init__(self, repo_id: str, *, options: PublishOptions | None = None, **overrides: Any) -> None:
        from ..names import split_repo_id

        split_repo_id(repo_id)
        options = options or PublishOptions()
        self.options = options = options.replace(**overrides) if overrides else options
        self.repo_id = repo_id
        self.revision_template = options.revision_template
        self._run = stages.Run(repo_id, options, monitor=options.monitor, mode=options.mode)
        self.targets = hub_targets(
            repo_id, options.hubs, token=options.token, root=options.root, private=options.private
        )
        self._keys = [target_key(t) for t in self.targets]
        self._recorded_options = options.to_record()  # in each capture record: a retry publishes the same way
        self.spool = options.spool_dir or default_spool(repo_id)
        self._store = JobStore(self.spool)
        self._payloads: dict[str, Captured] = {}  # live tensors of queued jobs, until in the spool
        self._staging = StagingPool(options.max_pending + 1)
        self._pipeline = Pipeline(self._run, self._store, self.targets, self._keys)
        self._unreported: dict[str, BaseException] = {}  # job → its failure, not raised by wait/close yet
        self._reporting = threading.Lock()
        self._closed = False
        self._draining = threading.Event()  # set while wait() / close() wait for the queue to empty
        try:
            self._worker = Worker(
                self._process, on_error=self._failed, max_pending=options.max_pending, on_exit=self._store.release
            )
            # Another job waits behind the running one: its update of `main` is coalesced (pipeline.py).
            self._pipeline.more_queued = lambda: self._worker.busy() > 1
            self._pipeline.hurry = self._draining.is_set  # wait()/close(): nothing lingers for a next revision
            atexit.register(self._at_exit)
            for target in self.targets:
                logger.info("publishing to %s", target.describe())
            if options.resume:
                self._resume()
        except BaseException:
            atexit.unregister(self._at_exit)
            self._store.release()
            raise
        failures = self._store.failures()
        if failures:
            logger.warning(
                "%d failed job(s) in %s (%s); list, retry or drop them with `hubckpt jobs %s`",
                len(failures),
                self.spool,
                ", ".join(r.revision for r in failures),
                repo_id,
            )

    # -- options, as attributes -------------------------------------------------------------------------

    @property
    def retention(self) -> Retention:
        return self.options.retention

    @property
    def monitor(self) -> str | None:
        """The metric deciding `best`: the option, else what the first Trainer checkpoint naming one said."""
        return self._run.monitor

    @property
    def mode(self) -> str:
        return self._run.mode

    @property
    def journal(self):
        """The spool's journal (see `hubckpt.publishing.journal`)."""
        return self._store.journal

    # -- public API -------------------------------------------------------------------------------------

    def publish(
        self,
        source: str | Path | None = None,
        *,
        step: int | None = None,
        state_dict: dict | None = None,
        training_state: dict[str, Any] | None = None,
        metrics: dict[str, float] | None = None,
        epoch: float | None = None,
        tokens: int | None = None,
        final: bool = False,
        revision: str | None = None,
        companions: Iterable[str | Path] = (),
        snapshot: bool = False,
        replace: bool = False,
    ) -> Future[PublishedRevision]:
        """Queue one checkpoint: a file or folder (`source`), or live tensors (`state_dict`, copied now).

        Returns once the checkpoint is captured; blocks only while `max_pending` jobs wait. The Future
        resolves to a `PublishedRevision` when the revision is committed and indexed everywhere.
        With `snapshot=True` a `source` is first hard-linked (or copied) into the spool, so the training
        framework may delete it (e.g. the Trainer's `save_total_limit`) before it is converted.
        A revision name already published with other content raises `RevisionCollisionError` (from the
        Future) unless `replace=True`. Publishing a step that is queued or running returns its Future.
        """
        if (source is None) == (state_dict is None):
            raise HubConfigError("Pass exactly one of `source` (a checkpoint path) or `state_dict` (live tensors).")
        live = None if state_dict is None else (state_dict, training_state)
        return self._queue(
            source, live, step, metrics, epoch, tokens, final, revision, companions, snapshot=snapshot, replace=replace
        )

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
        """Queue tensors already copied into staging buffers (`hubckpt.Checkpointer`'s) as the revision of `step`.

        They are taken as they are, without a second copy; `captured.release()` is called once they are
        written to the spool (or the job ended, or could not be queued), so the caller may reuse them.
        """
        return self._queue(None, captured, step, metrics, epoch, tokens, final, None, companions)

    def _queue(
        self,
        source: str | Path | None,
        live: Captured | tuple[dict, dict[str, Any] | None] | None,
        step: int | None,
        metrics: dict[str, float] | None,
        epoch: float | None,
        tokens: int | None,
        final: bool,
        revision: str | None,
        companions: Iterable[str | Path],
        *,
        snapshot: bool = False,
        replace: bool = False,
    ) -> Future[PublishedRevision]:
        """Record one checkpoint in the journal and hand it to the worker (`publish` and `publish_captured`).

        `live`: a `Captured` of the caller's, or (state_dict, training_state) to copy into our own staging
        buffers. Whichever it is, it is released once: by the job when in the spool, or here when the job
        does not need it (it runs already, or its converted files are in the spool) or cannot be queued.
        """
        given = live if isinstance(live, Captured) else None
        try:
            # An earlier job's failure is not raised here: that would cost this checkpoint (never captured),
            # and one failed job must never block the others. Its Future, `wait()` and `close()` report it.
            if self._closed:
                raise HubConfigError("This Publisher is closed; create a new one.")
            started = time.perf_counter()
            if source is not None:
                source = Path(source).resolve()
                if not source.exists():
                    raise UnsupportedCheckpointError(f"{source} does not exist", str(source))
                peeked_step, peeked_tokens = peek_step(source, allow_globals=self.options.allow_globals)
                step = step if step is not None else peeked_step
                tokens = tokens if tokens is not None else peeked_tokens
            if step is None:
                raise HubConfigError(
                    f"Cannot tell the training step of {source or 'this checkpoint'}: it records none "
                    "and its name carries none; pass step=N (CLI: --step N)"
                )
            if revision:
                validate_revision_name(revision)
            name = revision or render_revision_name(self.revision_template, step=step, tokens=tokens, epoch=epoch)
            job_id = f"{step:012d}-{name}"
            if replace:
                self._pipeline.replace.add(job_id)
            # A final save of a step queued, running or published already: that revision becomes final, as it
            # is (one revision; this save's content is not needed).
            joined = self._finalize(job_id) if final and not replace else None
            if joined is None:
                joined = self._worker.future(job_id)  # the same step again while it runs: one job
            if joined is not None:
                if given is not None:
                    given.release()
                return joined
            captured = self._staging.take(*live) if isinstance(live, tuple) else given
        except BaseException:
            if given is not None:
                given.release()
            raise
        entry = {
            "revision": name,
            "step": step,
            "source": str(source) if source else None,
            "final": final,
            "metrics": dict(metrics or {}),
            "epoch": epoch,
            "tokens": tokens,
            "companions": [str(Path(c).resolve()) for c in companions],
            "captured_at": _now(),
            "signature": stages.source_signature(source),
            "targets": self._keys,
        }
        if self._recorded_options is not None:
            entry["options"] = self._recorded_options
        try:
            future, handed = self._hand_over(job_id, entry, captured, started, snapshot=snapshot, replace=replace)
        except BaseException:
            if self._payloads.get(job_id) is captured:
                del self._payloads[job_id]
            if captured is not None:  # not queued: the buffers may be reused at once
                captured.release()
            raise
        if captured is not None and not handed:
            captured.release()
        return future

    def _hand_over(
        self,
        job_id: str,
        entry: dict[str, Any],
        captured: Captured | None,
        started: float,
        *,
        snapshot: bool,
        replace: bool,
    ) -> tuple[Future[PublishedRevision], bool]:
        """The journal's capture record, then the worker's queue (blocking while `max_pending` jobs wait).

        Returns the job's Future, and whether the job took `captured` (it does not when its converted
        files are in the spool already)."""
        record = self._store.get(job_id)
        if record is not None and self._open(record):  # left unfinished by a process that stopped: carry on
            needed = False  # its converted files may be in the spool already
            if captured is not None and not (self._store.revision_folder(job_id) / MANIFEST_FILE).is_file():
                self._payloads[job_id] = captured
                needed = True
            self._join_final(job_id, entry["final"])
            future, _ = self._submit(job_id, block=True)
            return future, needed
        source = entry["source"]
        if source is not None and snapshot:
            entry["source"] = str(take_snapshot(Path(source), self._store.folder(job_id) / "source"))
        if replace:  # in the journal too: a job resumed after a kill must still replace
            entry["replace"] = True
        elsewhere: set[str] = set()
        signature = entry["signature"]
        if record is not None and signature and record.captured.get("signature") == signature:
            if record.manifest_sha256:
                entry["expect_sha256"] = record.manifest_sha256  # unchanged on disk: maybe no need to convert
                elsewhere = record.published - set(self._keys)  # still true of the other hubs it went to
        self._store.capture(job_id, entry)
        if captured is not None:
            self._payloads[job_id] = captured
        for key in sorted(elsewhere):
            self._store.published(job_id, key)
        fault("publish.after_capture")
        blocked = time.perf_counter() - started
        future, _ = self._submit(job_id, block=True)  # backpressure, never a dropped checkpoint
        logger.info(
            "captured %s (training blocked %.3fs, %.3fs with backpressure)",
            entry["revision"],
            blocked,
            time.perf_counter() - started,
        )
        return future, True

    def allocate(self, entries: list[tuple[tuple[int, ...], Any, bool]]) -> list[Any]:
        """Staging buffers for a `Checkpointer` publishing through this Publisher: plain (or pinned) CPU memory."""
        return empty_buffers(entries)

    def wait(self, timeout: float | None = None) -> None:
        """Block until every queued job is finished.

        Raises `PublishFailedError` naming every job that failed since the last `wait()` / `close()` (and
        why), whether or not its Future was looked at; `PublishError` if `timeout` seconds pass first (the
        jobs go on) or the worker died.
        """
        self._draining.set()
        try:
            finished = self._worker.wait(timeout)
        finally:
            self._draining.clear()
        if not finished:
            raise PublishError(f"{self._worker.busy()} publish job(s) still running after {timeout}s")
        self.raise_if_failed()

    def raise_if_failed(self) -> None:
        """Raise `PublishFailedError` naming every job that failed since the last report, with its cause.

        Only a failure the caller has seen raised by its Future's `result()` is left out: nothing that failed
        in the background ends silently. A job that failed and was published afterwards (published again,
        retried) is not listed.
        """
        with self._reporting:
            failed, self._unreported = self._unreported, {}
        failed = {j: e for j, e in failed.items() if not getattr(self._worker.last_future(j), "observed", False)}
        if failed:
            raise PublishFailedError([self._describe(j, e) for j, e in failed.items()], self.repo_id) from next(
                iter(failed.values())
            )

    def _describe(self, job_id: str, error: BaseException) -> dict[str, Any]:
        record = self._store.get(job_id)
        return {
            "revision": record.revision if record else job_id,
            "step": record.step if record else None,
            "error": type(error).__name__,
            "message": str(error),
        }

    def close(self, timeout: float | None = None) -> None:
        """Finish queued jobs, stop the worker, give the spool up; `PublishFailedError` if a job failed.

        With `timeout`, stop waiting after that many seconds: what is unfinished stays in the journal
        for the next start, and `PublishError` says so.
        """
        if self._closed:
            return
        self._closed = True
        atexit.unregister(self._at_exit)
        finished = False
        self._draining.set()
        try:
            finished = self._worker.wait(timeout)
        finally:  # the worker gives the spool up when its thread ends (at once, or after the job it runs)
            self._worker.stop(None if finished else 0, drain=False)
        if not finished:
            raise PublishError(
                f"Publishing did not finish within {timeout}s; the unfinished jobs stay in "
                f"{self.spool} and resume at the next start (`hubckpt resume --repo {self.repo_id}`)."
            )
        self.raise_if_failed()

    def __enter__(self) -> Publisher:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:  # don't mask the caller's error
            self.abort()

    def abort(self) -> None:
        """Stop at once, without waiting: what is queued stays in the journal for the next start."""
        self._closed = True
        atexit.unregister(self._at_exit)
        self._worker.stop(0, drain=False)

    def _at_exit(self) -> None:
        """The interpreter exits and this Publisher was never closed: say what is not published."""
        if self._closed:
            return
        with self._reporting:
            failed = dict(self._unreported)
        busy = self._worker.busy() if self._worker.alive else 0
        if busy:
            logger.warning(
                "exiting with %d publish job(s) of %s unfinished (Publisher.close() was not called); they stay "
                "in %s and resume at the next start (`hubckpt resume --repo %s`)",
                busy,
                self.repo_id,
                self.spool,
                self.repo_id,
            )
        if failed:
            error = PublishFailedError([self._describe(j, e) for j, e in failed.items()], self.repo_id)
            logger.error("exiting: %s", error)

    def pending(self) -> list[str]:
        """Revisions captured but not yet published to every target (from the journal)."""
        return [r.revision for r in self._store.unfinished(self._keys) if self._open(r)]

    def jobs(self) -> list[JobRecord]:
        """Every job the spool's journal knows, in step order."""
        return self._store.records()

    def already_published(self, candidates: Iterable[tuple[int, Path]]) -> set[int]:
        """Steps of `candidates` (step, path) that every hub already holds, unchanged since published from here.

        Proven by the journal (same files on disk as when published, the same content digest) and by each
        hub's index and refs (the revision listed live, its branch at the listed commit). Anything else
        is published (or found identical after converting) by `publish()`.
        """
        from huggingface_hub.errors import RepositoryNotFoundError

        known: dict[int, tuple[str, str]] = {}
        for step, path in candidates:
            try:
                name = render_revision_name(self.revision_template, step=step)
            except HubConfigError:
                continue  # templates needing tokens are resolved per checkpoint by publish()
            record = self._store.get(f"{step:012d}-{name}")
            if (
                record is not None
                and record.manifest_sha256
                and record.finished_for(self._keys)
                and record.captured.get("signature") == stages.source_signature(path)
            ):
                known[step] = (name, record.manifest_sha256)
        for target in self.targets:
            if not known:
                break
            try:
                view = stages.read_view(target)
            except RepositoryNotFoundError:
                return set()
            known = {s: (n, d) for s, (n, d) in known.items() if view.holds(n, d) or view.pruned(n, d)}
        return set(known)

    # -- resume ---------------------------------------------------------------------------------------

    def _open(self, record: JobRecord) -> bool:
        """Started and not finished: not published to the targets it was captured for, not failed for good."""
        if not record.captured or record.dropped or (record.failed is not None and not record.retryable):
            return False
        return not record.finished_for(record.captured.get("targets") or self._keys)

    def _resume(self) -> None:
        for record in self._store.records():
            if not self._open(record):
                continue
            staged = (self._store.revision_folder(record.job) / MANIFEST_FILE).is_file()
            if not staged and not record.captured.get("source"):
                reason = (
                    f"{record.revision} was captured from live tensors in memory, and the process stopped "
                    "before they were written to the spool: publish that step again, or drop the job "
                    f"(hubckpt jobs {self.repo_id} --drop {record.revision})"
                )
                self._store.failed(record.job, reason, retryable=False)
                logger.warning("cannot resume: %s", reason)
                continue
            logger.info("resuming %s from the journal", record.revision)
            self._submit(record.job)

    def _finalize(self, job_id: str) -> Future[PublishedRevision] | None:
        """Make the job of this step final without new content, however late the final save comes: the Future
        of the job (running, or run again to mark it); None if there is no such job (or it never got its
        revision published, or is left over from a stopped process): then the final save is captured."""
        record = self._store.get(job_id)
        if record is None or not record.captured or record.dropped:
            return None
        running = self._worker.future(job_id)
        if running is not None:
            if record.captured.get("final") or self._pipeline.mark_final(job_id):
                return running  # it applies the mark before it ends
            # Past its last look at the mark: it is ending (its retention, its tags). Not waited for here (the
            # training thread goes on): once it ends, it runs again to mark the revision final.
            return self._chain_final(job_id, running)
        if record.failed is not None or not record.finished_for(self._keys):
            return None
        self._pipeline.reopen_final(job_id)
        future, _ = self._submit(job_id, block=True)
        return future

    def _chain_final(self, job_id: str, running: Future[PublishedRevision]) -> Future[PublishedRevision]:
        """A Future of the job's next run, queued as soon as `running` (the run that missed the mark) ends.

        If `running` fails, so does the returned Future (with the same error, also raised by `wait()` /
        `close()`): `hubckpt jobs --retry` then publishes the revision, final."""
        chained: Future[PublishedRevision] = Future()
        chained.set_running_or_notify_cancel()

        def forward(done: Future) -> None:
            error = done.exception()
            if error is not None:
                chained.set_exception(error)
            else:
                chained.set_result(done.result())

        def rerun(done: Future) -> None:  # (on the worker's thread, as `running` completes)
            try:
                if done.exception() is not None:
                    self._store.mark_final(job_id)  # a retry of the failed job publishes it final
                    forward(done)
                    return
                self._pipeline.reopen_final(job_id)
                future, _ = self._submit(job_id)  # not blocking: this is the worker's own thread
                future.add_done_callback(forward)
            except BaseException as e:  # noqa: BLE001 - the final save's Future says what went wrong
                if not chained.done():
                    chained.set_exception(e)

        running.add_done_callback(rerun)
        return chained

    def _submit(self, job_id: str, *, block: bool = False) -> tuple[Future[PublishedRevision], bool]:
        """Queue a run of the job (see `Worker.submit`); a new run looks at the `final` mark again."""
        if self._worker.future(job_id) is None:
            self._pipeline.unseal(job_id)
        return self._worker.submit(job_id, block=block)

    def _join_final(self, job_id: str, final: bool) -> None:
        record = self._store.get(job_id)
        if final and record is not None and not record.captured.get("final"):
            self._store.mark_final(job_id)

    # -- the worker's job -----------------------------------------------------------------------------

    def _failed(self, job_id: str, error: BaseException) -> None:
        retryable = is_transient(error) or isinstance(error, ConnectionError) or not isinstance(error, Exception)
        record = self._store.get(job_id)
        # Raised to the caller (its Future, then the next wait/close): logged at info, not printed twice.
        logger.info("publishing %s failed: %s", record.revision if record else job_id, error)
        self._store.failed(job_id, f"{type(error).__name__}: {error}", retryable=retryable)
        with self._reporting:
            self._unreported.pop(job_id, None)  # (in job order: the latest failure last)
            self._unreported[job_id] = error

    def _process(self, job_id: str) -> PublishedRevision:
        captured = self._payloads.pop(job_id, None)
        try:
            try:
                published = self._pipeline.run(job_id, captured)
            except BaseException:
                self._pipeline.flush_pending()  # earlier revisions this job was to list on `main`
                raise
            with self._reporting:  # an earlier failure of this job is mended: nothing to report
                self._unreported.pop(job_id, None)
            return published
        finally:
            if captured is not None:  # (done already once it was written to the spool)
                captured.release()


__all__ = ["Publisher", "hub_targets"]
