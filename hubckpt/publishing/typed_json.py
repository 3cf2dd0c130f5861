"""Dataclasses to plain JSON values and back, by their fields' own types: one codec for `PublishOptions`
and the publishing process's messages (`process/protocol.py`).

`to_plain` writes nested dataclasses as objects, paths as strings, tuples as lists; `from_plain(cls, data)`
reads them back by `cls`'s type hints (a union takes its first member whose JSON shape the value has).
Nothing is pickled, and no field needs a case of its own.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from pathlib import Path
from typing import Any, Literal, TypeVar, Union, cast

T = TypeVar("T")


def to_plain(value: Any) -> Any:
    """`value` as JSON values; `ValueError` for what JSON cannot hold."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: to_plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, (list, tuple)):
        return [to_plain(v) for v in value]
    if isinstance(value, dict):
        return {str(k): to_plain(v) for k, v in value.items()}
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    raise ValueError(f"{value!r} ({type(value).__name__}) cannot be written as JSON")


def from_plain(cls: type[T], data: dict[str, Any]) -> T:
    """The `cls` dataclass that `to_plain` wrote (fields left out keep their defaults)."""
    hints = typing.get_type_hints(cls)
    known = {f.name for f in dataclasses.fields(cast(Any, cls)) if f.init}
    unknown = sorted(set(data) - known)
    if unknown:
        raise ValueError(f"unknown {cls.__name__} field(s): {', '.join(unknown)}")
    return cls(**{name: _typed(hints[name], value) for name, value in data.items()})


def _typed(hint: Any, value: Any) -> Any:
    """`value` (plain JSON) as the type `hint` describes."""
    if value is None or hint is Any:
        return value
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (Union, types.UnionType):
        for arg in args:
            if arg is not type(None) and _shaped(arg, value):
                return _typed(arg, value)
        raise ValueError(f"{value!r} is none of {hint}")
    if dataclasses.is_dataclass(hint) and isinstance(hint, type):
        return from_plain(hint, value)
    if origin in (list, tuple):
        return origin(_typed(args[0] if args else Any, v) for v in value)
    if origin is dict:
        item = args[1] if args else Any
        return {k: _typed(item, v) for k, v in value.items()}
    if hint is Path:
        return Path(value)
    return value


def _shaped(hint: Any, value: Any) -> bool:
    """Whether `value` has the JSON shape that `hint` is written as."""
    origin = typing.get_origin(hint) or hint
    if origin is Any:
        return True
    if (dataclasses.is_dataclass(origin) and isinstance(origin, type)) or origin is dict:
        return isinstance(value, dict)
    if origin in (list, tuple):
        return isinstance(value, list)
    if origin is Path:
        return isinstance(value, str)
    if origin is Literal:
        return value in typing.get_args(hint)
    if origin is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if origin is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    return isinstance(origin, type) and isinstance(value, origin)


__all__ = ["to_plain", "from_plain"]
