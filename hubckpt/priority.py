"""CPU priority of background work: a nice increment, or Linux's idle scheduling class.

Why the idle class: on the kernels in use now (EEVDF), a nice value only sets a share of the CPU, not
who runs first, so a nice-19 process that is busy still delays the training threads that wake up
next to it; measured here, a nice-19 sha256 loop took training to 0.78x of its speed, the same loop
under `SCHED_IDLE` to 1.05x (`bench/README.md`). A `SCHED_IDLE` thread runs only on CPU time that
nothing else wants, and is preempted at once when something does.

What it costs: on cores that other work keeps busy (other jobs, DataLoader workers), idle-class work
gets only a few percent of a core, so a revision appears late, and a training loop that waits for it
(a save waiting for the previous capture to reach the spool with `staging_sets=1`, `wait()`,
`close()`) waits longer; when the training loop is the only load, its waiting leaves the CPU idle and
the work runs. An unprivileged thread cannot leave the idle class again, so it is set only on threads
that do background work, never on one that shares a GIL with others that do not.
"""

from __future__ import annotations

import logging
import os
import sys
import threading
from collections.abc import Callable
from typing import Any, TypeVar

from .errors import HubConfigError

logger = logging.getLogger(__name__)

IDLE = "idle"
T = TypeVar("T")


def idle_class_supported() -> bool:
    """Whether this platform has the idle scheduling class (Linux)."""
    return sys.platform.startswith("linux") and hasattr(os, "SCHED_IDLE")


def check_priority(value: Any) -> int | str:
    """`value` if it is a priority setting (a nice increment 0..19, or "idle"); `HubConfigError` otherwise."""
    if value == IDLE:
        if not idle_class_supported():
            raise HubConfigError(
                "nice='idle' needs Linux (the SCHED_IDLE scheduling class); pass a nice increment such as 10 instead"
            )
        return IDLE
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 19:
        raise HubConfigError(f"nice must be 'idle' or a nice increment from 0 to 19, got {value!r}")
    return value


def lower_priority(priority: int | str, tid: int = 0) -> None:
    """Lower the CPU priority of thread `tid` (0: the calling one; threads it starts later inherit it).

    An int raises the thread's nice value by that much (up to 19); "idle" puts it in the idle class.
    Where that is not permitted or not supported, the thread goes on at its priority (logged).
    """
    try:
        if priority == IDLE:
            os.sched_setscheduler(tid, os.SCHED_IDLE, os.sched_param(0))
        elif isinstance(priority, int) and priority and hasattr(os, "setpriority"):  # checked by check_priority
            tid = tid or threading.get_native_id()
            os.setpriority(os.PRIO_PROCESS, tid, min(19, os.getpriority(os.PRIO_PROCESS, tid) + priority))
    except OSError as e:
        logger.debug("could not lower the priority of background work to %r: %s", priority, e)


def lower_process_priority(priority: int | str) -> None:
    """Lower the priority of every thread of this process (Linux sets priorities per thread)."""
    try:
        tids = [int(t) for t in os.listdir("/proc/self/task")]
    except OSError:
        tids = [0]
    for tid in tids:
        lower_priority(priority, tid)


def in_background_priority(make: Callable[[], T], priority: int | str) -> T:
    """`make()` run on a short-lived thread of lowered priority, so the threads it starts inherit that."""
    box: dict[str, Any] = {}

    def run() -> None:
        lower_priority(priority)
        try:
            box["value"] = make()
        except BaseException as e:  # noqa: BLE001 - re-raised on the caller's thread
            box["error"] = e

    thread = threading.Thread(target=run, name="hubckpt-start")
    thread.start()
    thread.join()
    if "error" in box:
        raise box["error"]
    return box["value"]


__all__ = [
    "IDLE",
    "check_priority",
    "idle_class_supported",
    "in_background_priority",
    "lower_priority",
    "lower_process_priority",
]
