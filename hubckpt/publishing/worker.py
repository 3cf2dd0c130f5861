"""The worker: one background thread running jobs in the order they were submitted, one Future per job.

- A job is queued at most once: submitting a job that is queued or running returns its Future.
- Any exception in a job fails that job's Future (and goes to `on_error`); the thread carries on.
  A `JobFuture` remembers whether its failure was raised to the caller by `result()`.
- `wait()` / `close()` return when the queue is empty and no job runs, raise `PublishError` if the
  thread is gone (they never wait on a dead worker), and take an optional timeout.
- Backpressure: `submit(..., block=True)` waits while `max_pending` jobs wait to start.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any

from ..errors import PublishError

logger = logging.getLogger(__name__)


class JobFuture(Future):
    """A job's Future that remembers whether the caller has seen its failure raised by `result()` (then
    `wait()` / `close()` do not raise it again). `exception()` does not count: hubckpt's own callbacks use it."""

    observed = False

    def result(self, timeout: float | None = None) -> Any:
        try:
            return super().result(timeout)
        except BaseException:
            if self.done():
                self.observed = True
            raise


class Worker:
    def __init__(
        self,
        process: Callable[[str], Any],
        *,
        on_error: Callable[[str, BaseException], None],
        max_pending: int,
        on_exit: Callable[[], None] | None = None,
        name: str = "hubckpt-publisher",
    ) -> None:
        self._process = process
        self._on_error = on_error
        self._on_exit = on_exit
        self.max_pending = max_pending
        self._queue: deque[str] = deque()
        self._futures: dict[str, Future] = {}
        self._current: str | None = None
        self._stopping = False
        self._cond = threading.Condition()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    def last_future(self, job_id: str) -> Future | None:
        """The Future of the latest run of a job, finished or not."""
        with self._cond:
            return self._futures.get(job_id)

    def future(self, job_id: str) -> Future | None:
        """The Future of a job queued or running now (None otherwise)."""
        with self._cond:
            future = self._futures.get(job_id)
            return future if future is not None and not future.done() else None

    def submit(self, job_id: str, *, block: bool = False) -> tuple[Future, bool]:
        """Queue `job_id` unless it is queued or running; (its Future, whether it was queued now)."""
        with self._cond:
            existing = self._futures.get(job_id)
            if existing is not None and not existing.done():
                return existing, False
            if self._stopping or not self.alive:
                raise PublishError("The publisher's worker has stopped; create a new Publisher.")
            while block and len(self._queue) >= self.max_pending and self.alive and not self._stopping:
                self._cond.wait(0.5)  # backpressure: a checkpoint waits, it is never dropped
                existing = self._futures.get(job_id)
                if existing is not None and not existing.done():
                    return existing, False
            if self._stopping or not self.alive:  # stopped (or died) while this waited for room
                raise PublishError("The publisher's worker has stopped; create a new Publisher.")
            future = JobFuture()
            self._futures[job_id] = future
            self._queue.append(job_id)
            self._cond.notify_all()
            return future, True

    def busy(self) -> int:
        """Jobs queued or running."""
        with self._cond:
            return len(self._queue) + (self._current is not None)

    def wait(self, timeout: float | None = None) -> bool:
        """Block until no job is queued or running; False if `timeout` passed first. Raises if the worker died."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            while self._queue or self._current is not None:
                if not self.alive:
                    raise PublishError(
                        f"The publisher's worker thread died with {len(self._queue)} job(s) queued; "
                        "they stay in the journal and are resumed by the next Publisher "
                        "(or `hubckpt resume`)."
                    )
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    return False
                self._cond.wait(0.5 if remaining is None else min(0.5, remaining))
        return True

    def stop(self, timeout: float | None = None, *, drain: bool = True) -> bool:
        """Stop the thread (after the queue is drained if `drain`); True if it has ended."""
        if drain:
            self.wait(timeout)
        with self._cond:
            self._stopping = True
            if not drain:  # what is queued stays in the journal; nobody waits on these Futures forever
                for job_id in self._queue:
                    self._futures[job_id].cancel()
                self._queue.clear()
            idle = self._current is None
            self._cond.notify_all()
        # An idle thread ends at once (and gives the spool up on its way out): wait for that, so a new
        # Publisher on the same spool right after is not refused. A running job is waited on `timeout`.
        self._thread.join(max(timeout, 5.0) if idle and timeout is not None else timeout)
        return not self._thread.is_alive()

    def _run(self) -> None:
        try:
            while True:
                with self._cond:
                    while not self._queue and not self._stopping:
                        self._cond.wait()
                    if not self._queue:
                        return
                    job_id = self._queue.popleft()
                    self._current = job_id
                    future = self._futures[job_id]
                    self._cond.notify_all()
                try:
                    result = self._process(job_id)
                except BaseException as e:  # noqa: BLE001 - the job fails, the worker carries on
                    try:
                        self._on_error(job_id, e)
                    except BaseException:  # noqa: BLE001 - a failure to record must not kill the worker
                        logger.exception("recording the failure of %s failed", job_id)
                    future.set_exception(e)
                else:
                    future.set_result(result)
                finally:
                    with self._cond:
                        self._current = None
                        self._cond.notify_all()
        finally:
            if self._on_exit is not None:
                self._on_exit()


__all__ = ["Worker", "JobFuture"]
