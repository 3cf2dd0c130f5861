"""Every `HUBCKPT_*` environment variable, in one place: the only module that reads them.

`VARIABLES` lists them, with their defaults and what they do (the docs' table of environment variables
is generated from it); the small accessors below read them when called, never at import, so a variable
set after `import hubckpt` (or by a test) is seen.

Progress bars follow huggingface_hub's `HF_HUB_DISABLE_PROGRESS_BARS`: `HUBCKPT_DISABLE_PROGRESS_BARS=1`
hides hubckpt's bars, `=0` shows them (upload bars included, which are otherwise hidden because
publishing runs in the background), unset leaves each bar at its default. The older
`HUBCKPT_PROGRESS_BARS=1` still works as `HUBCKPT_DISABLE_PROGRESS_BARS=0`, with a FutureWarning.
"""

from __future__ import annotations

import math
import os
import warnings
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class EnvVar:
    """One environment variable hubckpt reads: its name, its default (None: unset) and what it does."""

    name: str
    default: str | None
    description: str


HUB = EnvVar(
    "HUBCKPT_HUB",
    None,
    "The hub to publish to and load from when no `hub=` / `--hub` is given: `local`, `hf`, or a URL. "
    "Unset: `HF_ENDPOINT` if set, else `local`.",
)
HUB_ROOT = EnvVar(
    "HUBCKPT_HUB_ROOT",
    "~/.cache/hubckpt/hub",
    "Data folder of the local hub (repos, users, tokens) when no `root=` / `--root` is given.",
)
TOKEN = EnvVar(
    "HUBCKPT_TOKEN",
    None,
    "Token sent to hubs other than huggingface.co when none is given (huggingface.co uses `HF_TOKEN` or "
    "the token saved by `hf auth login`; that one never travels to another hub).",
)
SPOOL = EnvVar(
    "HUBCKPT_SPOOL",
    "~/.cache/hubckpt/spool",
    "Folder of the publishers' spools (staged revisions and their journals), one sub-folder per repo.",
)
HTTP_TIMEOUT = EnvVar(
    "HUBCKPT_HTTP_TIMEOUT",
    "120",
    "Seconds one request to a hub may stall while reading or writing (not the time a large upload may take). "
    "A value that is not a positive, finite number is ignored (the default applies).",
)
CONNECT_TIMEOUT = EnvVar(
    "HUBCKPT_CONNECT_TIMEOUT",
    "10",
    "Seconds to wait for a connection to a hub. A value that is not a positive, finite number is ignored.",
)
DIRECT_IO = EnvVar(
    "HUBCKPT_DIRECT_IO",
    "1",
    "`0` turns off direct I/O (O_DIRECT, Linux) for large checkpoint files; results are the same either way.",
)
READ_STREAMS = EnvVar(
    "HUBCKPT_READ_STREAMS",
    "8",
    "Parallel HTTP Range streams per weight file when `load_state_dict` / `iter_revisions` read a revision "
    "that is not cached; `0` downloads through `hf_hub_download` instead (one stream).",
)
DISABLE_PROGRESS_BARS = EnvVar(
    "HUBCKPT_DISABLE_PROGRESS_BARS",
    None,
    "`1` hides hubckpt's progress bars, `0` shows them all (upload bars included); unset: the conversion "
    "bar shows in a terminal, upload bars stay hidden. Same convention as `HF_HUB_DISABLE_PROGRESS_BARS`.",
)
PROGRESS_BARS = EnvVar(
    "HUBCKPT_PROGRESS_BARS",
    None,
    "Deprecated: `1` is read as `HUBCKPT_DISABLE_PROGRESS_BARS=0`.",
)
DEBUG = EnvVar(
    "HUBCKPT_DEBUG",
    None,
    "`1` makes the CLI show full tracebacks and debug logs (as `--debug` does).",
)
FAULT = EnvVar(
    "HUBCKPT_FAULT",
    None,
    "Tests only: `<point>:kill` kills the process at a named crash point (crash-safety tests). Never set it otherwise.",
)
COMMIT_RATE = EnvVar(
    "HUBCKPT_COMMIT_RATE",
    None,
    "Commit budget of a local hub started without `--commit-rate` (by `hubckpt serve` or in the background): "
    "`N/PERIOD` commits per repo, e.g. `128/h` as on huggingface.co, `6/min`, `6/10s`. Unset: no budget.",
)
PUBLISHER_FD = EnvVar(
    "HUBCKPT_PUBLISHER_FD",
    None,
    "Internal: set by a publisher for its child publishing process (the socket it talks over). Never set it.",
)

VARIABLES: tuple[EnvVar, ...] = (
    HUB,
    HUB_ROOT,
    TOKEN,
    SPOOL,
    HTTP_TIMEOUT,
    CONNECT_TIMEOUT,
    DIRECT_IO,
    READ_STREAMS,
    DISABLE_PROGRESS_BARS,
    PROGRESS_BARS,
    DEBUG,
    FAULT,
    COMMIT_RATE,
    PUBLISHER_FD,
)

