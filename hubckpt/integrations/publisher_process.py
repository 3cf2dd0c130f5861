"""The `Checkpointer`'s publisher in a process of its own, reading the staging buffers in shared memory.

Why a process: the publisher's work (writing the spool and hashing it, verifying, uploading, the
Python-level loops of the HTTP client) is CPU work on the training machine. On a thread it competes
for the GIL with the training loop's Python thread, and lowering its priority makes that worse (a
low-priority thread holding the GIL makes the training thread wait for it). In its own process at a
lower priority (`nice`) it shares no lock with training, and the OS gives it the CPU that training
leaves, which on a GPU machine is most of it.

    parent (training)                           child (`python -m hubckpt.integrations.publisher_process`)
    Checkpointer.save → copy into staging       maps each buffer once (memfd, see shared_memory.py)
      buffers (memfd-backed)  ── "publish" ──▶  Publisher.publish(state_dict=<views of the buffers>, ...)
    StagingPool.release        ◀── "released"   ... once written to the spool
    Future resolved            ◀── "done"/"failed"

The child owns the spool (its lock, its journal) exactly as an in-process `Publisher` would, so a
crash of either side loses nothing that was captured: if the training process dies, the child
still publishes what it had been handed (its mapping keeps the memory) and then exits; if the child
dies, its journal resumes at the next start and the parent's Futures fail with `PublishError`.
"""

from __future__ import annotations

import base64
import dataclasses
import json
import logging
import mmap
import os
import queue
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable
from concurrent.futures import Future
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .. import errors
from ..commits import read_uploads_in_large_pieces
from ..direct_io import limit_rate
from ..errors import HubConfigError, PublishError
from ..priority import lower_process_priority
from .shared_memory import Channel, ChannelClosed, SharedAllocator, arena_tensor, map_arena

if TYPE_CHECKING:
    import torch

    from .capture import StagingSet

logger = logging.getLogger(__name__)

# Importing torch on a busy machine can take a while, and a new run may wait for an earlier run's
# publishing process to give the spool up (ORPHAN_WAIT_S, below).
STARTUP_TIMEOUT_S = 1200.0


# -- values across the channel ------------------------------------------------------------------------


def _dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


def _inline(tensor: torch.Tensor) -> dict[str, Any]:
    """A small tensor that is not a staging buffer (an RNG state, a 0-dim one) by value, in the message."""
    import torch

    t = tensor.detach().cpu().contiguous()
    raw = t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b""
    return {"dtype": _dtype_name(t.dtype), "shape": list(t.shape), "data": base64.b64encode(raw).decode()}


def _from_inline(entry: dict[str, Any]) -> torch.Tensor:
    import torch

    dtype = getattr(torch, entry["dtype"])
    raw = base64.b64decode(entry["data"])
    if not raw:
        return torch.empty(entry["shape"], dtype=dtype)
    return torch.frombuffer(bytearray(raw), dtype=torch.uint8).view(dtype).reshape(entry["shape"])


def _error_message(error: BaseException) -> dict[str, str]:
    return {"type": type(error).__name__, "message": str(error)}


def _rebuild_error(entry: dict[str, str]) -> BaseException:
    cls = getattr(errors, entry.get("type", ""), None)
    if isinstance(cls, type) and issubclass(cls, errors.HubckptError):
        try:
            return cls(entry["message"])
        except TypeError:  # an error class with required extra arguments
            pass
    return PublishError(f"{entry.get('type', 'error')}: {entry.get('message', '')}")


