"""A repo's commit budget as the hub's answers tell it, and a pacer that spaces commits under it.

huggingface.co accepts so many commits per repo per window ("rate limit for repository commits (128 per
hour)"); the local hub emulates it (`hubckpt serve --commit-rate N/PERIOD`). What a client can learn:

- from a refused commit (429): `RateLimit: "commits";r=0;t=S` (S: seconds until the window accepts one
  again), `RateLimit-Policy: "sliding window";"commits";q=N;w=P` (N commits per P seconds),
  `Retry-After`, and the message's "(N per hour)";
- from an accepted commit, where the hub sends them: the same two headers, r being the commits the window
  still accepts and t the seconds until it frees one.

huggingface_hub's `create_commit` returns no headers, so `commit_answers()` collects the readings of the
commit answers the calling thread receives (a response hook, `patches.add_response_hook`). `CommitPacer`
turns the readings into a delay before each commit (so a writer that learned the budget is not refused
again) and into how long N more commits will take. Only the "commits" budget is read here; other 429s
(huggingface.co's requests per 5 minutes) are waited out by `retries.with_retries` as they come.
"""

from __future__ import annotations

import contextlib
import re
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from .patches import add_response_hook
from .retries import retry_after, status_of

_MESSAGE = re.compile(r"repository commits \((\d+) per (?:(\d+) )?(second|minute|hour|day)s?\)")
_UNIT_S = {"second": 1, "minute": 60, "hour": 3600, "day": 86400}


@dataclass(frozen=True)
class BudgetReading:
    """One answer's account of the budget: `remaining` commits accepted now, one more `reset_s` from `at`."""

    remaining: int
    reset_s: float
    limit: int | None = None  # commits per window (RateLimit-Policy q, or the 429's message)
    window_s: float | None = None  # the window, seconds (RateLimit-Policy w)
    at: float = 0.0  # time.monotonic() when the answer arrived


def reading_of(headers: Mapping[str, str], *, at: float | None = None) -> BudgetReading | None:
    """The commit budget's `RateLimit` / `RateLimit-Policy` headers; None without them (or for another budget)."""
    from huggingface_hub.utils import parse_ratelimit_headers

    info = parse_ratelimit_headers(headers)
    if info is None or info.resource_type != "commits":
        return None
    window = float(info.window_seconds) if info.window_seconds else None
    when = time.monotonic() if at is None else at
    return BudgetReading(info.remaining, float(info.reset_in_seconds), info.limit, window, when)


def refusal_reading(error: BaseException, *, at: float | None = None) -> BudgetReading | None:
    """What a 429 to a commit says of the budget: its headers, else `Retry-After` and the message's "(N per hour)"."""
    if status_of(error) != 429:
        return None
    headers: Mapping[str, str] = getattr(getattr(error, "response", None), "headers", None) or {}
    now = time.monotonic() if at is None else at
    found = _MESSAGE.search(f"{headers.get('x-error-message', '')} {error}")
    limit = int(found[1]) if found else None
    window = float(int(found[2] or 1) * _UNIT_S[found[3]]) if found else None
    reading = reading_of(headers, at=now)
    if reading is not None and reading.remaining == 0:
        return BudgetReading(0, reading.reset_s, reading.limit or limit, reading.window_s or window, now)
    wait = retry_after(error)
    if wait is None and limit is None:
        return None
    return BudgetReading(0, wait or 0.0, limit, window, now)


_capture = threading.local()


def _on_response(response: Any) -> None:
    """The response hook: a commit answer's budget headers, kept for the thread's `commit_answers()` if one is open."""
    readings = getattr(_capture, "readings", None)
    if readings is None or response.status_code >= 300:
        return
    request = response.request
    if request.method == "POST" and "/commit/" in request.url.path:
        reading = reading_of(response.headers)
        if reading is not None:
            readings.append(reading)


def watch_commit_answers() -> None:
    """Install the response hook (idempotent). Installing replaces huggingface_hub's shared client, which
    closes the old one: call it before requests run in other threads (`MirrorIO` does, at its start)."""
    add_response_hook(_on_response)


@contextlib.contextmanager
def commit_answers() -> Iterator[list[BudgetReading]]:
    """The budget readings of the accepted commits this thread makes inside the block (empty: the hub sent none)."""
    watch_commit_answers()
    outer = getattr(_capture, "readings", None)
    readings: list[BudgetReading] = []
    _capture.readings = readings
    try:
        yield readings
    finally:
        _capture.readings = outer


