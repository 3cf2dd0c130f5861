"""Staging buffers in anonymous shared memory, and the channel that hands them to the publishing process.

Buffers live in `memfd`s (anonymous, in the kernel's shared-memory pool: no name in /dev/shm to leak,
and not bounded by the size of /dev/shm, which containers often keep at 64 MiB), one per batch of
buffers, mapped into this process; each one's file descriptor is passed to the publishing process once
over a Unix socket (`SCM_RIGHTS`), which maps the same pages. After that a capture copies into the buffer and only a
small JSON message crosses: the publishing process reads the very memory the training loop wrote.
The memory is freed when both processes have unmapped it, whichever ends first.

`Channel` carries JSON messages (chunked: a `SOCK_SEQPACKET` message is bounded by the socket
buffer) with file descriptors attached to the last chunk. No pickle crosses it.
"""

from __future__ import annotations

import json
import mmap
import os
import socket
import threading
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch

_CHUNK = 48 * 1024  # well under the default SOCK_SEQPACKET send buffer (~208 KiB)
_MAX_FDS = 200  # per message; the kernel's SCM_MAX_FD is 253


def shared_memory_supported() -> bool:
    """Whether this platform has what the publishing process needs (Linux: memfd + fd passing)."""
    return hasattr(os, "memfd_create") and hasattr(socket, "send_fds") and hasattr(socket, "AF_UNIX")


_ALIGN = 64  # bytes between buffers of one arena: what CPU kernels like, and every dtype's alignment


class SharedAllocator:
    """Allocates CPU tensors in memfd-backed shared memory, one memfd ("arena") per batch of buffers.

    Each call puts a whole batch (e.g. every tensor of the optimizer state) in one arena, so a model with
    thousands of tensors costs a handful of descriptors, not thousands (the open-file limit is often
    1024). An arena's descriptor stays open until it has been sent to the publishing process once.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._arenas: dict[int, tuple[int, int]] = {}  # arena id → (fd, size), while not sent
        self._where: dict[int, tuple[int, int]] = {}  # buffer address → (arena id, offset)
        self._next = 0

    def __call__(self, entries: list[tuple[tuple[int, ...], torch.dtype, bool]]) -> list[torch.Tensor]:
        """One buffer per (shape, dtype, pinned), all in one new arena (zero-size ones outside it: sent by
        value). `pinned` is not honoured: a CUDA capture into this pageable memory is a synchronous copy."""
        import torch

        layouts = [(shape, dtype) for shape, dtype, _pinned in entries]
        sizes = [
            int(torch.Size(shape).numel()) * torch.empty((), dtype=dtype).element_size() for shape, dtype in layouts
        ]
        offsets, total = [], 0
        for n in sizes:
            offsets.append(total)
            total += -(-n // _ALIGN) * _ALIGN
        if total == 0:
            return [torch.empty(shape, dtype=dtype) for shape, dtype in layouts]
        fd = os.memfd_create("hubckpt-staging", os.MFD_CLOEXEC)
        try:
            os.ftruncate(fd, total)
            mapped = mmap.mmap(fd, total)
        except BaseException:
            os.close(fd)
            raise
        out = []
        with self._lock:
            arena = self._next
            self._next += 1
            self._arenas[arena] = (fd, total)
            for (shape, dtype), offset, n in zip(layouts, offsets, sizes):
                if n == 0:
                    out.append(torch.empty(shape, dtype=dtype))
                    continue
                tensor = arena_tensor(mapped, offset, n, dtype, shape)
                self._where[tensor.data_ptr()] = (arena, offset)
                out.append(tensor)
        return out

    def locate(self, tensor: torch.Tensor) -> tuple[int, int] | None:
        """(arena id, offset) of one of our buffers, else None."""
        with self._lock:
            return self._where.get(tensor.data_ptr())

    def take_arena(self, arena: int) -> tuple[int, int] | None:
        """(fd, size) of an arena not sent yet (the caller closes the fd once sent); None once taken."""
        with self._lock:
            return self._arenas.pop(arena, None)

    def close(self) -> None:
        with self._lock:
            arenas, self._arenas = list(self._arenas.values()), {}
        for fd, _ in arenas:
            os.close(fd)


def map_arena(fd: int, size: int) -> mmap.mmap:
    """The publishing process's map of an arena whose descriptor it received (the fd is closed here)."""
    try:
        return mmap.mmap(fd, size)
    finally:
        os.close(fd)


def arena_tensor(mapped: mmap.mmap, offset: int, nbytes: int, dtype: torch.dtype, shape) -> torch.Tensor:
    """The buffer at `offset` of an arena, as a tensor with a storage of its own.

    Its own storage, not a view of one arena-wide storage: code that groups tensors by storage (the
    shard planner, safetensors' shared-memory check) must see separate buffers, or it sizes every one
    as the whole arena and copies them apart.
    """
    import torch

    return torch.frombuffer(mapped, dtype=torch.uint8, count=nbytes, offset=offset).view(dtype).view(shape)


class ChannelClosed(ConnectionError):
    """The process at the other end has gone."""


class Channel:
    """JSON messages with optional file descriptors over a connected `SOCK_SEQPACKET` Unix socket."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self._send_lock = threading.Lock()

    def send(self, message: dict[str, Any], fds: Sequence[int] = ()) -> None:
        data = json.dumps(message, separators=(",", ":")).encode()
        fds = list(fds)
        with self._send_lock:
            try:
                while True:
                    chunk, data = data[:_CHUNK], data[_CHUNK:]
                    if data:
                        self.sock.sendall(b"M" + chunk)
                        continue
                    # The descriptors go with the last chunk; more than _MAX_FDS go in empty trailing chunks.
                    while len(fds) > _MAX_FDS:
                        socket.send_fds(self.sock, [b"F"], fds[:_MAX_FDS])
                        fds = fds[_MAX_FDS:]
                    if fds:
                        socket.send_fds(self.sock, [b"E" + chunk], fds)
                    else:
                        self.sock.sendall(b"E" + chunk)
                    return
            except OSError as e:
                raise ChannelClosed(f"the other process has gone ({e})") from e

    def receive(self) -> tuple[dict[str, Any], list[int]]:
        """The next message and the descriptors that came with it; `ChannelClosed` at end of stream."""
        parts: list[bytes] = []
        fds: list[int] = []
        while True:
            try:
                data, received, _flags, _addr = socket.recv_fds(self.sock, _CHUNK + 1, _MAX_FDS)
            except OSError as e:
                raise ChannelClosed(f"the other process has gone ({e})") from e
            if not data:
                for fd in fds + list(received):
                    os.close(fd)
                raise ChannelClosed("the other process has gone")
            fds += received
            kind, body = data[:1], data[1:]
            if kind == b"F":
                continue
            parts.append(body)
            if kind == b"E":
                return json.loads(b"".join(parts)), fds

    def close(self) -> None:
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.sock.close()