def process_options(options: dict[str, Any]) -> dict[str, Any]:
    """The Publisher options as JSON for the child; `HubConfigError` for what cannot cross."""
    from ..cards import CardOptions

    out = dict(options)
    card = out.pop("card", None)
    if isinstance(card, CardOptions):
        out["card"] = {k: (str(v) if isinstance(v, Path) else v) for k, v in dataclasses.asdict(card).items()}
    elif card is not None:
        raise HubConfigError("card= must be a hubckpt.CardOptions")
    for key in ("root", "spool_dir"):
        if out.get(key) is not None:
            out[key] = str(Path(out[key]).resolve())
    if "allow_globals" in out:
        out["allow_globals"] = list(out["allow_globals"])
    hubs = out.get("hub") if isinstance(out.get("hub"), list) else [out.get("hub")]
    if any(h is not None and not isinstance(h, str) for h in hubs):
        raise HubConfigError(
            "With background='process' give hub= as names or URLs (strings), not Hub objects; "
            "or use background='thread'."
        )
    try:
        json.dumps(out)
    except (TypeError, ValueError) as e:
        raise HubConfigError(f"With background='process' the Publisher options must be plain values: {e}") from e
    return out


# -- the parent's side ----------------------------------------------------------------------------------


class PublisherProcess:
    """What the `Checkpointer` needs of a `Publisher` (publish, wait, close, spool, targets), run in a child."""

    def __init__(self, repo_id: str, *, nice: int | str = 0, mb_per_s: float | None = None, **options: Any) -> None:
        from ..publishing.publisher import hub_targets

        payload = process_options(options)
        hubs = options.get("hub") if isinstance(options.get("hub"), list) else [options.get("hub")]
        # Resolved here too (this starts the local hub if needed, before the child looks for it): reads
        # (restore, what is published) go from this process to the first hub.
        self.targets = hub_targets(repo_id, hubs[:1], token=options.get("token"), root=options.get("root"))
        self.repo_id = repo_id
        self.allocator = SharedAllocator()
        parent_sock, child_sock = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        self._channel = Channel(parent_sock)
        from hubckpt import environment

        env = {**os.environ, environment.PUBLISHER_FD.name: str(child_sock.fileno())}
        package_root = Path(__file__).resolve().parents[2]
        if package_root.name not in ("site-packages", "dist-packages"):
            # A checkout found through sys.path: the child must import this very hubckpt. (An installed one
            # is found anyway; putting site-packages on PYTHONPATH would shadow the standard library.)
            env["PYTHONPATH"] = os.pathsep.join(p for p in (os.environ.get("PYTHONPATH"), str(package_root)) if p)
        try:
            self._process = subprocess.Popen(  # -P: a module in the working directory cannot shadow a stdlib one
                [sys.executable, "-P", "-m", "hubckpt.integrations.publisher_process"],
                pass_fds=(child_sock.fileno(),),
                env=env,
                stdin=subprocess.DEVNULL,
                close_fds=True,
            )
        finally:
            child_sock.close()
        self._lock = threading.Lock()
        self._futures: dict[int, Future] = {}
        self._releases: dict[int, Callable[[], None]] = {}
        self._waits: dict[int, Future] = {}
        self._next_id = 0
        self._known: dict[int, dict[str, Any]] = {}  # staging set → path → the buffer the child has mapped
        self._dead: BaseException | None = None
        self._closed = False
        try:
            self._channel.send(
                {
                    "op": "start",
                    "repo_id": repo_id,
                    "options": payload,
                    "nice": nice,
                    "mb_per_s": mb_per_s,
                    "log_level": logging.getLogger("hubckpt").getEffectiveLevel(),
                }
            )
            ready = self._receive_ready()
        except BaseException:
            self._stop_process()
            raise
        self.spool = Path(ready["spool"])
        logger.info("publishing %s from process %d (priority %s)", repo_id, self._process.pid, nice)
        self._reader = threading.Thread(target=self._read, name="hubckpt-publisher-process", daemon=True)
        self._reader.start()

    def _receive_ready(self) -> dict[str, Any]:
        self._channel.sock.settimeout(STARTUP_TIMEOUT_S)
        try:
            while True:
                message, _ = self._channel.receive()
                if "log" in message:
                    self._log(message["log"])
                    continue
                if "error" in message:
                    raise _rebuild_error(message["error"])
                self._channel.sock.settimeout(None)
                return message
        except (ChannelClosed, TimeoutError) as e:
            raise PublishError(
                f"The publishing process did not start ({e}); run with background='thread' or see its messages above."
            ) from e

    # -- publishing -------------------------------------------------------------------------------------

    def publish(
        self,
        *,
        state_dict: dict,
        training_state: dict | None,
        companions: Iterable[Path] = (),
        release: Callable[[], None],
        staging_set: StagingSet,
        **options: Any,
    ) -> Future:
        """Hand one capture (tensors in `staging_set`'s shared buffers) to the child; a Future of it."""
        from ..conversion.training_state import encode_tree

        if self._dead is not None:
            raise PublishError(
                f"The publishing process has stopped ({self._dead}); unfinished jobs resume "
                f"at the next start (`hubckpt resume --repo {self.repo_id}`)."
            )
        by_pointer = {b.data_ptr(): path for path, b in staging_set.buffers.items() if b.numel()}
        structure, tensors = encode_tree({"weights": state_dict, "training_state": training_state or {}})
        staged, inline = {}, {}
        for key, t in tensors.items():
            path = by_pointer.get(t.data_ptr()) if t.numel() else None
            if (
                path is not None
                and tuple(t.shape) == tuple(staging_set.buffers[path].shape)
                and t.dtype == staging_set.buffers[path].dtype
            ):
                staged[key] = path
            else:
                inline[key] = _inline(t)
        self._send_new_buffers(staging_set, set(staged.values()))
        future: Future = Future()
        with self._lock:
            job = self._next_id
            self._next_id += 1
            self._futures[job] = future
            self._releases[job] = release
        try:
            nbytes = sum(t.numel() * t.element_size() for t in tensors.values())  # what the child paces by
            self._channel.send(
                {
                    "op": "publish",
                    "id": job,
                    "set": staging_set.index,
                    "tree": structure,
                    "staged": staged,
                    "inline": inline,
                    "options": options,
                    "nbytes": nbytes,
                    "companions": [str(c) for c in companions],
                }
            )
        except BaseException as e:
            with self._lock:
                self._futures.pop(job, None)
                self._releases.pop(job, None)
            if isinstance(e, ChannelClosed):
                raise PublishError(f"The publishing process has stopped: {e}") from e
            raise
        return future

    def _send_new_buffers(self, staging_set: StagingSet, paths: set[str]) -> None:
        known = self._known.setdefault(staging_set.index, {})
        entries, arenas, fds = [], [], []
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
                    arenas.append({"id": arena, "size": taken[1]})
                    fds.append(taken[0])
                entries.append(
                    {
                        "path": path,
                        "dtype": _dtype_name(buffer.dtype),
                        "shape": list(buffer.shape),
                        "arena": arena,
                        "offset": offset,
                    }
                )
            if entries:
                self._channel.send(
                    {"op": "buffers", "set": staging_set.index, "arenas": arenas, "buffers": entries}, fds
                )
                for entry in entries:
                    known[entry["path"]] = staging_set.buffers[entry["path"]]
        finally:
            for fd in fds:
                os.close(fd)

    # -- from the child ---------------------------------------------------------------------------------

    def _read(self) -> None:
        try:
            while True:
                message, fds = self._channel.receive()
                for fd in fds:
                    os.close(fd)
                try:
                    self._handle(message)
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
        for future in [*futures.values(), *waits.values()]:
            if not future.done():
                future.set_exception(
                    PublishError(
                        f"The publishing process exited (code {code}) before this finished; unfinished jobs resume "
                        f"at the next start (`hubckpt resume --repo {self.repo_id}`)."
                    )
                )

    def _handle(self, message: dict[str, Any]) -> None:
        from ..publishing import PublishedRevision

        if "log" in message:
            self._log(message["log"])
        elif "released" in message:
            with self._lock:
                release = self._releases.pop(message["released"], None)
            if release is not None:
                release()
        elif "done" in message or "failed" in message:
            job = message["done"] if "done" in message else message["failed"]
            with self._lock:
                future = self._futures.pop(job, None)
                release = self._releases.pop(job, None)
            if release is not None:  # the buffers were not released before the job ended (it failed early)
                release()
            if future is None:
                return
            if "done" in message:
                future.set_result(PublishedRevision(**message["revision"]))
            else:
                future.set_exception(_rebuild_error(message["error"]))
        elif "waited" in message:
            with self._lock:
                future = self._waits.pop(message["waited"], None)
            if future is not None:
                if message.get("error"):
                    future.set_exception(_rebuild_error(message["error"]))
                else:
                    future.set_result(None)

    @staticmethod
    def _log(record: dict[str, Any]) -> None:
        logging.getLogger(record.get("name", "hubckpt")).log(record.get("level", logging.INFO), "%s", record["msg"])

    # -- lifecycle --------------------------------------------------------------------------------------

    def _request(self, op: str, timeout: float | None) -> None:
        if self._dead is not None:
            raise self._dead
        future: Future = Future()
        with self._lock:
            request = self._next_id
            self._next_id += 1
            self._waits[request] = future
        self._channel.send({"op": op, "id": request, "timeout": timeout})
        try:
            future.result(None if timeout is None else timeout + 30)
        except TimeoutError:
            raise PublishError(f"the publishing process did not answer within {timeout}s") from None

    def wait(self, timeout: float | None = None) -> None:
        """Block until every job handed over is published; re-raise a failure not reported yet."""
        self._request("wait", timeout)

    def close(self, timeout: float | None = None) -> None:
        """Finish (or, after `timeout`, leave in the journal) every job, then stop the child."""
        if self._closed:
            return
        self._closed = True
        try:
            if self._dead is None:
                self._request("close", timeout)
        finally:
            self._stop_process()

    def __exit__(self, exc_type, exc, tb) -> None:
        # The training loop failed: the child finishes what it was handed (its journal has it) and exits.
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


