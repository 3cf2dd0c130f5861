"""The commit budget: at most N commit-endpoint POSTs per repo in any window of PERIOD (off by default).

huggingface.co limits commits per repo ("rate limit for repository commits (128 per hour)"); a local hub
started with `hubckpt serve --commit-rate 128/h` (or `LocalHubServer(commit_rate="128/h")`, or
`HUBCKPT_COMMIT_RATE` for a hub started in the background) answers the same way, so clients can be tested
against it. The window slides: any N+1 commits within PERIOD are refused at the (N+1)-th, with 429,
"rate limit for repository commits" in `X-Error-Message` and the JSON `error`, `Retry-After` in whole
seconds (1 to 60) and the `RateLimit` / `RateLimit-Policy` headers huggingface.co sends. A refused POST is
not counted and changes nothing. Only the commit endpoint counts (pull-request commits included);
`create_repo`'s initial commit and branch / tag operations do not.
"""

from __future__ import annotations

import math
import re
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

from ..errors import HubConfigError, HubHTTPError

MAX_RETRY_AFTER_S = 60  # the Retry-After header stays in 1..60 s (the RateLimit header has the full wait)

_UNITS = {
    "s": 1,
    "sec": 1,
    "second": 1,
    "seconds": 1,
    "m": 60,
    "min": 60,
    "minute": 60,
    "minutes": 60,
    "h": 3600,
    "hour": 3600,
    "hours": 3600,
    "d": 86400,
    "day": 86400,
    "days": 86400,
}
_RATE = re.compile(r"^\s*(\d+)\s*/\s*(\d*)\s*([a-z]+)\s*$")


def _words(seconds: int) -> str:
    for unit, size in (("day", 86400), ("hour", 3600), ("minute", 60)):
        if seconds % size == 0:
            count = seconds // size
            return unit if count == 1 else f"{count} {unit}s"
    return "second" if seconds == 1 else f"{seconds} seconds"


@dataclass(frozen=True)
class CommitRate:
    """A budget of `limit` commits per `period_s` seconds (per repo)."""

    limit: int
    period_s: int

    @classmethod
    def parse(cls, text: str) -> CommitRate:
        """`N/PERIOD`: `128/h`, `6/min`, `6/10s`, `1000/day` (units s, min, h, day; a count before the unit).

        Raises:
            HubConfigError: anything else, or a zero count or period.
        """
        match = _RATE.match(text.lower()) if isinstance(text, str) else None
        unit = _UNITS.get(match.group(3)) if match else None
        if match is None or unit is None:
            raise HubConfigError(
                f"Invalid commit rate {text!r}: write it as N/PERIOD, e.g. 128/h, 6/min or 6/10s "
                "(units: s, min, h, day)."
            )
        limit, period = int(match.group(1)), int(match.group(2) or 1) * unit
        if limit < 1 or period < 1:
            raise HubConfigError(f"Invalid commit rate {text!r}: the count and the period must be at least 1.")
        return cls(limit, period)

    def __str__(self) -> str:
        return f"{self.limit} per {_words(self.period_s)}"


@dataclass
class CommitBudget:
    """Per-repo sliding windows of accepted commit POSTs; `take(repo)` counts one or raises the Hub's 429."""

    rate: CommitRate
    clock: Callable[[], float] = time.monotonic
    _seen: dict[str, deque[float]] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def take(self, repo_key: str) -> None:
        """Count one commit to `repo_key` now, or raise 429 (counting nothing) if its window is full."""
        with self._lock:
            now = self.clock()
            window = self._seen.setdefault(repo_key, deque())
            while window and window[0] <= now - self.rate.period_s:
                window.popleft()
            if len(window) < self.rate.limit:
                window.append(now)
                return
            wait = max(1, math.ceil(window[0] + self.rate.period_s - now))
        raise HubHTTPError(
            429,
            f"You have exceeded our rate limit for repository commits ({self.rate}). "
            f"Retry after {min(wait, MAX_RETRY_AFTER_S)} seconds.",
            headers={
                "Retry-After": str(min(wait, MAX_RETRY_AFTER_S)),
                "RateLimit": f'"commits";r=0;t={wait}',
                "RateLimit-Policy": f'"sliding window";"commits";q={self.rate.limit};w={self.rate.period_s}',
            },
        )


def commit_budget(rate: str | CommitRate | CommitBudget | None) -> CommitBudget | None:
    """The budget for a `commit_rate` setting (a `N/PERIOD` string, a rate, a budget); None when off."""
    if isinstance(rate, CommitBudget):
        return rate
    if rate is None or rate == "":
        return None
    return CommitBudget(rate if isinstance(rate, CommitRate) else CommitRate.parse(rate))


def check_commit(budget: CommitBudget | None, repo_id: str) -> None:
    """The commit route's hook: count this POST against `repo_id`'s budget, or answer 429."""
    if budget is not None:
        budget.take(repo_id.lower())
