"""Capture of live tensors into reused staging buffers, so the training loop resumes at copy speed.

Copying into preallocated buffers runs at memory bandwidth; allocating fresh tensors for every
checkpoint costs page faults and is 7–10× slower (see the performance floors). A pool holds
`size` buffer sets; `acquire` blocks while all are in use, which is the publisher's backpressure.
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch


class StagingPool:
    def __init__(self, size: int) -> None:
        self._free: list[dict[str, torch.Tensor]] = [{} for _ in range(size)]
        self._owner: dict[int, dict[str, torch.Tensor]] = {}  # id(capture) → the buffer set it uses
        self._cond = threading.Condition()

    def capture(self, state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Copy `state_dict` into a free buffer set (reusing its tensors when shapes match) and return it.

        Tensors sharing memory in the input (tied weights) share it in the copy too.
        """
        import torch

        with self._cond:
            while not self._free:
                self._cond.wait()
            buffers = self._free.pop()
        out: dict[str, torch.Tensor] = {}
        seen: dict[tuple, str] = {}
        for name, tensor in state_dict.items():
            tensor = tensor.detach()
            key = (
                (
                    tensor.untyped_storage().data_ptr(),
                    tensor.storage_offset(),
                    tuple(tensor.shape),
                    tuple(tensor.stride()),
                    tensor.dtype,
                )
                if tensor.numel()
                else None
            )
            if key is not None and key in seen:
                out[name] = out[seen[key]]
                continue
            buf = buffers.get(name)
            if buf is None or buf.shape != tensor.shape or buf.dtype != tensor.dtype:
                buf = torch.empty(tensor.shape, dtype=tensor.dtype, device="cpu")
                buffers[name] = buf
            buf.copy_(tensor)
            out[name] = buf
            if key is not None:
                seen[key] = name
        with self._cond:
            self._owner[id(out)] = buffers
        return out

    def release(self, captured: dict[str, torch.Tensor]) -> None:
        """Give the buffers of a capture back once it is written to the spool."""
        with self._cond:
            buffers = self._owner.pop(id(captured), None)
            if buffers is not None:
                self._free.append(buffers)
                self._cond.notify()
