"""Named crash points for crash-safety tests: `HUBCKPT_FAULT=<point>:kill` SIGKILLs the process there."""

from __future__ import annotations

import logging
import os
import signal

logger = logging.getLogger(__name__)
FAULT_ENV = "HUBCKPT_FAULT"


def fault(point: str) -> None:
    """Kill this process at `point` if the environment asks for it (never set outside tests)."""
    if os.environ.get(FAULT_ENV, "") == f"{point}:kill":
        logger.warning("fault injection: killing the process at %s", point)
        os.kill(os.getpid(), signal.SIGKILL)
