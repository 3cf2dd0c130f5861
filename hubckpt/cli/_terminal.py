"""What the CLI writes to a terminal: text from a hub (names, metrics, tags, cards) with control characters
escaped, so a repo cannot move the cursor, retitle the window, hide text or fake output lines."""

from __future__ import annotations

import logging
import re
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, TextIO

# C0 controls but newline and tab, DEL, C1 controls, and the bidirectional overrides and isolates
_CONTROL = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")
# the same but carriage return: what progress bars on stderr redraw their line with
_CONTROL_BUT_CR = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")


def escape_controls(text: str, *, keep_cr: bool = False) -> str:
    r"""`text` with every terminal control character written as an escape (`\x1b`, `\u202e`)."""
    return (_CONTROL_BUT_CR if keep_cr else _CONTROL).sub(lambda m: ascii(m.group())[1:-1], text)


class EscapingWriter:
    """A text stream that escapes control characters in everything written through it."""

    def __init__(self, stream: TextIO, *, keep_cr: bool = False) -> None:
        self._stream = stream
        self._keep_cr = keep_cr
        self.encoding = getattr(stream, "encoding", "utf-8")
        self.errors = getattr(stream, "errors", "strict")

    def write(self, text: str) -> int:
        self._stream.write(escape_controls(text, keep_cr=self._keep_cr))
        return len(text)

    def writelines(self, lines) -> None:
        for line in lines:
            self.write(line)

    def flush(self) -> None:
        self._stream.flush()

    def isatty(self) -> bool:
        return self._stream.isatty()

    def fileno(self) -> int:
        return self._stream.fileno()

    def writable(self) -> bool:
        return True

    def readable(self) -> bool:
        return False

    def seekable(self) -> bool:
        return False

    def __getattr__(self, name: str) -> Any:
        if name == "buffer":  # writing bytes past the escaping is what this stream exists to prevent
            raise AttributeError(name)
        return getattr(self._stream, name)


@contextmanager
def escaped_output() -> Iterator[None]:
    """Everything the commands print, to stdout and stderr (`typer.echo(..., err=True)`, log records, progress
    text), goes through `EscapingWriter` (JSON output is ASCII already). Only progress bars' carriage return
    passes on stderr (log records are escaped whole by `EscapingFormatter`, carriage returns included)."""
    out, err = sys.stdout, sys.stderr
    sys.stdout, sys.stderr = EscapingWriter(out), EscapingWriter(err, keep_cr=True)
    try:
        yield
    finally:
        sys.stdout, sys.stderr = out, err


class EscapingFormatter(logging.Formatter):
    """A log formatter that escapes control characters in the whole record (message, arguments, traceback):
    log records carry a hub's text (server messages, names), and a handler may hold the real stderr."""

    def format(self, record: logging.LogRecord) -> str:
        return escape_controls(super().format(record))
