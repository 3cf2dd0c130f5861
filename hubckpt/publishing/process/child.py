"""The publishing process (`python -m hubckpt.publishing.process.child`): a `Publisher` fed by the training
process over a socket, reading the captured tensors from the shared staging buffers (see `parent`).

It owns the spool (its lock, its journal) exactly as an in-process `Publisher` would. When the training
process closes the channel, or dies, it finishes what it was handed and exits.
"""

from __future__ import annotations

import logging
import mmap
import os
import queue
import socket
import sys
import threading
import time
from concurrent.futures import Future
from pathlib import Path
from typing import TYPE_CHECKING

from ... import environment
from ...errors import PublishError, SpoolBusyError
from ...hub.patches import read_uploads_in_large_pieces
from ...priority import lower_process_priority
from ..shared_memory import Channel, ChannelClosed, arena_tensor, map_arena
from ..staging import Captured
from . import protocol as p
from .pacing import Pacing

if TYPE_CHECKING:
    import torch

    from ..options import PublishOptions
    from ..pipeline import PublishedRevision
    from ..publisher import Publisher

logger = logging.getLogger(__name__)

MODULE = "hubckpt.publishing.process.child"  # what the parent runs with `python -m`
# The name earlier versions ran their publishing process under: an orphan of one may still hold a spool.
EARLIER_MODULES = ("hubckpt.integrations.publisher_process",)
ORPHAN_WAIT_S = 900.0  # how long a new run waits for an earlier run's publishing process to finish


def is_orphaned_publisher(pid: int) -> bool:
    """Whether `pid` is a hubckpt publishing process whose training process has gone (Linux /proc)."""
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        parent = int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
    except (OSError, ValueError, IndexError):
        return False
    if not any(name.encode() in cmdline for name in (MODULE, *EARLIER_MODULES)):
        return False
    try:
        parent_cmdline = Path(f"/proc/{parent}/cmdline").read_bytes()
    except OSError:
        return True
    # Re-parented to init or a subreaper: its own training process is not its parent any more.
    return parent == 1 or not parent_cmdline or b"python" not in parent_cmdline.split(b"\0")[0]


class _ForwardLogs(logging.Handler):
    def __init__(self, channel: Channel) -> None:
        super().__init__()
        self.channel = channel
        self.orphaned = False

    def emit(self, record: logging.LogRecord) -> None:
        message = record.getMessage()
        if record.exc_info:
            message += "\n" + logging.Formatter().formatException(record.exc_info)
        if not self.orphaned:
            try:
                p.send(self.channel, p.Log(record.name, record.levelno, message))
                return
            except Exception:  # noqa: BLE001 - the training process has gone: say it on stderr from now on
                self.orphaned = True
        if record.levelno >= logging.WARNING:
            sys.stderr.write(f"hubckpt publishing process {os.getpid()}: {message}\n")