_TRUE = frozenset({"1", "ON", "YES", "TRUE"})  # huggingface_hub's `_is_true`
_FALSE = frozenset({"0", "OFF", "NO", "FALSE"})


def _get(var: EnvVar) -> str | None:
    """The variable's value, None when unset or empty."""
    value = os.environ.get(var.name)
    return value if value not in (None, "") else None


def _path(var: EnvVar) -> Path:
    value = _get(var) or var.default
    assert value is not None
    return Path(value).expanduser()


def _seconds(var: EnvVar) -> float:
    """A positive, finite number of seconds; the default when unset, not a number, zero, negative or infinite
    (a timeout of -5 or nan would make every request fail at once, inf would let a stalled one wait forever)."""
    assert var.default is not None
    try:
        value = float(_get(var) or "")
    except ValueError:
        return float(var.default)
    return value if math.isfinite(value) and value > 0 else float(var.default)


def hub() -> str:
    """The hub when none is given: `HUBCKPT_HUB`, then `HF_ENDPOINT`, then `local`."""
    return _get(HUB) or os.environ.get("HF_ENDPOINT") or "local"


def hub_root() -> Path:
    """The local hub's data folder: `HUBCKPT_HUB_ROOT`, else `~/.cache/hubckpt/hub`."""
    return _path(HUB_ROOT)


def token() -> str | None:
    """The token for hubs other than huggingface.co (`HUBCKPT_TOKEN`), None when unset."""
    return _get(TOKEN)


def spool() -> Path:
    """The folder holding the publishers' spools: `HUBCKPT_SPOOL`, else `~/.cache/hubckpt/spool`."""
    return _path(SPOOL)


def http_timeout() -> float:
    """Seconds a request may stall reading or writing (`HUBCKPT_HTTP_TIMEOUT`, default 120)."""
    return _seconds(HTTP_TIMEOUT)


def connect_timeout() -> float:
    """Seconds to wait for a connection (`HUBCKPT_CONNECT_TIMEOUT`, default 10)."""
    return _seconds(CONNECT_TIMEOUT)


def direct_io() -> bool:
    """Whether direct I/O may be used (on unless `HUBCKPT_DIRECT_IO` is 0/false/off/no)."""
    return (_get(DIRECT_IO) or "1").strip().upper() not in _FALSE


def read_streams() -> int:
    """Parallel Range streams per weight file for cold loads (`HUBCKPT_READ_STREAMS`, default 8; 0: off)."""
    assert READ_STREAMS.default is not None
    try:
        return max(0, min(64, int(_get(READ_STREAMS) or READ_STREAMS.default)))
    except ValueError:
        return int(READ_STREAMS.default)


_warned_progress_bars = False


def progress_bars() -> bool | None:
    """True: show hubckpt's progress bars; False: hide them; None: each bar keeps its own default.

    `HUBCKPT_DISABLE_PROGRESS_BARS` decides when set; else the deprecated `HUBCKPT_PROGRESS_BARS=1` means True.
    """
    global _warned_progress_bars
    disable = _get(DISABLE_PROGRESS_BARS)
    if disable is not None:
        return disable.strip().upper() not in _TRUE
    old = _get(PROGRESS_BARS)
    if old is None:
        return None
    if not _warned_progress_bars:
        _warned_progress_bars = True
        warnings.warn(
            f"{PROGRESS_BARS.name} is deprecated: set {DISABLE_PROGRESS_BARS.name}=0 to show progress bars "
            f"(=1 hides them), as with HF_HUB_DISABLE_PROGRESS_BARS.",
            FutureWarning,
            stacklevel=2,
        )
    return True if old.strip() == "1" else None


def debug() -> bool:
    """Whether the CLI shows tracebacks (`HUBCKPT_DEBUG=1`)."""
    return (_get(DEBUG) or "").strip().upper() in _TRUE


def fault() -> str:
    """The crash point tests asked for (`HUBCKPT_FAULT`), "" when none."""
    return _get(FAULT) or ""


def commit_rate() -> str | None:
    """The local hub's commit budget (`N/PERIOD`) when `--commit-rate` is not given; None: no budget."""
    return _get(COMMIT_RATE)


def publisher_fd() -> int:
    """The child publishing process's socket, handed over by its parent; removed from the environment
    so that processes the child starts do not inherit it."""
    return int(os.environ.pop(PUBLISHER_FD.name))


__all__ = [
    "VARIABLES",
    "EnvVar",
    "connect_timeout",
    "debug",
    "direct_io",
    "fault",
    "hub",
    "hub_root",
    "http_timeout",
    "progress_bars",
    "publisher_fd",
    "spool",
    "token",
]