# -- the child's side -----------------------------------------------------------------------------------

ORPHAN_WAIT_S = 900.0  # how long a new run waits for an earlier run's publishing process to finish


def is_orphaned_publisher(pid: int) -> bool:
    """Whether `pid` is a hubckpt publishing process whose training process has gone (Linux /proc)."""
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        parent = int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
    except (OSError, ValueError, IndexError):
        return False
    if b"hubckpt.integrations.publisher_process" not in cmdline:
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
                self.channel.send({"log": {"name": record.name, "level": record.levelno, "msg": message}})
                return
            except Exception:  # noqa: BLE001 - the training process has gone: say it on stderr from now on
                self.orphaned = True
        if record.levelno >= logging.WARNING:
            sys.stderr.write(f"hubckpt publishing process {os.getpid()}: {message}\n")


class _Pacing:
    """This process's I/O cap (`publish_mb_per_s`): on only while it can make nothing wait.

    That is while exactly one publish handed over by the training process is in flight, it has given
    its staging buffers back after converting them (so its conversion ran at full speed and the next
    `save()` finds them free), and no `wait()`/`close()` runs: then only its upload, and the hub's
    receiving, are spread out. A second publish handed over, a wait, the training process going away,
    jobs resumed from the journal at start-up, and a step that joins a job already known (its
    buffers come back at once, before anything of it ran) all run at full speed. The rate is raised,
    from the second save on, so that an upload takes at most half the time between the last two
    saves: a paced job never pushes the next one's conversion back, and a step is on the hub before
    the next is captured.
    """

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.cap: float | None = None  # MB/s
        self._clock = clock
        self._lock = threading.Lock()
        self._jobs: dict[int, int] = {}  # handed over, not settled → its bytes
        self._released: set[int] = set()  # ... of which gave their staging buffers back after converting
        self._waits = 0  # wait()/close() running, or the channel closed
        self._last_arrival: float | None = None
        self._interval: float | None = None  # seconds between the last two publishes handed over

    def start(self, cap: float | None) -> None:
        self.cap = cap
        self._apply()

    def queued(self, job: int, nbytes: int = 0) -> None:
        with self._lock:
            now = self._clock()
            if self._last_arrival is not None:
                self._interval = now - self._last_arrival
            self._last_arrival = now
            self._jobs[job] = nbytes
            self._apply()

    def released(self, job: int) -> None:
        with self._lock:
            if job in self._jobs:
                self._released.add(job)
            self._apply()

    def settled(self, job: int) -> None:
        with self._lock:
            self._jobs.pop(job, None)
            self._released.discard(job)
            self._apply()

    def waiting(self, delta: int) -> None:
        with self._lock:
            self._waits = max(0, self._waits + delta)
            self._apply()

    def rate(self) -> float | None:
        """MB/s now, or None for full speed."""
        if not self.cap or self._waits or len(self._jobs) != 1 or set(self._jobs) != self._released:
            return None
        (nbytes,) = self._jobs.values()
        if self._interval:
            return max(self.cap, nbytes / 1e6 / (0.5 * self._interval))
        return self.cap

    def _apply(self) -> None:
        limit_rate(self.rate())


