"""The `Checkpointer`'s publisher in a process of its own, reading the staging buffers in shared memory.

Why a process: the publisher's work (writing the spool and hashing it, verifying, uploading, the
Python-level loops of the HTTP client) is CPU work on the training machine. On a thread it competes
for the GIL with the training loop's Python thread, and lowering its priority makes that worse (a
low-priority thread holding the GIL makes the training thread wait for it). In its own process at a
lower priority (`nice`) it shares no lock with training, and the OS gives it the CPU that training
leaves, which on a GPU machine is most of it.

    parent (training: this module)              child (`python -m hubckpt.publishing.process.child`)
    Checkpointer.save → copy into staging       maps each buffer once (memfd, see shared_memory.py)
      buffers (memfd-backed)  ── Publish ──▶    Publisher.publish_captured(<views of the buffers>, ...)
    Captured.release           ◀── Released     ... once written to the spool
    Future resolved            ◀── Done/Failed

The messages, their codec and the protocol version are in `protocol.py`; the I/O cap in `pacing.py`.

The child owns the spool (its lock, its journal) exactly as an in-process `Publisher` would, so a
crash of either side loses nothing that was captured: if the training process dies, the child
still publishes what it had been handed (its mapping keeps the memory) and then exits; if the child
dies, its journal resumes at the next start and the parent's Futures fail with `PublishError`.
"""

from __future__ import annotations

import logging
import os
import socket
import subprocess
import sys
import threading
from collections.abc import Callable, Iterable
from concurrent.futures import Future
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ... import environment
from ...errors import HubConfigError, PublishError
from ..shared_memory import Channel, ChannelClosed, SharedAllocator
from . import protocol as p
from .child import MODULE

if TYPE_CHECKING:
    import torch

    from ..options import PublishOptions
    from ..pipeline import PublishedRevision
    from ..staging import Captured, StagingSet

logger = logging.getLogger(__name__)

# Importing torch on a busy machine can take a while, and a new run may wait for an earlier run's
# publishing process to give the spool up (child.ORPHAN_WAIT_S).
STARTUP_TIMEOUT_S = 1200.0