class CommitPacer:
    """Spaces one writer's commits to a repo under its budget, as learned from the hub's answers.

    Before the budget is known (no headers on accepted commits, no 429 yet) commits go at once. Then:
    while the last answer said the window accepts more, at once; otherwise when the window frees a
    slot, by the hub's `t` and by the times of the commits this pacer saw accepted. After a 429 without
    headers on accepted commits, the commits it cannot account for in the full window are taken to leave
    it as late as they can (a window after the refusal): slower than needed at worst, never refused again
    by a budget nobody else spends.
    """

    def __init__(self, *, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self.limit: int | None = None
        self.window_s: float | None = None
        self.remaining: int | None = None  # what the last reading said the window still accepts
        self.not_before = 0.0  # no commit before this time (monotonic)
        self.accepted: list[float] = []  # when this writer's commits were accepted, the last `limit` of them
        self.others: list[float] = []  # when commits of others, seen at a refusal, leave the window (at the latest)
        self.refusals = 0

    def learn(self, reading: BudgetReading) -> None:
        self.limit = reading.limit or self.limit
        self.window_s = reading.window_s or self.window_s
        self.remaining = reading.remaining
        self.not_before = reading.at + (reading.reset_s if reading.remaining == 0 else 0.0)

    def accepted_commit(self, readings: list[BudgetReading]) -> None:
        """A commit was accepted; `readings`: what its answer said of the budget (`commit_answers`)."""
        self.accepted.append(readings[-1].at if readings else self.clock())
        del self.accepted[: -max(self.limit or 0, 1024)]
        if readings:
            self.learn(readings[-1])
        elif self.remaining is not None:
            self.remaining = max(0, self.remaining - 1)

    def refused(self, error: BaseException) -> None:
        """A commit was refused: learn the budget from the 429, the window being full now."""
        reading = refusal_reading(error, at=self.clock())
        if reading is None:
            return
        self.refusals += 1
        self.learn(reading)
        if self.limit is not None and self.window_s is not None:
            now, window = reading.at, self.window_s
            ours = [a + window for a in self.accepted if a > now - window]
            unknown = max(0, self.limit - len(ours))
            first = now + reading.reset_s
            # The window's oldest commit leaves at `first`: one of the others, unless it is one of ours.
            oldest_is_ours = bool(ours) and min(ours) <= first + 1.0
            self.others = [now + window] * unknown
            if unknown and not oldest_is_ours:
                self.others[0] = first

    def delay(self) -> float:
        """Seconds to wait before the next commit (0: send it now)."""
        now = self.clock()
        return max(0.0, self._next_at(now, self.accepted, self.remaining) - now)

    def _next_at(self, at: float, accepted: list[float], remaining: int | None) -> float:
        start = max(at, self.not_before)
        if (remaining is not None and remaining > 0) or self.limit is None or self.window_s is None:
            return start
        live = sorted(e for e in [*self.others, *(a + self.window_s for a in accepted[-self.limit :])] if e > start)
        return start if len(live) < self.limit else live[-self.limit]

    def eta_s(self, commits: int, per_commit_s: float = 0.0) -> float | None:
        """Seconds until `commits` more are accepted, each `per_commit_s` of work; None while the budget is unknown."""
        if self.limit is None or self.window_s is None:
            return None
        now = self.clock()
        at, accepted, remaining = now, list(self.accepted), self.remaining
        for i in range(commits):  # each one's work, then a free slot (the work overlaps the wait)
            if i < self.limit:
                at = self._next_at(at + per_commit_s, accepted, remaining)
            else:  # the window holds only these by now: each waits for the one `limit` before it to leave
                at = max(at + per_commit_s, accepted[-self.limit] + self.window_s)
            accepted.append(at)
            remaining = None if remaining is None else max(0, remaining - 1)
        return at - now

    def rate(self) -> str | None:
        """The budget as `6/min`, `128/h`; None while unknown."""
        if self.limit is None or self.window_s is None:
            return None
        units = {1.0: "s", 60.0: "min", 3600.0: "h", 86400.0: "day"}
        unit = units.get(self.window_s, f"{self.window_s:g}s")
        return f"{self.limit}/{unit}"

    def describe(self, commits: int, per_commit_s: float = 0.0) -> str:
        """`12 commits left, about 2 min at 6/min` (the time only once the budget is known)."""
        text = f"{commits} commit{'' if commits == 1 else 's'} left"
        eta, rate = self.eta_s(commits, per_commit_s), self.rate()
        return text if eta is None or rate is None else f"{text}, about {duration(eta)} at {rate}"


def duration(seconds: float) -> str:
    """`40 s`, `12 min`, `1.5 h`."""
    if seconds < 90:
        return f"{max(0, round(seconds))} s"
    if seconds < 90 * 60:
        return f"{round(seconds / 60)} min"
    return f"{seconds / 3600:.1f} h"


__all__ = [
    "BudgetReading",
    "CommitPacer",
    "commit_answers",
    "duration",
    "reading_of",
    "refusal_reading",
    "watch_commit_answers",
]
