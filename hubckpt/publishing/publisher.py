"""The Publisher: every checkpoint becomes a documented Hub revision, in order, in the background.

Pipeline per checkpoint (DESIGN §6), each step recorded in the journal and idempotent:

1. capture  — `publish()` records the checkpoint (a path, or live tensors copied into reused staging
              buffers) and returns a Future; the training loop carries on.
2. convert  — verified safetensors + checkpoint.json + training_state/ into the spool, with the card.
3. commit   — one commit on a new branch started from the previous revision (per target).
4. index    — revisions.json, the repo card and the chart on `main` (compare-and-swap, retried);
              the final checkpoint's files land on `main` too; tags `best` / `final` move.
5. retain   — branches the retention policy no longer keeps are deleted and marked pruned.

One ordered worker thread runs steps 2–5. `publish()` blocks while `max_pending` jobs wait
(backpressure): a checkpoint is never dropped. A failure is re-raised by the next `publish()`,
`wait()` or `close()`. A process killed at any point resumes from the journal and the spool on the
next `Publisher` start (or `hubckpt resume`), publishing each revision exactly once.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import queue
import re
import shutil
import threading
import time
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable

from ..cards import CardOptions, metrics_chart_svg, render_repo_card, render_revision_card
from ..checkpoint import MANIFEST_FILE, Checkpoint
from ..errors import HubConfigError, PublishError, RevisionCollisionError, UnsupportedCheckpointError
from ..faults import fault
from ..hub_client import HubTarget, manifest_digest
from ..hubs import Hub, resolve_hub
from ..revisions import (DEFAULT_TEMPLATE, INDEX_FILE, RevisionIndex, RevisionInfo, best_revision, check_template,
                         render_revision_name)
from .journal import Journal, JobRecord
from .policies import Retention
from .staging import StagingPool

logger = logging.getLogger(__name__)

CHART_FILE = "metrics.svg"
LOST = "lost:"


@dataclass
class PublishedRevision:
    """What a finished publish job produced."""
    repo_id: str
    revision: str
    step: int | None
    commits: dict[str, str] = field(default_factory=dict)  # target → commit sha
    skipped: bool = False  # already published earlier: nothing new was done


def default_spool(repo_id: str) -> Path:
    base = os.environ.get("HUBCKPT_SPOOL")
    root = Path(base).expanduser() if base else Path.home() / ".cache" / "hubckpt" / "spool"
    return root / repo_id.replace("/", "--")


def _now() -> str:
    return dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def peek_step(path: Path) -> tuple[int | None, int | None]:
    """(step, tokens) of a checkpoint without reading its weights: trainer_state.json, else the name."""
    from ..readers.weights_folder import step_from_name

    state = path / "trainer_state.json"
    if state.is_file():
        try:
            data = json.loads(state.read_text())
            tokens = data.get("num_input_tokens_seen") or None
            return data.get("global_step"), tokens
        except (OSError, ValueError):
            pass
    return step_from_name(path.name), None


class Publisher:
    """Publish checkpoints of one training run to one repo (on one or several hubs).

    Args:
        repo_id: `namespace/name` of the model repo (created if missing).
        hub: `local` (default), `hf`, a URL, or a list of them to publish to several hubs from one spool.
        revision_template: branch name of a revision; fields step, epoch, tokens, tokens_b, tokens_m.
        monitor, mode: metric that decides the `best` tag ("min" or "max"); defaults to what a Trainer
            checkpoint records as its best metric.
        keep_last, keep_every, keep_best: retention (see `Retention`); nothing set keeps every revision.
        max_pending: jobs that may wait for the worker before `publish()` blocks.
        spool_dir: where converted checkpoints and the journal live (default ~/.cache/hubckpt/spool/<repo>).
        resume: finish what a previous process left in the journal before anything new.

    Example:
        >>> with Publisher("me/exp1", keep_last=5) as pub:
        ...     for step in ...:
        ...         pub.publish(state_dict=model.state_dict(), step=step, metrics={"loss": loss})
    """

    def __init__(self, repo_id: str, *, hub: str | Hub | list[str | Hub] | None = None, token: str | None = None,
                 root: str | Path | None = None, revision_template: str = DEFAULT_TEMPLATE,
                 monitor: str | None = None, mode: str = "min", keep_last: int | None = None,
                 keep_every: int | None = None, keep_best: int | None = None, max_pending: int = 2,
                 private: bool = False, card: CardOptions | None = None, max_shard_size: int | str = "5GB",
                 allow_globals: Iterable[str] = (), include_training_state: bool = True,
                 spool_dir: str | Path | None = None, resume: bool = True) -> None:
        from ..names import split_repo_id

        split_repo_id(repo_id)
        if mode not in ("min", "max"):
            raise HubConfigError(f"mode must be 'min' or 'max', got {mode!r}")
        if max_pending < 1:
            raise HubConfigError("max_pending must be at least 1")
        self.repo_id = repo_id
        self.revision_template = check_template(revision_template)
        self.monitor, self.mode = monitor, mode
        self.retention = Retention(keep_last, keep_every, keep_best)
        self.card = card or CardOptions()
        self.max_shard_size = max_shard_size
        self.allow_globals = list(allow_globals)
        self.include_training_state = include_training_state
        hubs = hub if isinstance(hub, list) else [hub]
        self.targets = [HubTarget(h if isinstance(h, Hub) else resolve_hub(h, root=root), repo_id, token=token,
                                  private=private) for h in hubs]
        self.spool = Path(spool_dir) if spool_dir else default_spool(repo_id)
        (self.spool / "jobs").mkdir(parents=True, exist_ok=True)
        self.journal = Journal(self.spool / "journal.jsonl")
        self._jobs: dict[str, JobRecord] = self.journal.replay()
        self._futures: dict[str, Future] = {}
        self._payloads: dict[str, dict[str, Any]] = {}
        self._queue: queue.Queue = queue.Queue(maxsize=max_pending)
        self._staging = StagingPool(max_pending + 1)
        self._error: BaseException | None = None
        self._ready_targets: set[str] = set()
        self._closed = False
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._run, name="hubckpt-publisher", daemon=True)
        self._thread.start()
        for target in self.targets:
            logger.info("publishing to %s", target.describe())
        if resume:
            self._resume()

    # -- public API -------------------------------------------------------------------------------------

    def publish(self, source: str | Path | None = None, *, step: int | None = None,
                state_dict: dict | None = None, training_state: dict[str, Any] | None = None,
                metrics: dict[str, float] | None = None, epoch: float | None = None, tokens: int | None = None,
                final: bool = False, revision: str | None = None, companions: Iterable[str | Path] = (),
                snapshot: bool = False, release: Callable[[], None] | None = None) -> "Future[PublishedRevision]":
        """Queue one checkpoint: a file or folder (`source`), or live tensors (`state_dict`, copied now).

        Returns once the checkpoint is captured; blocks only while `max_pending` jobs wait. The Future
        resolves to a `PublishedRevision` when the revision is committed and indexed everywhere.
        With `snapshot=True` a `source` is first hard-linked (or copied) into the spool, so the training
        framework may delete it (e.g. the Trainer's `save_total_limit`) before it is converted.
        With `release`, `state_dict` and `training_state` are the caller's own staged copy (e.g.
        `hubckpt.Checkpointer`'s reused buffers): taken as they are, without a second copy, and
        `release()` is called once they are written to the spool (or the job ended), so the caller may
        reuse them.
        """
        self.raise_if_failed()
        if self._closed:
            raise HubConfigError("This Publisher is closed; create a new one.")
        if (source is None) == (state_dict is None):
            raise HubConfigError("Pass exactly one of `source` (a checkpoint path) or `state_dict` (live tensors).")
        started = time.perf_counter()
        if source is not None:
            source = Path(source).resolve()
            if not source.exists():
                raise UnsupportedCheckpointError(f"{source} does not exist", str(source))
            peeked_step, peeked_tokens = peek_step(source)
            step = step if step is not None else peeked_step
            tokens = tokens if tokens is not None else peeked_tokens
        if step is None:
            raise HubConfigError(f"Cannot tell the training step of {source or 'this checkpoint'}; pass step=...")
        name = revision or render_revision_name(self.revision_template, step=step, tokens=tokens, epoch=epoch)
        if revision:
            from ..revisions import validate_revision_name

            validate_revision_name(revision)
        job_id = f"{step:012d}-{name}"
        existing = self._jobs.get(job_id)
        if existing is not None and existing.done:
            future: Future = Future()
            future.set_result(PublishedRevision(self.repo_id, name, step, dict(existing.committed), skipped=True))
            if release is not None:
                release()
            return future
        if source is not None and snapshot:
            source = _snapshot(source, self.spool / "jobs" / job_id / "source")
        payload: dict[str, Any] = {}
        if state_dict is not None and release is not None:  # already staged by the caller: no second copy
            payload.update(weights=dict(state_dict), release=release)
            if training_state:
                payload["training_state"] = training_state
        elif state_dict is not None:
            payload["weights"] = self._staging.capture(state_dict)
            if training_state:
                payload["training_state"] = _clone_tree(training_state)
        captured = {"revision": name, "step": step, "source": str(source) if source else None, "final": final,
                    "metrics": dict(metrics or {}), "epoch": epoch, "tokens": tokens,
                    "companions": [str(Path(c).resolve()) for c in companions], "captured_at": _now()}
        with self._lock:
            record = JobRecord(job_id, captured={"event": "captured", "job": job_id, **captured})
            self._jobs[job_id] = record
            self._payloads[job_id] = payload
            future = self._futures.setdefault(job_id, Future())
        self.journal.append("captured", job_id, **captured)
        fault("publish.after_capture")
        blocked = time.perf_counter() - started
        self._queue.put(job_id)  # blocks while max_pending jobs wait: backpressure, never a dropped checkpoint
        logger.info("captured %s (training blocked %.3fs, %.3fs with backpressure)", name, blocked,
                    time.perf_counter() - started)
        return future

    def wait(self) -> None:
        """Block until every queued job is finished; re-raise the first failure."""
        self._queue.join()
        self.raise_if_failed()

    def raise_if_failed(self) -> None:
        if self._error is not None:
            error, self._error = self._error, None
            raise error

    def close(self) -> None:
        """Finish queued jobs, stop the worker, re-raise a failure."""
        if self._closed:
            return
        try:
            self._queue.join()
        finally:
            self._closed = True
            self._queue.put(None)
            self._thread.join(timeout=60)
        self.raise_if_failed()

    def __enter__(self) -> "Publisher":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:  # don't mask the caller's error; what is queued stays in the journal for the next start
            self._closed = True
            self._queue.put(None)

    def pending(self) -> list[str]:
        """Revisions captured but not yet published (from the journal)."""
        return [j.captured.get("revision", j.job) for j in self._jobs.values() if not j.done]

    # -- resume ---------------------------------------------------------------------------------------

    def _resume(self) -> None:
        for job_id, record in sorted(self._jobs.items(), key=lambda kv: kv[0]):
            if record.done or (record.failed or "").startswith(LOST):
                continue
            folder = self._job_folder(job_id)
            source = record.captured.get("source")
            if not (folder / MANIFEST_FILE).is_file() and not source:
                reason = f"{LOST} live tensors captured in memory; the process stopped before they were staged"
                self.journal.append("failed", job_id, error=reason)
                logger.warning("cannot resume %s: %s", job_id, reason)
                continue
            logger.info("resuming %s from the journal", record.captured.get("revision", job_id))
            with self._lock:
                self._futures.setdefault(job_id, Future())
                self._payloads.setdefault(job_id, {})
            self._queue.put(job_id)

    # -- the worker -----------------------------------------------------------------------------------

    def _job_folder(self, job_id: str) -> Path:
        return self.spool / "jobs" / job_id / "revision"

    def _run(self) -> None:
        while True:
            job_id = self._queue.get()
            if job_id is None:
                self._queue.task_done()
                return
            try:
                result = self._process(job_id)
                self._futures[job_id].set_result(result)
            except BaseException as e:  # recorded, re-raised to the caller, never swallowed
                logger.error("publishing %s failed: %s", job_id, e)
                self.journal.append("failed", job_id, error=f"{type(e).__name__}: {e}")
                self._jobs[job_id].failed = str(e)
                if self._error is None:
                    self._error = e
                self._futures[job_id].set_exception(e)
            finally:
                payload = self._payloads.pop(job_id, {})
                if "weights" in payload:
                    self._staging.release(payload["weights"])
                if "release" in payload:
                    payload["release"]()
                self._queue.task_done()

    def _process(self, job_id: str) -> PublishedRevision:
        record = self._jobs[job_id]
        captured = record.captured
        name, step = captured["revision"], captured["step"]
        folder = self._job_folder(job_id)
        if record.manifest_sha256 is None or not (folder / MANIFEST_FILE).is_file():
            self._convert(job_id, captured, folder)
            record.manifest_sha256 = _folder_digest(folder)
            self.journal.append("converted", job_id, manifest_sha256=record.manifest_sha256)
            fault("publish.after_convert")
        manifest = json.loads((folder / MANIFEST_FILE).read_text())
        for target in self.targets:
            self._prepare(target)
            if target.key not in record.committed:
                previous = self._previous_revision(target, name, step, record.manifest_sha256)
                commit = target.commit_revision(name, folder, start_from=previous or "main",
                                                message=f"Checkpoint {name} (step {step})",
                                                manifest_sha256=record.manifest_sha256)
                fault("publish.after_commit")
                record.committed[target.key] = commit
                self.journal.append("committed", job_id, target=target.key, commit=commit)
            if target.key not in record.indexed:
                self._index(target, captured, manifest, record.committed[target.key], folder, record.manifest_sha256)
                fault("publish.after_index")
                record.indexed.add(target.key)
                self.journal.append("indexed", job_id, target=target.key)
        record.done = True
        self.journal.append("done", job_id)
        shutil.rmtree(folder.parent, ignore_errors=True)  # the converted revision and any source snapshot
        logger.info("published %s to %s", name, ", ".join(t.describe() for t in self.targets))
        return PublishedRevision(self.repo_id, name, step, dict(record.committed))

    def _prepare(self, target: HubTarget) -> None:
        if target.key in self._ready_targets:
            return
        target.ensure_repo()
        self._ready_targets.add(target.key)

    def _previous_revision(self, target: HubTarget, name: str, step: int, digest: str) -> str | None:
        """The latest published revision before `step` (where the new branch starts), after a collision check."""
        index, _ = target.read_index()
        _refuse_collision(index, target, name, digest)
        branches = target.branches()
        earlier = [r for r in index.revisions
                   if r.step is not None and r.step < step and not r.pruned and r.name in branches]
        return earlier[-1].name if earlier else None

    def _convert(self, job_id: str, captured: dict[str, Any], folder: Path) -> None:
        from ..conversion import convert_checkpoint
        from ..readers import read_checkpoint

        payload = self._payloads.get(job_id, {})
        if captured.get("source"):
            ckpt = read_checkpoint(captured["source"], allow_globals=self.allow_globals)
        elif "weights" in payload:
            ckpt = Checkpoint(source=Path(captured["revision"]), source_format="live", weights=payload["weights"],
                              training_state=payload.get("training_state") or {})
        else:
            raise PublishError(f"{LOST} live tensors of {captured['revision']} are gone (the process restarted)")
        ckpt.step = captured["step"]
        for key in ("epoch", "tokens"):
            if captured.get(key) is not None:
                setattr(ckpt, key, captured[key])
        ckpt.metrics = {**ckpt.metrics, **captured.get("metrics", {})}
        ckpt.companions += [Path(c) for c in captured.get("companions", [])]
        if not self.include_training_state:
            ckpt.training_state = {}
        if ckpt.best and ckpt.best.get("metric") and self.monitor is None:
            self.monitor, self.mode = ckpt.best["metric"], ckpt.best.get("mode", "min")
        convert_checkpoint(ckpt, folder, max_shard_size=self.max_shard_size, overwrite=True)
        if "weights" in payload:  # written to the spool: the staging buffers can be reused now
            self._staging.release(payload.pop("weights"))
        if "release" in payload:
            payload.pop("release")()
        info = _revision_info(captured, json.loads((folder / MANIFEST_FILE).read_text()), commit=None)
        previous = self._previous_job_revision(captured["step"])
        files = sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file())
        card = render_revision_card(repo_id=self.repo_id, repo_url=self.targets[0].repo_url, info=info,
                                    previous=previous, monitor=self.monitor, mode=self.mode, files=files,
                                    options=self.card)
        (folder / "README.md").write_text(card)

    def _previous_job_revision(self, step: int) -> str | None:
        earlier = sorted((j.captured["step"], j.captured["revision"]) for j in self._jobs.values()
                         if j.captured and j.captured.get("step") is not None and j.captured["step"] < step)
        return earlier[-1][1] if earlier else None

    def _index(self, target: HubTarget, captured: dict, manifest: dict, commit: str, folder: Path,
               digest: str) -> None:
        name = captured["revision"]
        final = bool(captured.get("final"))
        outcome: dict[str, Any] = {}

        def mutate(index: RevisionIndex):
            _refuse_collision(index, target, name, digest)  # again: another writer may have raced us
            info = _revision_info(captured, manifest, commit=commit, digest=digest)
            index.upsert(info)
            if index.monitor is None and self.monitor:
                index.monitor, index.mode = self.monitor, self.mode
            index.best = best_revision(index) or index.best
            if final:
                index.final = name
            pruned = self.retention.to_prune(index)
            for r in index.revisions:
                if r.name in pruned:
                    r.pruned = True
            outcome["pruned"] = pruned
            outcome["best"] = index.best
            files = main_files(target, index, self.card, has_config=(folder / "config.json").is_file())
            deletes: list[str] = []
            if final:  # old model files from an earlier final must not mix with the new ones
                ours = {p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file()}
                deletes = [p for p in _main_model_files(target) if p not in ours]
            return files, (folder if final else None), deletes, f"Index {name} (step {captured['step']})"

        target.update_main(mutate)
        branches, tags = target.refs()
        if outcome.get("best") and outcome["best"] in branches and tags.get("best") != branches[outcome["best"]]:
            target.move_tag("best", outcome["best"])
        if final:
            target.move_tag("final", name)
        for pruned in outcome.get("pruned", []):
            logger.info("retention: deleting branch %s of %s", pruned, target.repo_id)
            target.delete_branch(pruned)


def _refuse_collision(index: RevisionIndex, target: HubTarget, name: str, digest: str) -> None:
    existing = index.get(name)
    if existing is not None and not existing.pruned and existing.manifest_sha256 not in (None, digest):
        raise RevisionCollisionError(
            f"{target.repo_id} already has a revision {name!r} with different content. Choose another revision "
            "template or name (revision=... / --revision), or delete that branch first.")


def main_files(target: HubTarget, index: RevisionIndex, card: CardOptions, *, has_config: bool) -> dict[str, bytes]:
    """What `main` carries for an index: revisions.json, the repo card and the metrics chart."""
    files = {INDEX_FILE: index.to_json()}
    chart = metrics_chart_svg(index)
    if chart:
        files[CHART_FILE] = chart.encode()
    files["README.md"] = render_repo_card(repo_id=target.repo_id, repo_url=target.repo_url, index=index, options=card,
                                          chart=CHART_FILE if chart else None, has_config=has_config).encode()
    return files


def _main_model_files(target: HubTarget) -> list[str]:
    pattern = re.compile(r"^(model.*\.safetensors(\.index\.json)?|checkpoint\.json)$")
    files = target.api.list_repo_files(target.repo_id, revision="main")
    return [f for f in files if pattern.match(f)]


def _folder_digest(folder: Path) -> str:
    return manifest_digest(json.loads((folder / MANIFEST_FILE).read_text()))


def _revision_info(captured: dict, manifest: dict, *, commit: str | None, digest: str | None = None) -> RevisionInfo:
    size = sum(f["size"] for f in manifest.get("files", []) if not f["path"].startswith("training_state/"))
    return RevisionInfo(name=captured["revision"], step=captured["step"], commit=commit, epoch=manifest.get("epoch"),
                        tokens=manifest.get("tokens"), metrics={k: v for k, v in manifest.get("metrics", {}).items()
                                                                if isinstance(v, (int, float))},
                        size=size, date=captured.get("captured_at"), source_format=manifest["source"]["format"],
                        manifest_sha256=digest, final=bool(captured.get("final")))


def _snapshot(source: Path, dest: Path) -> Path:
    """Hard-link `source` (a file or folder) into `dest`; copy where links are impossible."""
    import errno

    def link(src: str, dst: str) -> None:
        try:
            os.link(src, dst)
        except OSError as e:
            if e.errno not in (errno.EXDEV, errno.EPERM, errno.EMLINK, errno.ENOTSUP):
                raise
            shutil.copy2(src, dst)

    target = dest / source.name
    if target.exists():
        shutil.rmtree(target) if target.is_dir() else target.unlink()
    dest.mkdir(parents=True, exist_ok=True)
    if source.is_dir():
        shutil.copytree(source, target, copy_function=link)
    else:
        link(str(source), str(target))
    return target


def _clone_tree(value: Any) -> Any:
    """A deep copy of a training-state tree with every tensor cloned (the live ones keep changing)."""
    import torch

    if isinstance(value, torch.Tensor):
        return value.detach().clone()
    if isinstance(value, dict):
        return {k: _clone_tree(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(_clone_tree(v) for v in value)
    return value


__all__ = ["Publisher", "PublishedRevision", "RevisionCollisionError", "PublishError", "default_spool", "main_files"]
