"""Every `HUBCKPT_*` variable that only the tests and benchmarks read, in one place: the only test module that
reads them.

`hubckpt/environment.py` registers what the package itself reads (and the user guide documents); these knobs
of the test suite and benchmarks are not the package's, so they stay here: the wheel does not ship them and the
user-facing table of environment variables does not list them. `tests/test_environment.py` checks that every
`HUBCKPT_*` name read anywhere (package, tests, bench, `.ci/`) is registered in one of the two.
"""

from __future__ import annotations

import os
import random
from pathlib import Path

from hubckpt.environment import EnvVar

CRASH_SEED = EnvVar(
    "HUBCKPT_CRASH_SEED",
    None,
    "The seed of a random kill test (`test_publish_crash`, `test_publisher_process`): replays the run that "
    "printed it. Unset: a fresh random seed.",
)
CRASH_BUDGET_S = EnvVar(
    "HUBCKPT_CRASH_BUDGET_S",
    "12",
    "Seconds of random kill rounds a random kill test runs before its clean run.",
)
WEB_SCREENSHOTS = EnvVar(
    "HUBCKPT_WEB_SCREENSHOTS",
    None,
    "A folder: the browser tests (`test_web_browser`) keep a screenshot of each page they visit there.",
)
TEST_INSTALLED_IN = EnvVar(
    "HUBCKPT_TEST_INSTALLED_IN",
    None,
    "Set by `make wheel-check` (`.ci/wheel-check`) to the fresh venv the wheel is installed in: the tests then "
    "check that the package under test is that one, never the checkout.",
)

VARIABLES: tuple[EnvVar, ...] = (CRASH_SEED, CRASH_BUDGET_S, WEB_SCREENSHOTS, TEST_INSTALLED_IN)


def _get(var: EnvVar) -> str | None:
    value = os.environ.get(var.name)
    return value if value not in (None, "") else None


def crash_seed() -> int:
    """`HUBCKPT_CRASH_SEED`, else a fresh random seed."""
    value = _get(CRASH_SEED)
    return int(value) if value is not None else random.SystemRandom().randrange(2**32)


def crash_budget_s() -> float:
    """`HUBCKPT_CRASH_BUDGET_S`, default 12."""
    assert CRASH_BUDGET_S.default is not None
    return float(os.environ.get(CRASH_BUDGET_S.name, CRASH_BUDGET_S.default))


def web_screenshots() -> Path | None:
    """The folder for the browser tests' screenshots, None: take none."""
    value = _get(WEB_SCREENSHOTS)
    return Path(value) if value is not None else None


def installed_in() -> Path | None:
    """The venv `make wheel-check` installed the wheel in; None outside it."""
    value = _get(TEST_INSTALLED_IN)
    return Path(value) if value is not None else None
