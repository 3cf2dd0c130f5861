"""Staging buffers in anonymous shared memory, and the channel that hands them to the publishing process.

A buffer is a `memfd` (anonymous, in the kernel's shared-memory pool: no name in /dev/shm to leak,
and not bounded by the size of /dev/shm, which containers often keep at 64 MiB) mapped into this
process; its file descriptor is passed to the publishing process once over a Unix socket
(`SCM_RIGHTS`), which maps the same pages. After that a capture copies into the buffer and only a
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
import weakref
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch

_CHUNK = 48 * 1024  # well under the default SOCK_SEQPACKET send buffer (~208 KiB)
_MAX_FDS = 200  # per message; the kernel's SCM_MAX_FD is 253


def shared_memory_supported() -> bool:
    """Whether this platform has what the publishing process needs (Linux: memfd + fd passing)."""
    return hasattr(os, "memfd_create") and hasattr(socket, "send_fds") and hasattr(socket, "AF_UNIX")


class SharedAllocator:
    """Allocates CPU tensors in memfd-backed shared memory, keeping each one's descriptor until it is sent.

    A descriptor not sent yet is closed when its tensor is freed (a buffer replaced before any capture
    used it), so unsent memory does not outlive its tensor.
    """

    def __init__(self) -> None:
        self._fds: dict[int, tuple[int, weakref.finalize]] = {}  # buffer address → (fd, closer): not sent yet
        self._lock = threading.Lock()

    def __call__(self, shape: tuple[int, ...], dtype: "torch.dtype", pinned: bool = False) -> "torch.Tensor":
        import torch

        nbytes = int(torch.Size(shape).numel()) * torch.empty((), dtype=dtype).element_size()
        if nbytes == 0:
            return torch.empty(shape, dtype=dtype)  # nothing to share: sent by value
        fd = os.memfd_create("hubckpt-staging", os.MFD_CLOEXEC)
        try:
            os.ftruncate(fd, nbytes)
            mapped = mmap.mmap(fd, nbytes)
        except BaseException:
            os.close(fd)
            raise
        # (pinned is ignored: a copy from the GPU into pageable shared memory is synchronous, still one copy.)
        tensor = torch.frombuffer(mapped, dtype=torch.uint8, count=nbytes).view(dtype).view(shape)
        address = tensor.untyped_storage().data_ptr()
        with self._lock:
            self._fds[address] = (fd, weakref.finalize(tensor, self._drop, address))
        return tensor

    def _drop(self, address: int) -> None:
        with self._lock:
            entry = self._fds.pop(address, None)
        if entry is not None:
            os.close(entry[0])

    def take_fd(self, tensor: "torch.Tensor") -> int | None:
        """The descriptor of a buffer not sent yet (the caller closes it once sent); None if there is none."""
        with self._lock:
            entry = self._fds.pop(tensor.untyped_storage().data_ptr(), None)
        if entry is None:
            return None
        entry[1].detach()
        return entry[0]

    def close(self) -> None:
        with self._lock:
            entries, self._fds = list(self._fds.values()), {}
        for fd, closer in entries:
            closer.detach()
            os.close(fd)


def map_shared(fd: int, shape: list[int], dtype: "torch.dtype") -> "torch.Tensor":
    """The publishing process's view of a buffer whose descriptor it received (the fd is closed here)."""
    import torch

    try:
        nbytes = os.fstat(fd).st_size
        mapped = mmap.mmap(fd, nbytes)
    finally:
        os.close(fd)
    return torch.frombuffer(mapped, dtype=torch.uint8, count=nbytes).view(dtype).view(shape)


class ChannelClosed(ConnectionError):
    """The process at the other end has gone."""


class Channel:
    """JSON messages with optional file descriptors over a connected `SOCK_SEQPACKET` Unix socket."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self._send_lock = threading.Lock()

    def send(self, message: dict[str, Any], fds: list[int] = ()) -> None:
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
