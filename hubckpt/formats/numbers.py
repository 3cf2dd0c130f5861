"""NaN / ±inf in the JSON files hubckpt writes: as the strings "NaN", "Infinity", "-Infinity"."""

from __future__ import annotations

import math
from typing import Any

NON_FINITE = {"NaN": math.nan, "Infinity": math.inf, "-Infinity": -math.inf}


def encode_number(value: Any) -> Any:
    """A float JSON parsers accept: NaN / ±inf become the strings "NaN", "Infinity", "-Infinity"."""
    if isinstance(value, float) and not math.isfinite(value):
        return "NaN" if math.isnan(value) else ("Infinity" if value > 0 else "-Infinity")
    return value


def decode_number(value: Any) -> Any:
    """Inverse of `encode_number`."""
    return NON_FINITE.get(value, value) if isinstance(value, str) else value
