"""Where a mirror run stands, and its pace under the target's commit budget.

`Pace` counts what is done (revisions, commits, bytes), waits before each commit as long as the
target's budget asks (`hub/budget.py`'s `CommitPacer`, fed by `MirrorIO.commit`), never past the run's
deadline, and says how long the rest will take: `12 commits left, about 2 min at 6/min`. Each change goes
to the caller's `progress` as a `MirrorProgress`; each wait is logged.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

from ..errors import HubUnavailableError
from ..hub.budget import CommitPacer, duration

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class MirrorProgress:
    """Where a mirror stands, passed to `progress` at the start, after each commit and before each wait.

    `waiting_s`: seconds the mirror is about to wait for the target's commit budget (0: not waiting).
    `pace`: the commits left and, once the budget is known, about how long they take
    (`12 commits left, about 2 min at 6/min`).
    """

    revisions_done: int
    revisions_total: int
    bytes_done: int
    bytes_total: int
    revision: str | None = None
    commits_done: int = 0
    commits_total: int = 0
    waiting_s: float = 0.0
    pace: str = ""


class Pace:
    """One run's counts, its waits for the target's commit budget, and its progress events."""

    def __init__(
        self,
        pacer: CommitPacer,
        progress: Callable[[MirrorProgress], None] | None,
        bytes_done: Callable[[], int],
        *,
        ends_at: float | None,
        target: str,
    ) -> None:
        self.pacer, self.progress, self.bytes_done = pacer, progress, bytes_done
        self.ends_at, self.target = ends_at, target
        self.started = time.monotonic()
        self.revisions_done = self.revisions_total = 0
        self.commits_done = self.commits_total = 0
        self.bytes_total = 0
        self.waited_s = 0.0  # waiting for the budget

    def text(self) -> str:
        """The commits left and, once the target's budget is known, how long they will take."""
        busy = time.monotonic() - self.started - self.waited_s  # each commit's own work, on average
        per_commit = busy / self.commits_done if self.commits_done else 0.0
        return self.pacer.describe(self.commits_total - self.commits_done, per_commit)

    def report(self, revision: str | None = None, waiting_s: float = 0.0) -> None:
        if self.progress is not None:
            self.progress(
                MirrorProgress(
                    self.revisions_done,
                    self.revisions_total,
                    self.bytes_done(),
                    self.bytes_total,
                    revision,
                    self.commits_done,
                    self.commits_total,
                    waiting_s,
                    self.text(),
                )
            )

    def check_deadline(self) -> None:
        if self.ends_at is not None and time.monotonic() > self.ends_at:
            raise HubUnavailableError("the mirror's deadline passed")

    def before_commit(self) -> None:
        """Wait as long as the target's commit budget asks; past the deadline (or a wait that would end past
        it), `HubUnavailableError`."""
        delay = self.pacer.delay()
        if self.ends_at is not None and time.monotonic() + delay > self.ends_at:
            if delay <= 0 or time.monotonic() > self.ends_at:
                raise HubUnavailableError("the mirror's deadline passed")
            raise HubUnavailableError(
                f"waiting {duration(delay)} for the target's commit budget ({self.pacer.rate()}) would pass "
                "the mirror's deadline"
            )
        if delay > 0:
            logger.info("mirror to %s: waiting %.1f s for its commit budget; %s", self.target, delay, self.text())
            self.report(None, delay)
            time.sleep(delay)
            self.waited_s += delay

    def refused(self, delay: float) -> None:
        """A commit was refused (429) and its retry waits `delay` s as the target asks: said like any wait
        for the budget, and counted as one (not as the commits' own work, which the time left is made of)."""
        if delay > 0:
            logger.info("mirror to %s: commit refused; waiting %.1f s as it asks; %s", self.target, delay, self.text())
            self.report(None, delay)
            self.waited_s += delay


__all__ = ["MirrorProgress", "Pace"]
