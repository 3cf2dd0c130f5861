"""Named crash points for crash-safety tests: `HUBCKPT_FAULT=<point>:kill` SIGKILLs the process there;
`HUBCKPT_FAULT=<point>:sleep:<seconds>` holds the process there that long (to hit a window in a test)."""

from __future__ import annotations

import logging
import os
import signal
import time

from hubckpt import environment

logger = logging.getLogger(__name__)


def fault(point: str) -> None:
    """Kill this process at `point` if the environment asks for it (never set outside tests)."""
    asked = environment.fault()
    if asked == f"{point}:kill":
        logger.warning("fault injection: killing the process at %s", point)
        os.kill(os.getpid(), signal.SIGKILL)
    elif asked.startswith(f"{point}:sleep:"):
        logger.warning("fault injection: holding the process at %s", point)
        time.sleep(float(asked.rsplit(":", 1)[1]))
