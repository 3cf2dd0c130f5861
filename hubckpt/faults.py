"""Named crash points for crash-safety tests: `HUBCKPT_FAULT=<point>:kill` SIGKILLs the process there."""

from __future__ import annotations

import logging
import os
import signal

from hubckpt import environment

logger = logging.getLogger(__name__)


def fault(point: str) -> None:
    """Kill this process at `point` if the environment asks for it (never set outside tests)."""
    if environment.fault() == f"{point}:kill":
        logger.warning("fault injection: killing the process at %s", point)
        os.kill(os.getpid(), signal.SIGKILL)
