"""Background priority: "idle" puts a thread (and what it starts) in the idle class; bad settings are refused."""

from __future__ import annotations

import os
import threading

import pytest

from hubckpt.errors import HubConfigError
from hubckpt.priority import IDLE, check_priority, idle_class_supported, in_background_priority


@pytest.mark.skipif(not idle_class_supported(), reason="Linux only")
def test_idle_reaches_the_threads_started_under_it():
    def make():
        seen = {}
        inner = threading.Thread(target=lambda: seen.update(policy=os.sched_getscheduler(0)))
        inner.start()
        inner.join()
        return os.sched_getscheduler(0), seen["policy"]

    assert in_background_priority(make, IDLE) == (os.SCHED_IDLE, os.SCHED_IDLE)
    assert os.sched_getscheduler(0) != os.SCHED_IDLE  # the caller's own thread keeps its priority


def test_a_nice_increment_lowers_only_the_background_thread():
    before = os.getpriority(os.PRIO_PROCESS, 0)
    after = in_background_priority(lambda: os.getpriority(os.PRIO_PROCESS, threading.get_native_id()), 5)
    assert after == min(19, before + 5) and os.getpriority(os.PRIO_PROCESS, 0) == before


@pytest.mark.parametrize("bad", [-1, 20, "low", 2.5, True])
def test_bad_priorities_are_refused_with_what_is_allowed(bad):
    with pytest.raises(HubConfigError, match="idle.*0 to 19"):
        check_priority(bad)


def test_the_checkpointer_refuses_idle_threads_that_share_the_gil(tmp_path):
    from torch import nn

    import hubckpt

    with pytest.raises(HubConfigError, match="background='process'"):
        hubckpt.Checkpointer(
            "alice/x",
            model=nn.Linear(2, 2),
            hub="http://127.0.0.1:9",
            background="thread",
            nice="idle",
            spool_dir=tmp_path / "spool",
        )


@pytest.mark.parametrize("bad", [0, -5, "fast", "", True])
def test_the_checkpointer_refuses_a_bad_publish_rate(tmp_path, bad):
    from torch import nn

    import hubckpt

    with pytest.raises(HubConfigError, match="publish_mb_per_s"):
        hubckpt.Checkpointer(
            "alice/x",
            model=nn.Linear(2, 2),
            hub="http://127.0.0.1:9",
            background="process",
            publish_mb_per_s=bad,
            spool_dir=tmp_path / "spool",
        )