class _Child:
    def __init__(self, channel: Channel) -> None:
        self.channel = channel
        self.arenas: dict[int, mmap.mmap] = {}  # arena id → its shared memory
        self.sets: dict[int, dict[str, torch.Tensor]] = {}
        self.publisher = None
        # publish() blocks while max_pending jobs wait: off the receive loop, which must keep reading.
        self.jobs: queue.Queue = queue.Queue()
        self.publishing = threading.Thread(target=self._publish_loop, name="hubckpt-publish", daemon=True)
        self.pacing = _Pacing()

    def start(self, message: dict[str, Any]) -> None:
        from ..cards import CardOptions
        from ..publishing import Publisher

        if message.get("nice"):
            lower_process_priority(message["nice"])
        self.pacing.start(message.get("mb_per_s"))
        options = dict(message["options"])
        if isinstance(options.get("card"), dict):
            card = options["card"]
            if card.get("template_dir"):
                card["template_dir"] = Path(card["template_dir"])
            options["card"] = CardOptions(**card)
        try:
            self.publisher = self._open_publisher(Publisher, message["repo_id"], options)
        except Exception as e:  # noqa: BLE001 - reported to the parent, which raises it
            self.channel.send({"error": _error_message(e)})
            raise SystemExit(1) from e
        self.channel.send({"spool": str(self.publisher.spool)})

    @staticmethod
    def _open_publisher(publisher_class, repo_id: str, options: dict[str, Any]):
        """A Publisher on the spool; if the spool's owner is the publishing process of a training run that
        has died (restarted at once after a crash), wait for it: it exits once it has published its steps."""
        from ..errors import SpoolBusyError

        told = False
        deadline = time.monotonic() + ORPHAN_WAIT_S
        while True:
            try:
                return publisher_class(repo_id, **options)
            except SpoolBusyError as e:
                if not (e.pid and is_orphaned_publisher(e.pid)) or time.monotonic() > deadline:
                    raise
                if not told:
                    logging.getLogger(__name__).warning(
                        "the spool of %s is still held by pid %s, the publishing process of an earlier run that "
                        "stopped; waiting for it to finish publishing what it was handed",
                        repo_id,
                        e.pid,
                    )
                    told = True
                time.sleep(0.5)

    def buffers(self, message: dict[str, Any], fds: list[int]) -> None:
        import torch

        for arena, fd in zip(message["arenas"], fds):
            self.arenas[arena["id"]] = map_arena(fd, arena["size"])
        staged = self.sets.setdefault(message["set"], {})
        for entry in message["buffers"]:
            dtype = getattr(torch, entry["dtype"])
            n = int(torch.Size(entry["shape"]).numel()) * torch.empty((), dtype=dtype).element_size()
            staged[entry["path"]] = arena_tensor(self.arenas[entry["arena"]], entry["offset"], n, dtype, entry["shape"])

    def publish(self, message: dict[str, Any]) -> None:
        from ..conversion.training_state import decode_tree

        job = message["id"]
        try:
            staged = self.sets.get(message["set"], {})
            tensors = {key: staged[path] for key, path in message["staged"].items()}
            tensors.update({key: _from_inline(entry) for key, entry in message["inline"].items()})
            tree = decode_tree(message["tree"], tensors)
            released = threading.Event()
            handing_over = True  # a release() during publish() itself: nothing of this job was converted yet

            def release() -> None:
                if not released.is_set():
                    released.set()
                    if not handing_over:
                        self.pacing.released(job)
                    try:
                        self.channel.send({"released": job})
                    except ChannelClosed:  # the training process has gone: publishing goes on
                        pass

            inner = self.publisher.publish(
                state_dict=tree["weights"],
                training_state=tree["training_state"] or None,
                companions=message["companions"],
                release=release,
                **message["options"],
            )
            handing_over = False
        except Exception as e:  # noqa: BLE001 - this job fails; the others go on
            self.pacing.settled(job)
            try:
                self.channel.send({"failed": job, "error": _error_message(e)})
            except ChannelClosed:  # the training process has gone: the jobs queued behind this one go on
                pass
            return

        def settled(f: Future) -> None:
            self.pacing.settled(job)
            try:
                if f.cancelled():
                    self.channel.send(
                        {
                            "failed": job,
                            "error": {
                                "type": "PublishError",
                                "message": (
                                    "the job was not started before the publisher stopped; it stays in the journal"
                                ),
                            },
                        }
                    )
                elif f.exception() is not None:
                    self.channel.send({"failed": job, "error": _error_message(f.exception())})
                else:
                    self.channel.send({"done": job, "revision": dataclasses.asdict(f.result())})
            except ChannelClosed:
                pass

        inner.add_done_callback(settled)

    def wait(self, message: dict[str, Any], close: bool) -> None:
        def run() -> None:
            error = None
            try:
                (self.publisher.close if close else self.publisher.wait)(message.get("timeout"))
            except Exception as e:  # noqa: BLE001 - handed to the parent
                error = _error_message(e)
            finally:
                self.pacing.waiting(-1)
            try:
                self.channel.send({"waited": message["id"], "error": error})
            except ChannelClosed:
                pass

        threading.Thread(target=run, name="hubckpt-wait", daemon=not close).start()

    def _publish_loop(self) -> None:
        # In order: a "wait" or "close" must see every publish handed over before it.
        while (message := self.jobs.get()) is not None:
            if message["op"] == "publish":
                self.publish(message)
            else:
                self.wait(message, close=message["op"] == "close")

    def run(self) -> None:
        self.publishing.start()
        while True:
            try:
                message, fds = self.channel.receive()
            except ChannelClosed:
                break
            op = message.get("op")
            if op == "start":
                self.start(message)
            elif op == "buffers":
                self.buffers(message, fds)
            elif op == "publish":
                self.pacing.queued(message["id"], message.get("nbytes", 0))
                self.jobs.put(message)
            elif op in ("wait", "close"):
                self.pacing.waiting(+1)
                self.jobs.put(message)
        # The training process closed the channel (or died): finish what was handed over, then exit.
        self.pacing.waiting(+1)
        self.jobs.put(None)
        self.publishing.join()
        if self.publisher is not None:
            try:
                self.publisher.close()
            except Exception as e:  # noqa: BLE001 - it stays in the journal, listed by `hubckpt jobs`
                logging.getLogger(__name__).error("publishing stopped with an unfinished job: %s", e)


def main() -> None:
    import signal

    # Ctrl-C in the terminal reaches the whole process group: the training process stops, and this one
    # finishes publishing what it was handed (SIGTERM still stops it; the journal keeps the rest).
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    read_uploads_in_large_pieces()
    from hubckpt import environment

    sock = socket.socket(fileno=environment.publisher_fd())
    channel = Channel(sock)
    root = logging.getLogger("hubckpt")
    root.addHandler(_ForwardLogs(channel))
    root.propagate = False
    child = _Child(channel)
    first, _ = channel.receive()
    root.setLevel(first.get("log_level", logging.WARNING))
    child.start(first)
    child.run()


if __name__ == "__main__":
    main()
