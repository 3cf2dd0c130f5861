"""The commit budget: at most N commit-endpoint POSTs per repo in any window of PERIOD (off by default).

huggingface.co limits commits per repo ("rate limit for repository commits (128 per hour)"); a local hub
started with `hubckpt serve --commit-rate 128/h` (or `LocalHubServer(commit_rate="128/h")`, or
`HUBCKPT_COMMIT_RATE` for a hub started in the background) answers the same way, so clients can be tested
against it. The window slides: any N+1 commits within PERIOD are refused at the (N+1)-th, with 429,
"rate limit for repository commits" in `X-Error-Message` and the JSON `error`, `Retry-After` in whole
seconds (1 to 60) and the `RateLimit` / `RateLimit-Policy` headers huggingface.co sends. A refused POST is
not counted and changes nothing.

Every other answer of the commit endpoint while a budget is set carries the same two headers, so a client
can pace itself before it is refused (the mirror does):

    RateLimit: "commits";r=REMAINING;t=SECONDS_UNTIL_A_SLOT_FREES
    RateLimit-Policy: "sliding window";"commits";q=N;w=PERIOD_S

`r` counts the commits still allowed in the window after this one; `t` is when the oldest commit of the
window leaves it (whole seconds, at least 1). The window (the times of a repo's recent commits) is kept
in the hub's database, so a restarted hub keeps counting.

Only the commit endpoint counts (pull-request commits included); `create_repo`'s initial commit and
branch / tag operations do not.
"""

from __future__ import annotations

import math
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from ..errors import HubConfigError, HubHTTPError

if TYPE_CHECKING:
    from .storage import Repo

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


class CommitWindowStore(Protocol):
    """Where the windows live: the hub's database (`storage.MetadataStore.take_commit_slot`)."""

    def take_commit_slot(self, repo: Repo, now: float, limit: int, period_s: float) -> tuple[bool, list[float]]: ...


@dataclass
class CommitBudget:
    """Per-repo sliding windows of accepted commit POSTs; `take(repo)` counts one or raises the Hub's 429.

    The windows are kept in `store` (the hub's database), so a restarted hub keeps counting; `clock` is
    wall-clock time for the same reason (a monotonic clock starts again at each boot).
    """

    rate: CommitRate
    store: CommitWindowStore
    clock: Callable[[], float] = time.time

    def policy(self) -> str:
        """The `RateLimit-Policy` header: the budget itself."""
        return f'"sliding window";"commits";q={self.rate.limit};w={self.rate.period_s}'

    def take(self, repo: Repo) -> dict[str, str]:
        """Count one commit to `repo` now and return the `RateLimit` headers of the answer, or raise 429
        (counting nothing) if its window is full."""
        now = self.clock()
        counted, window = self.store.take_commit_slot(repo, now, self.rate.limit, self.rate.period_s)
        # Seconds until the oldest commit of the window leaves it, freeing a slot.
        frees = max(1, math.ceil(window[0] + self.rate.period_s - now)) if window else 0
        if counted:
            remaining = max(0, self.rate.limit - len(window))
            return {"RateLimit": f'"commits";r={remaining};t={frees}', "RateLimit-Policy": self.policy()}
        raise HubHTTPError(
            429,
            f"You have exceeded our rate limit for repository commits ({self.rate}). "
            f"Retry after {min(frees, MAX_RETRY_AFTER_S)} seconds.",
            headers={
                "Retry-After": str(min(frees, MAX_RETRY_AFTER_S)),
                "RateLimit": f'"commits";r=0;t={frees}',
                "RateLimit-Policy": self.policy(),
            },
        )


def commit_budget(
    rate: str | CommitRate | CommitBudget | None, store: CommitWindowStore | None = None
) -> CommitBudget | None:
    """The budget for a `commit_rate` setting (a `N/PERIOD` string, a rate, a budget); None when off.

    `store` keeps the windows (the hub's database); it is needed unless `rate` is already a budget.
    """
    if isinstance(rate, CommitBudget):
        return rate
    if rate is None or rate == "":
        return None
    if store is None:
        raise ValueError("A commit budget needs a store for its windows (the hub's MetadataStore).")
    return CommitBudget(rate if isinstance(rate, CommitRate) else CommitRate.parse(rate), store)


def check_commit(budget: CommitBudget | None, repo: Repo) -> dict[str, str]:
    """The commit route's hook: count this POST against `repo`'s budget, or answer 429.

    Returns the `RateLimit` / `RateLimit-Policy` headers every answer of the commit endpoint carries
    while a budget is set (none without one).
    """
    return budget.take(repo) if budget is not None else {}
