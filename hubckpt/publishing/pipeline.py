"""One publish job through its stages, for every target: the order of the stages and what each hub has.

For each target (one repo on one hub): look at the hub (index + refs); a revision it already holds with
the same content, or held and pruned since, is not published again; another content under the same name
is a `RevisionCollisionError` unless replaced; else the revision's card is rendered for that hub, then
commit, index and retain run, each recorded in the journal. A reopened job whose source did not change
on disk skips the conversion when every hub already holds its recorded content.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ..errors import PublishError
from ..faults import fault
from ..hub.writer import HubTarget
from . import stages
from .jobs import JobStore
from .staging import Captured

logger = logging.getLogger(__name__)


@dataclass
class PublishedRevision:
    """What a finished publish job produced."""

    repo_id: str
    revision: str
    step: int | None
    commits: dict[str, str] = field(default_factory=dict)  # target → commit sha
    skipped: bool = False  # every hub already had it: nothing new was done


class _Background:
    """`fn()` on its own thread; `result()` joins it and returns its value or raises its error."""

    def __init__(self, fn: Callable[[], Any]) -> None:
        self._fn = fn
        self._value: Any = None
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="hubckpt-lookup", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            self._value = self._fn()
        except BaseException as e:  # noqa: BLE001 - handed to result()
            self._error = e

    def join(self) -> None:
        self._thread.join()

    def result(self) -> Any:
        self._thread.join()
        if self._error is not None:
            raise self._error
        return self._value


class Pipeline:
    """The stages of the publisher's jobs, bound to its run (`stages.Run`), job store and targets."""

    def __init__(
        self,
        run: stages.Run,
        store: JobStore,
        targets: list[HubTarget],
        keys: list[str],
    ) -> None:
        self.ctx = run  # (not `run`: that is the method below)
        self.store = store
        self.targets = targets
        self.keys = keys
        self.replace: set[str] = set()  # jobs the caller asked to replace
        self._ready: set[str] = set()

    def _prepare(self, target: HubTarget, key: str) -> None:
        if key not in self._ready:
            target.ensure_repo()
            self._ready.add(key)

    def _look(self, target: HubTarget, key: str) -> stages.HubView:
        self._prepare(target, key)
        return stages.read_view(target)

    def run(self, job_id: str, captured: Captured | None = None) -> PublishedRevision:
        """Publish one job to every target (stages in order, each idempotent); what it produced.

        `captured`: the job's live tensors, released once they are written to the spool."""
        record = self.store.get(job_id)
        if record is None or not record.captured:
            raise PublishError(f"job {job_id} is not in the journal")
        name, step = record.revision, record.step
        replace = job_id in self.replace or bool(record.captured.get("replace"))
        commits: dict[str, str] = {}
        views: dict[str, stages.HubView] = {}
        expected = record.captured.get("expect_sha256")
        if expected and record.manifest_sha256 is None and not replace:
            for target, key in zip(self.targets, self.keys):
                self._prepare(target, key)
                views[key] = stages.read_view(target)
                held = views[key].holds(name, expected)
                if held is None and not views[key].pruned(name, expected):
                    break
                commits[target.key] = held or ""
            else:  # every hub has it, and the files on disk did not change: nothing to convert
                self.store.converted(job_id, expected)
                for key in self.keys:
                    self.store.published(job_id, key)
                self.store.remove_files(job_id)
                return PublishedRevision(self.ctx.repo_id, name, step, commits, skipped=True)
        # Look at the hubs while the checkpoint is validated and hashed (network vs disk + CPU): the same
        # requests as after it, only overlapped; an error is raised where it was before, after the conversion.
        pending = [(t, k) for t, k in zip(self.targets, self.keys) if k not in record.published and k not in views]
        lookup = _Background(lambda: {k: self._look(t, k) for t, k in pending}) if pending else None
        try:
            manifest = stages.convert(self.ctx, self.store, record, captured)
        except BaseException:
            if lookup is not None:
                lookup.join()  # the conversion's error is the one to report
            raise
        if lookup is not None:
            views.update(lookup.result())
        if captured is not None:  # written to the spool: the staging buffers can be reused now
            captured.release()
        folder = self.store.revision_folder(job_id)
        has_config = (folder / "config.json").is_file()
        new_work = False
        for target, key in zip(self.targets, self.keys):
            if key in record.published:
                commits[target.key] = record.committed.get(key, "")
                continue
            self._prepare(target, key)
            view = views.get(key) or stages.read_view(target)
            if view.pruned(name, record.manifest_sha256) and not replace:
                logger.info("%s was published to %s and pruned since; not publishing it again", name, target.describe())
                info = view.index.get(name)
                if info is not None and not info.pruned:  # finish the interrupted pruning
                    stages.retire(target, [], self.ctx.options.card, has_config=has_config)
                self.store.published(job_id, key)
                commits[target.key] = ""
                continue
            held = view.holds(name, record.manifest_sha256)
            # An index entry whose branch is gone (deleted by hand, as RevisionCollisionError advises) holds
            # nothing any more: publishing other content under that name is no collision.
            gone = view.index.get(name) is not None and name not in view.branches
            if held is None and not replace and not gone:
                stages.refuse_collision(view.index, target, name, record.manifest_sha256)
            elif held is None and view.index.get(name) is not None:
                logger.warning(
                    "replacing revision %s of %s (%s)",
                    name,
                    target.describe(),
                    "replace=True" if replace else "its branch was deleted",
                )
            if held is not None:
                commit, index = held, view.index
                if record.captured.get("final") and index.final != name:  # published before, now the final one
                    index = stages.index(self.ctx, target, record, manifest, commit, folder, replace=replace)
                    new_work = True
                if key not in record.indexed:
                    self.store.committed(job_id, key, commit)
                    self.store.indexed(job_id, key)
            else:
                new_work = True
                card = stages.revision_card(self.ctx, target, record, manifest, folder, self.previous_revision(step))
                commit = stages.commit(target, view, record, folder, card=card, replace=replace)
                fault("publish.after_commit")
                self.store.committed(job_id, key, commit)
                index = stages.index(self.ctx, target, record, manifest, commit, folder, replace=replace or gone)
                fault("publish.after_index")
                self.store.indexed(job_id, key)
            stages.retain(self.ctx, target, index, has_config=has_config)
            fault("publish.after_retain")
            self.store.published(job_id, key)
            commits[target.key] = commit
        self.store.done(job_id)
        self.store.remove_files(job_id)  # the converted revision and any source snapshot
        self.replace.discard(job_id)
        logger.info(
            "%s %s on %s",
            "published" if new_work else "already had",
            name,
            ", ".join(t.describe() for t in self.targets),
        )
        return PublishedRevision(self.ctx.repo_id, name, step, commits, skipped=not new_work)

    def previous_revision(self, step: int | None) -> str | None:
        """The revision captured before `step` (the card's "previous" link)."""
        if step is None:
            return None
        earlier = sorted(
            (r.step, r.revision)
            for r in self.store.records()
            if r.captured and r.step is not None and r.step < step and not r.dropped
        )
        return earlier[-1][1] if earlier else None


__all__ = ["Pipeline", "PublishedRevision"]
