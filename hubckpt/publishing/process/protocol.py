"""What the training process and its publishing process say to each other: one dataclass per message,
one codec, one protocol version.

    parent (training) → child (publishing)           child → parent
    Start    version, repo, the PublishOptions       Ready     version, spool    | Refused  error
    Buffers  new shared buffers (fds attached)       Log       one log record of the child's
    Publish  one capture: names in a staging set     Released  its buffers may be reused
    Wait / Close                                     Done      PublishedRevision | Failed   error
                                                     Waited    error or None

On the wire a message is a JSON object `{"kind": <class name>, ...its fields}` (`encode` / `decode`,
by the fields' own types through `typed_json`; nothing is pickled), carried by `shared_memory.Channel`.
`PROTOCOL_VERSION` is checked at the handshake, both ways: a training process and a publishing
process of different hubckpt versions refuse each other with a clear error rather than misread a
message. Errors cross with their class and their fields (`ErrorInfo`): a hubckpt error is rebuilt as
the same class with the same attributes (a `SpoolBusyError` keeps its `pid`); any other is a
`PublishError` naming it.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, get_args

from ... import errors
from ...errors import PublishError
from ..options import PublishOptions
from ..pipeline import PublishedRevision
from ..shared_memory import Channel
from ..typed_json import from_plain, to_plain

if TYPE_CHECKING:
    import torch

PROTOCOL_VERSION = 2  # raise it with any change to a message below (2: ErrorInfo.cause)


# -- values inside messages ------------------------------------------------------------------------------


@dataclass(frozen=True)
class ErrorInfo:
    """An error as it crosses: its class name, its message, its public attributes that JSON can hold, and
    its `__cause__` (one level: `cause` is that error's `type`, `message` and `fields`)."""

    type: str
    message: str
    fields: dict[str, Any] = field(default_factory=dict)
    cause: dict[str, Any] | None = None

    @classmethod
    def of(cls, error: BaseException, *, chain: bool = True) -> ErrorInfo:
        cause = None
        if chain and error.__cause__ is not None:
            first = cls.of(error.__cause__, chain=False)
            cause = {"type": first.type, "message": first.message, "fields": first.fields}
        fields = {}
        for name, value in vars(error).items():
            if name.startswith("_"):
                continue
            try:
                plain = to_plain(value)
                json.dumps(plain)
            except (TypeError, ValueError):  # (e.g. an HTTP response object): left out
                continue
            fields[name] = plain
        return cls(type(error).__name__, str(error), fields, cause)

    def rebuild(self) -> BaseException:
        """The error again: the same hubckpt class with the same attributes, else a `PublishError` naming it;
        its `__cause__` rebuilt the same way."""
        error = self._rebuild_one()
        if self.cause is not None:
            error.__cause__ = ErrorInfo(
                str(self.cause.get("type")), str(self.cause.get("message")), dict(self.cause.get("fields") or {})
            )._rebuild_one()
        return error

    def _rebuild_one(self) -> BaseException:
        cls = getattr(errors, self.type, None)
        if isinstance(cls, type) and issubclass(cls, errors.HubckptError):
            # Not through __init__, whose arguments differ by class: the message and attributes as they were.
            error = cls.__new__(cls)
            error.args = (self.message,)
            error.__dict__.update(self.fields)
            return error
        return PublishError(f"{self.type}: {self.message}")


@dataclass(frozen=True)
class InlineTensor:
    """A small tensor that is not a staging buffer (an RNG state, a 0-dim one), by value."""

    dtype: str
    shape: list[int]
    data: str  # base64 of its bytes

    @classmethod
    def of(cls, tensor: torch.Tensor) -> InlineTensor:
        import torch

        t = tensor.detach().cpu().contiguous()
        raw = t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b""
        return cls(dtype_name(t.dtype), list(t.shape), base64.b64encode(raw).decode())

    def tensor(self) -> torch.Tensor:
        import torch

        dtype = getattr(torch, self.dtype)
        raw = base64.b64decode(self.data)
        if not raw:
            return torch.empty(self.shape, dtype=dtype)
        return torch.frombuffer(bytearray(raw), dtype=torch.uint8).view(dtype).reshape(self.shape)


def dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


@dataclass(frozen=True)
class Arena:
    """A memfd of staging buffers, sent once (its descriptor attached to the `Buffers` message)."""

    id: int
    size: int


@dataclass(frozen=True)
class Buffer:
    """One staging buffer: where it lies in an arena, and what it holds."""

    path: str  # its path in the captured tree (`model/wte.weight`)
    dtype: str
    shape: list[int]
    arena: int
    offset: int


# -- parent → child --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Start:
    protocol: int
    repo_id: str
    options: PublishOptions
    nice: int | str
    mb_per_s: float | None
    log_level: int


@dataclass(frozen=True)
class Buffers:
    staging_set: int
    arenas: list[Arena]
    buffers: list[Buffer]


@dataclass(frozen=True)
class Publish:
    id: int
    staging_set: int | None
    tree: Any  # `conversion.training_state.encode_tree`'s structure of {"weights", "training_state"}
    staged: dict[str, str]  # tensor key in `tree` → buffer path in the staging set
    inline: dict[str, InlineTensor]  # tensor key in `tree` → the tensor by value
    nbytes: int  # what the child paces by
    step: int
    metrics: dict[str, float]
    tokens: int | None
    epoch: float | None
    final: bool
    companions: list[str]


@dataclass(frozen=True)
class Wait:
    id: int
    timeout: float | None


@dataclass(frozen=True)
class Close:
    id: int
    timeout: float | None


# -- child → parent --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Ready:
    protocol: int
    spool: str


@dataclass(frozen=True)
class Refused:
    """The child could not start (its Publisher raised, or the versions differ)."""

    error: ErrorInfo


@dataclass(frozen=True)
class Log:
    name: str
    level: int
    msg: str


@dataclass(frozen=True)
class Released:
    id: int


@dataclass(frozen=True)
class Done:
    id: int
    revision: PublishedRevision


@dataclass(frozen=True)
class Failed:
    id: int
    error: ErrorInfo


@dataclass(frozen=True)
class Waited:
    id: int
    error: ErrorInfo | None


Message = Start | Buffers | Publish | Wait | Close | Ready | Refused | Log | Released | Done | Failed | Waited
# By kind, from the one list above (a message added there is decodable at once).
MESSAGES: dict[str, type] = {cls.__name__: cls for cls in get_args(Message)}


def encode(message: Message) -> dict[str, Any]:
    return {"kind": type(message).__name__, **to_plain(message)}


def decode(data: dict[str, Any]) -> Message:
    """The message `encode` wrote; `PublishError` for one this version does not know."""
    fields = dict(data)
    kind = fields.pop("kind", None)
    cls = MESSAGES.get(kind) if isinstance(kind, str) else None
    if cls is None:
        raise PublishError(f"unknown message from the other process: {kind!r} (protocol {PROTOCOL_VERSION})")
    try:
        return from_plain(cls, fields)
    except (TypeError, ValueError) as e:
        raise PublishError(f"unreadable {kind} message from the other process: {e}") from e


def send(channel: Channel, message: Message, fds: Sequence[int] = ()) -> None:
    channel.send(encode(message), list(fds))


def receive(channel: Channel) -> tuple[Message, list[int]]:
    """The next message and the descriptors that came with it (`ChannelClosed` at end of stream)."""
    data, fds = channel.receive()
    return decode(data), fds


def check_version(theirs: int, side: str) -> None:
    if theirs != PROTOCOL_VERSION:
        raise PublishError(
            f"The {side} speaks publishing protocol {theirs}, this one {PROTOCOL_VERSION}: they come from "
            "different hubckpt versions. Let the earlier run's publishing process finish (or stop it), "
            "then start again with one version."
        )


__all__ = [
    "PROTOCOL_VERSION",
    "ErrorInfo",
    "InlineTensor",
    "Arena",
    "Buffer",
    "Start",
    "Buffers",
    "Publish",
    "Wait",
    "Close",
    "Ready",
    "Refused",
    "Log",
    "Released",
    "Done",
    "Failed",
    "Waited",
    "Message",
    "encode",
    "decode",
    "send",
    "receive",
    "check_version",
    "dtype_name",
]
