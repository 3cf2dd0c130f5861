"""The publishing process's I/O cap (`Checkpointer(publish_mb_per_s=...)`), on only while it can make nothing wait."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from ...direct_io import limit_rate


class Pacing:
    """This process's I/O cap (`publish_mb_per_s`): on only while it can make nothing wait.

    That is while exactly one publish handed over by the training process is in flight, it has given
    its staging buffers back after converting them (so its conversion ran at full speed and the next
    `save()` finds them free), and no `wait()`/`close()` runs: then only its upload, and the hub's
    receiving, are spread out. A second publish handed over, a wait, the training process going away,
    jobs resumed from the journal at start-up, and a step that joins a job already known (its
    buffers come back at once, before anything of it ran) all run at full speed. The rate is raised,
    from the second save on, so that an upload takes at most half the time between the last two
    saves: a paced job never pushes the next one's conversion back, and a step is on the hub before
    the next is captured.
    """

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.cap: float | None = None  # MB/s
        self._clock = clock
        self._lock = threading.Lock()
        self._jobs: dict[int, int] = {}  # handed over, not settled → its bytes
        self._released: set[int] = set()  # ... of which gave their staging buffers back after converting
        self._waits = 0  # wait()/close() running, or the channel closed
        self._last_arrival: float | None = None
        self._interval: float | None = None  # seconds between the last two publishes handed over

    def start(self, cap: float | None) -> None:
        self.cap = cap
        self._apply()

    def queued(self, job: int, nbytes: int = 0) -> None:
        with self._lock:
            now = self._clock()
            if self._last_arrival is not None:
                self._interval = now - self._last_arrival
            self._last_arrival = now
            self._jobs[job] = nbytes
            self._apply()

    def released(self, job: int) -> None:
        with self._lock:
            if job in self._jobs:
                self._released.add(job)
            self._apply()

    def settled(self, job: int) -> None:
        with self._lock:
            self._jobs.pop(job, None)
            self._released.discard(job)
            self._apply()

    def waiting(self, delta: int) -> None:
        with self._lock:
            self._waits = max(0, self._waits + delta)
            self._apply()

    def rate(self) -> float | None:
        """MB/s now, or None for full speed."""
        if not self.cap or self._waits or len(self._jobs) != 1 or set(self._jobs) != self._released:
            return None
        (nbytes,) = self._jobs.values()
        if self._interval:
            return max(self.cap, nbytes / 1e6 / (0.5 * self._interval))
        return self.cap

    def _apply(self) -> None:
        limit_rate(self.rate())


__all__ = ["Pacing"]