class Child:
    """The publishing process's side of the channel."""

    def __init__(self, channel: Channel) -> None:
        self.channel = channel
        self.arenas: dict[int, mmap.mmap] = {}  # arena id → its shared memory
        self.sets: dict[int, dict[str, torch.Tensor]] = {}
        self.publisher: Publisher | None = None
        # publish() blocks while max_pending jobs wait: off the receive loop, which must keep reading.
        self.jobs: queue.Queue[p.Publish | p.Wait | p.Close | None] = queue.Queue()
        self.publishing = threading.Thread(target=self._publish_loop, name="hubckpt-publish", daemon=True)
        self.pacing = Pacing()

    def _send(self, message: p.Message) -> None:
        try:
            p.send(self.channel, message)
        except ChannelClosed:  # the training process has gone: publishing goes on
            pass

    def start(self, message: p.Start) -> None:
        try:
            p.check_version(message.protocol, "training process")
            if message.nice:
                lower_process_priority(message.nice)
            self.pacing.start(message.mb_per_s)
            self.publisher = self._open_publisher(message.repo_id, message.options)
        except Exception as e:  # noqa: BLE001 - reported to the parent, which raises it
            self._send(p.Refused(p.ErrorInfo.of(e)))
            raise SystemExit(1) from e
        p.send(self.channel, p.Ready(p.PROTOCOL_VERSION, str(self.publisher.spool)))

    @staticmethod
    def _open_publisher(repo_id: str, options: PublishOptions) -> Publisher:
        """A Publisher on the spool; if the spool's owner is the publishing process of a training run that
        has died (restarted at once after a crash), wait for it: it exits once it has published its steps."""
        from ..publisher import Publisher

        told = False
        deadline = time.monotonic() + ORPHAN_WAIT_S
        while True:
            try:
                return Publisher(repo_id, options=options)
            except SpoolBusyError as e:
                if not (e.pid and is_orphaned_publisher(e.pid)) or time.monotonic() > deadline:
                    raise
                if not told:
                    logger.warning(
                        "the spool of %s is still held by pid %s, the publishing process of an earlier run that "
                        "stopped; waiting for it to finish publishing what it was handed",
                        repo_id,
                        e.pid,
                    )
                    told = True
                time.sleep(0.5)

    def buffers(self, message: p.Buffers, fds: list[int]) -> None:
        import torch

        for arena, fd in zip(message.arenas, fds):
            self.arenas[arena.id] = map_arena(fd, arena.size)
        staged = self.sets.setdefault(message.staging_set, {})
        for entry in message.buffers:
            dtype = getattr(torch, entry.dtype)
            n = int(torch.Size(entry.shape).numel()) * torch.empty((), dtype=dtype).element_size()
            staged[entry.path] = arena_tensor(self.arenas[entry.arena], entry.offset, n, dtype, entry.shape)

    def publish(self, message: p.Publish) -> None:
        from ...conversion.training_state import decode_tree

        job = message.id
        assert self.publisher is not None  # started before anything is received
        try:
            staged = self.sets.get(message.staging_set, {}) if message.staging_set is not None else {}
            tensors = {key: staged[path] for key, path in message.staged.items()}
            tensors.update({key: entry.tensor() for key, entry in message.inline.items()})
            tree = decode_tree(message.tree, tensors)
            handing_over = True  # a release during publish_captured itself: nothing of this job was converted yet

            def released() -> None:
                if not handing_over:
                    self.pacing.released(job)
                self._send(p.Released(job))

            inner = self.publisher.publish_captured(
                Captured(tree["weights"], tree["training_state"] or {}, on_release=released),
                step=message.step,
                metrics=message.metrics,
                tokens=message.tokens,
                epoch=message.epoch,
                final=message.final,
                companions=message.companions,
            )
            handing_over = False
        except Exception as e:  # noqa: BLE001 - this job fails; the others go on
            self.pacing.settled(job)
            self._send(p.Failed(job, p.ErrorInfo.of(e)))
            return

        def settled(f: Future[PublishedRevision]) -> None:
            self.pacing.settled(job)
            if f.cancelled():
                cancelled = PublishError(
                    "the job was not started before the publisher stopped; it stays in the journal"
                )
                self._send(p.Failed(job, p.ErrorInfo.of(cancelled)))
            elif (error := f.exception()) is not None:
                self._send(p.Failed(job, p.ErrorInfo.of(error)))
            else:
                self._send(p.Done(job, f.result()))

        inner.add_done_callback(settled)

    def wait(self, message: p.Wait | p.Close) -> None:
        close = isinstance(message, p.Close)

        def run() -> None:
            assert self.publisher is not None
            error = None
            try:
                (self.publisher.close if close else self.publisher.wait)(message.timeout)
            except Exception as e:  # noqa: BLE001 - handed to the parent
                error = p.ErrorInfo.of(e)
            finally:
                self.pacing.waiting(-1)
            self._send(p.Waited(message.id, error))

        threading.Thread(target=run, name="hubckpt-wait", daemon=not close).start()

    def _publish_loop(self) -> None:
        # In order: a Wait or Close must see every Publish handed over before it.
        while (message := self.jobs.get()) is not None:
            if isinstance(message, p.Publish):
                self.publish(message)
            else:
                self.wait(message)

    def run(self) -> None:
        self.publishing.start()
        while True:
            try:
                message, fds = p.receive(self.channel)
            except ChannelClosed:
                break
            if isinstance(message, p.Buffers):
                self.buffers(message, fds)
            elif isinstance(message, p.Publish):
                self.pacing.queued(message.id, message.nbytes)
                self.jobs.put(message)
            elif isinstance(message, (p.Wait, p.Close)):
                self.pacing.waiting(+1)
                self.jobs.put(message)
            else:
                logger.error("publishing process: unexpected %s message; ignored", type(message).__name__)
        # The training process closed the channel (or died): finish what was handed over, then exit.
        self.pacing.waiting(+1)
        self.jobs.put(None)
        self.publishing.join()
        if self.publisher is not None:
            try:
                self.publisher.close()
            except Exception as e:  # noqa: BLE001 - it stays in the journal, listed by `hubckpt jobs`
                logger.error("publishing stopped with an unfinished job: %s", e)


def main() -> None:
    import signal

    # Ctrl-C in the terminal reaches the whole process group: the training process stops, and this one
    # finishes publishing what it was handed (SIGTERM still stops it; the journal keeps the rest).
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if environment.progress_bars() is not True:  # HUBCKPT_DISABLE_PROGRESS_BARS=0 shows them, as in thread mode
        os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    read_uploads_in_large_pieces()
    sock = socket.socket(fileno=environment.publisher_fd())
    channel = Channel(sock)
    root = logging.getLogger("hubckpt")
    root.addHandler(_ForwardLogs(channel))
    root.propagate = False
    child = Child(channel)
    try:
        first, _ = p.receive(channel)
        if not isinstance(first, p.Start):
            raise PublishError(f"the first message must be Start, not {type(first).__name__}")
    except ChannelClosed:
        raise SystemExit(1) from None
    except Exception as e:  # noqa: BLE001 - another version's Start, say: reported to the parent, which raises it
        child._send(p.Refused(p.ErrorInfo.of(e)))
        raise SystemExit(1) from e
    root.setLevel(first.log_level)
    child.start(first)
    child.run()


if __name__ == "__main__":
    main()