class PublisherProcess:
    """A `Publisher` in a child process of its own, behind the interface the `Checkpointer` sees
    (`checkpointer.CapturePublisher`): captures in shared staging buffers go over by name."""

    def __init__(
        self,
        repo_id: str,
        options: PublishOptions,
        *,
        nice: int | str = 0,
        mb_per_s: float | None = None,
        allocator: SharedAllocator | None = None,
    ) -> None:
        """`allocator`: the shared memory the staging buffers come from, if the caller made it already (to
        allocate and touch them while this process starts); closed with this publisher."""
        from ..publisher import hub_targets

        start = p.Start(
            p.PROTOCOL_VERSION,
            repo_id,
            options,
            nice,
            mb_per_s,
            logging.getLogger("hubckpt").getEffectiveLevel(),
        )
        try:  # before any process starts
            encoded = p.encode(start)
        except ValueError as e:
            raise HubConfigError(
                f"With background='process' the publish options must be plain values ({e}); or use background='thread'."
            ) from e
        # Resolved here too (this starts the local hub if needed, before the child looks for it): reads
        # (restore, what is published) go from this process to the first hub.
        self.targets = hub_targets(repo_id, options.hubs[:1], token=options.token, root=options.root)
        self.repo_id = repo_id
        self.allocator = allocator or SharedAllocator()
        parent_sock, child_sock = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        self._channel = Channel(parent_sock)
        env = {**os.environ, environment.PUBLISHER_FD.name: str(child_sock.fileno())}
        package_root = Path(__file__).resolve().parents[3]
        if package_root.name not in ("site-packages", "dist-packages"):
            # A checkout found through sys.path: the child must import this very hubckpt. (An installed one
            # is found anyway; putting site-packages on PYTHONPATH would shadow the standard library.)
            env["PYTHONPATH"] = os.pathsep.join(x for x in (os.environ.get("PYTHONPATH"), str(package_root)) if x)
        try:
            self._process = subprocess.Popen(  # -P: a module in the working directory cannot shadow a stdlib one
                [sys.executable, "-P", "-m", MODULE],
                pass_fds=(child_sock.fileno(),),
                env=env,
                stdin=subprocess.DEVNULL,
                close_fds=True,
            )
        finally:
            child_sock.close()
        self._lock = threading.Lock()
        self._futures: dict[int, Future[PublishedRevision]] = {}
        self._releases: dict[int, Callable[[], None]] = {}
        self._waits: dict[int, Future[None]] = {}
        self._next_id = 0
        self._known: dict[int, dict[str, Any]] = {}  # staging set → path → the buffer the child has mapped
        self._dead: BaseException | None = None
        self._closed = False
        try:
            self._channel.send(encoded)
            ready = self._receive_ready()
        except BaseException:
            self._stop_process()
            raise
        self.spool = Path(ready.spool)
        logger.info("publishing %s from process %d (priority %s)", repo_id, self._process.pid, nice)
        self._reader = threading.Thread(target=self._read, name="hubckpt-publisher-process", daemon=True)
        self._reader.start()

    def _receive_ready(self) -> p.Ready:
        self._channel.sock.settimeout(STARTUP_TIMEOUT_S)
        try:
            while True:
                message, _ = p.receive(self._channel)
                if isinstance(message, p.Log):
                    self._log(message)
                elif isinstance(message, p.Refused):
                    raise message.error.rebuild()
                elif isinstance(message, p.Ready):
                    p.check_version(message.protocol, "publishing process")
                    self._channel.sock.settimeout(None)
                    return message
                else:
                    raise PublishError(f"the publishing process answered {type(message).__name__} to Start")
        except (ChannelClosed, TimeoutError) as e:
            raise PublishError(
                f"The publishing process did not start ({e}); run with background='thread' or see its messages above."
            ) from e

    # -- publishing -------------------------------------------------------------------------------------

    def allocate(self, entries: list[tuple[tuple[int, ...], torch.dtype, bool]]) -> list[torch.Tensor]:
        """Staging buffers in shared memory, which the publishing process maps."""
        return self.allocator(entries)

    def publish_captured(
        self,
        captured: Captured,
        *,
        step: int,
        metrics: dict[str, float] | None = None,
        tokens: int | None = None,
        epoch: float | None = None,
        final: bool = False,
        companions: Iterable[str | Path] = (),
    ) -> Future[PublishedRevision]:
        """Hand one capture (tensors in its staging set's shared buffers) to the child; a Future of it.

        `captured.release()` runs when the child says its buffers are written to the spool (or the job
        ended, or could not be handed over)."""
        try:
            if self._dead is not None:
                raise PublishError(
                    f"The publishing process has stopped ({self._dead}); unfinished jobs resume "
                    f"at the next start (`hubckpt resume --repo {self.repo_id}`)."
                )
            staging_set = captured.staging_set
            structure, staged, inline, nbytes = self._share(captured)
            future: Future[PublishedRevision] = Future()
            with self._lock:
                job = self._next_id
                self._next_id += 1
                self._futures[job] = future
                self._releases[job] = captured.release
            message = p.Publish(
                id=job,
                staging_set=staging_set.index if staging_set is not None else None,
                tree=structure,
                staged=staged,
                inline=inline,
                nbytes=nbytes,
                step=step,
                metrics=dict(metrics or {}),
                tokens=tokens,
                epoch=epoch,
                final=final,
                companions=[str(c) for c in companions],
            )
            try:
                p.send(self._channel, message)
            except BaseException as e:
                with self._lock:
                    self._futures.pop(job, None)
                    self._releases.pop(job, None)
                if isinstance(e, ChannelClosed):
                    raise PublishError(f"The publishing process has stopped: {e}") from e
                raise
            return future
        except BaseException:
            captured.release()
            raise

    def _share(self, captured: Captured) -> tuple[Any, dict[str, str], dict[str, p.InlineTensor], int]:
        """The capture as a `Publish` message carries it: its tree's structure, the tensors lying in its staging
        set's buffers (by buffer path; buffers the child has not mapped yet are sent first), the others by value,
        and the bytes of all."""
        from ...conversion.training_state import encode_tree

        staging_set = captured.staging_set
        buffers = staging_set.buffers if staging_set is not None else {}
        by_pointer = {b.data_ptr(): path for path, b in buffers.items() if b.numel()}
        structure, tensors = encode_tree({"weights": captured.weights, "training_state": captured.training_state})
        staged, inline = {}, {}
        for key, t in tensors.items():
            path = by_pointer.get(t.data_ptr()) if t.numel() else None
            if path is not None and tuple(t.shape) == tuple(buffers[path].shape) and t.dtype == buffers[path].dtype:
                staged[key] = path
            else:
                inline[key] = p.InlineTensor.of(t)
        if staging_set is not None:
            self._send_new_buffers(staging_set, set(staged.values()))
        return structure, staged, inline, sum(t.numel() * t.element_size() for t in tensors.values())

    def _send_new_buffers(self, staging_set: StagingSet, paths: set[str]) -> None:
        known = self._known.setdefault(staging_set.index, {})
        entries: list[p.Buffer] = []
        arenas: list[p.Arena] = []
        fds: list[int] = []
        try:
            for path in sorted(paths):
                buffer = staging_set.buffers[path]
                if known.get(path) is buffer:  # identity, not address: a freed buffer's address can come back
                    continue
                where = self.allocator.locate(buffer)
                if where is None:
                    raise PublishError(f"staging buffer {path} is not in shared memory")  # a bug, not a user error
                arena, offset = where
                taken = self.allocator.take_arena(arena)
                if taken is not None:
                    arenas.append(p.Arena(arena, taken[1]))
                    fds.append(taken[0])
                entries.append(p.Buffer(path, p.dtype_name(buffer.dtype), list(buffer.shape), arena, offset))
            if entries:
                p.send(self._channel, p.Buffers(staging_set.index, arenas, entries), fds)
                for entry in entries:
                    known[entry.path] = staging_set.buffers[entry.path]
        finally:
            for fd in fds:
                os.close(fd)

    # -- from the child ---------------------------------------------------------------------------------

    def _read(self) -> None:
        try:
            while True:
                data, fds = self._channel.receive()
                for fd in fds:
                    os.close(fd)
                try:
                    self._handle(p.decode(data))
                except Exception as e:  # noqa: BLE001 - one bad message must not stop the others
                    logger.error("publishing process: could not handle a message (%s)", e)
        except ChannelClosed:
            pass
        except Exception as e:  # noqa: BLE001 - an unreadable stream: stop the child rather than hang on it
            logger.error("publishing process: unreadable message (%s); stopping it", e)
            self._process.kill()
        code = self._process.wait()
        self._dead = PublishError(f"the publishing process exited with code {code}")
        with self._lock:
            futures, self._futures = self._futures, {}
            releases, self._releases = self._releases, {}
            waits, self._waits = self._waits, {}
        for release in releases.values():
            release()
        if not self._closed:
            logger.error(
                "the publishing process of %s exited (code %s); what it had not finished stays in its "
                "journal and resumes at the next start",
                self.repo_id,
                code,
            )
        pending: list[Future[Any]] = [*futures.values(), *waits.values()]
        for future in pending:
            if not future.done():
                future.set_exception(
                    PublishError(
                        f"The publishing process exited (code {code}) before this finished; unfinished jobs resume "
                        f"at the next start (`hubckpt resume --repo {self.repo_id}`)."
                    )
                )

    def _handle(self, message: p.Message) -> None:
        if isinstance(message, p.Log):
            self._log(message)
        elif isinstance(message, p.Released):
            with self._lock:
                release = self._releases.pop(message.id, None)
            if release is not None:
                release()
        elif isinstance(message, (p.Done, p.Failed)):
            with self._lock:
                future = self._futures.pop(message.id, None)
                release = self._releases.pop(message.id, None)
            if release is not None:  # the buffers were not released before the job ended (it failed early)
                release()
            if future is None:
                return
            if isinstance(message, p.Done):
                future.set_result(message.revision)
            else:
                future.set_exception(message.error.rebuild())
        elif isinstance(message, p.Waited):
            with self._lock:
                waiting = self._waits.pop(message.id, None)
            if waiting is not None:
                if message.error is not None:
                    waiting.set_exception(message.error.rebuild())
                else:
                    waiting.set_result(None)
        else:
            logger.error("publishing process: unexpected %s message; ignored", type(message).__name__)

    @staticmethod
    def _log(record: p.Log) -> None:
        logging.getLogger(record.name).log(record.level, "%s", record.msg)

    # -- lifecycle --------------------------------------------------------------------------------------

    def _request(self, close: bool, timeout: float | None) -> None:
        if self._dead is not None:
            raise self._dead
        future: Future[None] = Future()
        with self._lock:
            request = self._next_id
            self._next_id += 1
            self._waits[request] = future
        p.send(self._channel, p.Close(request, timeout) if close else p.Wait(request, timeout))
        try:
            future.result(None if timeout is None else timeout + 30)
        except TimeoutError:
            raise PublishError(f"the publishing process did not answer within {timeout}s") from None

    def wait(self, timeout: float | None = None) -> None:
        """Block until every job handed over is published; re-raise a failure not reported yet."""
        self._request(False, timeout)

    def close(self, timeout: float | None = None) -> None:
        """Finish (or, after `timeout`, leave in the journal) every job, then stop the child."""
        if self._closed:
            return
        self._closed = True
        try:
            if self._dead is None:
                self._request(True, timeout)
        finally:
            self._stop_process()

    def abort(self) -> None:
        """The training loop failed: the child finishes what it was handed (its journal has it) and exits."""
        self._closed = True
        self._stop_process(wait=False)

    def _stop_process(self, wait: bool = True) -> None:
        self._channel.close()  # end of stream: the child finishes its jobs and exits
        self.allocator.close()
        if wait:
            try:
                self._process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                logger.warning("the publishing process of %s did not exit; stopping it", self.repo_id)
                self._process.kill()


__all__ = ["PublisherProcess", "STARTUP_TIMEOUT_S"]
