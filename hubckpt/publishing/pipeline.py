"""One publish job through its stages, for every target: the order of the stages and what each hub has.

For each target (one repo on one hub): look at the hub (index + refs); a revision it already holds with
the same content, or held and pruned since, is not published again; another content under the same name
is a `RevisionCollisionError` unless replaced; else the revision's card is rendered for that hub, then
commit, index and retain run, each recorded in the journal. A reopened job whose source did not change
on disk skips the conversion when every hub already holds its recorded content.

`final`: a final save of a step whose job is queued or running marks the job (`mark_final`), and the
job looks at that mark once more after its retention and tag moves, under the lock `mark_final` takes:
a mark that lands before that last look is applied by the job (index, `final` tag, files on `main`);
one that comes after it finds the job sealed, and the publisher re-runs the job once it has ended. A
re-run of a job every hub holds (`reopen_final`) needs no content: the revision's files are read back
from the hub for `main`, and nothing is converted or committed on its branch.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ..errors import PublishError
from ..faults import fault
from ..formats.manifest import MANIFEST_FILE
from ..hub.retries import status_of
from ..hub.writer import HubTarget
from . import stages
from .jobs import JobStore
from .staging import Captured

logger = logging.getLogger(__name__)

# Under a commit budget that has refused a commit (429) within its window, `main` is updated once per this
# many revisions (or when none follows within the window, up to MAX_LINGER_S): a revision then costs
# 1 + 1/LIMITED_BATCH commits, and 128 commits/hour sustain a save every 34 s.
LIMITED_BATCH = 5
MAX_LINGER_S = 60.0
MAX_UNLISTED = 16  # revisions waiting for their listing on `main`, at most (however fast saves come)


@dataclass
class PublishedRevision:
    """What a finished publish job produced.

    Attributes:
        repo_id: the repo.
        revision: the revision's name (its branch).
        step: the training step, if known.
        commits: the revision's commit on each hub, keyed as the journal keys hubs: a local hub by its data
            folder, `local:<folder>/<repo>` (its port may change), any other by `<url>/<repo>`.
        skipped: every hub already had it: nothing new was done.
    """

    repo_id: str
    revision: str
    step: int | None
    commits: dict[str, str] = field(default_factory=dict)
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
        self._marks = threading.Lock()
        self._sealed: set[str] = set()  # jobs past their last look at the `final` mark
        # Whether another job waits behind the one running (set by the publisher): then this job's update
        # of `main` is left to a later job, which lists every revision committed since in one commit.
        self.more_queued: Callable[[], bool] = lambda: False
        # Whether someone waits for every job to end (wait / close): then nothing lingers (see `_linger`).
        self.hurry: Callable[[], bool] = lambda: False
        self._pending: dict[str, list[stages.Committed]] = {}  # target key → committed, not yet on `main`
        self._unlisted: dict[str, set[str]] = {}  # job → target keys whose `main` does not list it yet
        self._has_config = False  # the last job's: whether `main`'s card shows a transformers snippet

    def mark_final(self, job_id: str) -> bool:
        """Mark a queued or running job `final`; False if it is past its last look at the mark (sealed):
        then wait for it to end and `reopen_final` it."""
        with self._marks:
            if job_id in self._sealed:
                return False
            self.store.mark_final(job_id)
            return True

    def unseal(self, job_id: str) -> None:
        """A new run of the job is queued: it looks at the `final` mark again (an earlier run's seal is void)."""
        with self._marks:
            self._sealed.discard(job_id)

    def reopen_final(self, job_id: str) -> None:
        """Mark a job that has ended `final`: its next run puts the mark on every hub (see `run`)."""
        with self._marks:
            self.store.mark_final(job_id)

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
        with self._marks:
            self._sealed.discard(job_id)
        record = self.store.get(job_id)
        if record is None or not record.captured:
            raise PublishError(f"job {job_id} is not in the journal")
        if (
            record.manifest_sha256
            and captured is None
            and record.captured.get("final")
            and not (self.store.revision_folder(job_id) / MANIFEST_FILE).is_file()
        ):
            marked = self._mark_published_final(job_id, record)
            if marked is not None:
                return marked
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
                commits[key] = held or ""
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
        has_config = self._has_config = (folder / "config.json").is_file()
        new_work = False
        finals: dict[str, str] = {}  # target key → the commit that target has made `final` (with the files)
        for target, key in zip(self.targets, self.keys):
            if key in record.published:
                commits[key] = record.committed.get(key, "")
                continue
            self._prepare(target, key)
            view = self._with_pending(key, views.get(key) or stages.read_view(target))
            if view.pruned(name, record.manifest_sha256) and not replace:
                logger.info("%s was published to %s and pruned since; not publishing it again", name, target.describe())
                info = view.index.get(name)
                if info is not None and not info.pruned:  # finish the interrupted pruning
                    stages.retire(target, [], self.ctx.options.card, has_config=has_config)
                self.store.published(job_id, key)
                commits[key] = ""
                continue
            held = view.holds(name, record.manifest_sha256)
            # An index entry whose branch is gone (deleted by hand, as RevisionCollisionError advises) holds
            # nothing any more: publishing other content under that name is no collision.
            gone = view.index.get(name) is not None and name not in view.branches
            live = view.holds(name, None)
            if held is None and live is not None and not replace and record.captured.get("final"):
                # The final save of a step this hub has published with other content (metrics given only to
                # the periodic save, a new process...): that revision becomes final, as published.
                folder_ = stages.download_revision(target, live, self.store.folder(job_id) / "final" / key_folder(key))
                logger.info(
                    "%s is published on %s already; marking it final as published (this save's content is "
                    "not published)",
                    name,
                    target.describe(),
                )
                theirs = (folder_ / "config.json").is_file()
                index = stages.mark_final(self.ctx, target, name, folder_, has_config=theirs)
                finals[key] = live
                self.store.committed(job_id, key, live)
                self.store.indexed(job_id, key)
                stages.retain(self.ctx, target, index, has_config=theirs)  # main's card: the files main holds
                self.store.published(job_id, key)
                commits[key] = live
                new_work = True
                continue
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
                final = bool(record.captured.get("final"))
                if final and index.final != name:  # published before, now the final one
                    index = stages.index(self.ctx, target, record, manifest, commit, folder, replace=replace)
                    new_work = True
                if final:
                    finals[key] = commit
                if key not in record.indexed:
                    self.store.committed(job_id, key, commit)
                    self.store.indexed(job_id, key)
            else:
                new_work = True
                card = stages.revision_card(self.ctx, target, record, manifest, folder, self.previous_revision(step))
                commit = stages.commit(target, view, record, folder, card=card, replace=replace)
                fault("publish.after_commit")
                self.store.committed(job_id, key, commit)
                final = bool(record.captured.get("final"))  # (read before the index stage reads it)
                coalescable = not final and not replace and not gone
                if coalescable and self._defers(target, key):  # a later job lists it on `main` (with its own)
                    self._defer(key, stages.Committed(job_id, record, manifest, commit))
                    commits[key] = commit
                    continue
                earlier = list(self._pending.get(key, []))
                try:
                    index = stages.index(
                        self.ctx,
                        target,
                        record,
                        manifest,
                        commit,
                        folder,
                        replace=replace or gone,
                        also=earlier,
                        yield_to=self.more_queued if coalescable else None,
                    )
                except Exception as e:
                    if coalescable and status_of(e) == 429:  # the commit budget: the next job lists it
                        logger.info("%s: main's update waits for the next revision (commit budget)", name)
                        self._defer(key, stages.Committed(job_id, record, manifest, commit))
                        commits[key] = commit
                        continue
                    raise
                self._listed(key, earlier)
                if final:
                    finals[key] = commit
                fault("publish.after_index")
                self.store.indexed(job_id, key)
            stages.retain(self.ctx, target, index, has_config=has_config)
            fault("publish.after_retain")
            self.store.published(job_id, key)
            commits[key] = commit
        # A final save of this step may have marked the job after its index stage: look once more, sealed
        # against marks from here on (a later one re-runs the job: see `mark_final`).
        while True:
            with self._marks:
                late = [
                    (t, k)
                    for t, k in zip(self.targets, self.keys)
                    if record.captured.get("final") and k not in finals and k in record.committed
                ]
                if not late:
                    self._sealed.add(job_id)
                    break
            for target, key in late:
                finals[key] = record.committed[key]
                self._flush(target, key, has_config=has_config)  # listed before it can be made final
                index = stages.mark_final(self.ctx, target, record.revision, folder, has_config=has_config)
                stages.retain(self.ctx, target, index, has_config=has_config)
                self.store.published(job_id, key)
                new_work = True
        for target, key in zip(self.targets, self.keys):
            if self._pending.get(key) and not self._linger(target):  # no next revision to list them: now
                self._flush(target, key, has_config=has_config)
        if self._unlisted.get(job_id):  # its job ends once a later update of `main` lists it
            self.replace.discard(job_id)
            return PublishedRevision(self.ctx.repo_id, name, step, commits, skipped=False)
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

    # -- updates of `main` coalesced across jobs (the commit budget) ------------------------------------

    def _defers(self, target: HubTarget, key: str) -> bool:
        """Leave this revision's listing on `main` to a later job: one waits already, or the hub's commit budget
        refused a commit lately and fewer than `LIMITED_BATCH` revisions wait for their listing."""
        waiting = len(self._pending.get(key, [])) + 1
        if waiting >= MAX_UNLISTED:  # saves keep coming faster than they publish: `main` must not lag further
            return False
        if self.more_queued():
            return True
        return target.rate_limited() is not None and waiting < LIMITED_BATCH

    def _linger(self, target: HubTarget) -> bool:
        """True if a next job arrived (it will list the waiting revisions): under a commit budget that refused a
        commit lately, wait for one up to the budget's window (at most `MAX_LINGER_S`), unless `hurry()`."""
        window = target.rate_limited()
        deadline = time.monotonic() + min(window or 0.0, MAX_LINGER_S)
        while True:
            if self.more_queued():
                return True
            if self.hurry() or time.monotonic() >= deadline:
                return False
            time.sleep(0.05)

    def flush_pending(self) -> None:
        """List every revision still waiting for its listing on `main` (a job failed: no later one may come).

        Best effort: a failure is logged (the job's own error is the one reported), and the journal keeps
        those jobs open, so the next start lists them."""
        for target, key in zip(self.targets, self.keys):
            if self._pending.get(key):
                try:
                    self._flush(target, key, has_config=self._has_config, wait_out_429=False)
                except Exception as e:  # noqa: BLE001 - see above
                    logger.warning(
                        "could not list %d revision(s) on main of %s: %s", len(self._pending[key]), target.describe(), e
                    )

    def _with_pending(self, key: str, view: stages.HubView) -> stages.HubView:
        """The hub as it will be: revisions committed but not listed on `main` yet count as listed (the next
        revision branches from them, and a re-run finds them held)."""
        for entry in self._pending.get(key, []):
            view.index.upsert(entry.info())
        return view

    def _defer(self, key: str, entry: stages.Committed) -> None:
        self._pending.setdefault(key, []).append(entry)
        self._unlisted.setdefault(entry.job, set()).add(key)

    def _listed(self, key: str, entries: list[stages.Committed]) -> None:
        """`main` of `key` lists `entries` now: their jobs are done there (and done once every hub lists them)."""
        for entry in entries:
            self.store.indexed(entry.job, key)
            self.store.published(entry.job, key)
            waiting = self._unlisted.get(entry.job, set())
            waiting.discard(key)
            if not waiting:
                self._unlisted.pop(entry.job, None)
                self.store.done(entry.job)
                self.store.remove_files(entry.job)
        pending = self._pending.get(key, [])
        self._pending[key] = [e for e in pending if e not in entries]

    def _flush(self, target: HubTarget, key: str, *, has_config: bool, wait_out_429: bool = True) -> None:
        """One update of `main` listing every revision of `key` committed since it was last updated."""
        entries = list(self._pending.get(key, []))
        if not entries:
            return

        hub_tags = stages.retention_tags(self.ctx, target)

        def mutate(current):
            for entry in entries:
                stages.refuse_collision(current, target, entry.record.revision, entry.record.manifest_sha256)
                current.upsert(entry.info())
            current.best = stages.best_revision(current) or current.best
            pruned = stages.fold_retention(self.ctx, current, hub_tags)  # no commit of its own (stages.py)
            files = stages.main_files(target, current, self.ctx.options.card, has_config=has_config)
            names = ", ".join(e.record.revision for e in entries)
            return files, None, [], f"Index {len(entries)} revision(s): {names}" + stages.pruned_suffix(pruned)

        _, index = target.update_main(mutate, yield_to=None if wait_out_429 else (lambda: True))
        self._listed(key, entries)
        stages.retain(self.ctx, target, index, has_config=has_config)

    def _mark_published_final(self, job_id: str, record) -> PublishedRevision | None:
        """A job every hub holds, marked final after it ended: mark the revision `final` on each hub with the
        files it has (read back from the hub for `main`); no content of its own. None if a hub lacks it
        (the job then runs as usual)."""
        name, digest = record.revision, record.manifest_sha256
        views = {}
        for target, key in zip(self.targets, self.keys):
            views[key] = self._look(target, key)
            if views[key].holds(name, digest) is None:
                return None
        commits: dict[str, str] = {}
        new_work = False
        for target, key in zip(self.targets, self.keys):
            view = views[key]
            commit = view.holds(name, digest) or ""
            commits[key] = commit
            if view.index.final != name or view.tags.get("final") != commit:
                folder = stages.download_revision(target, commit, self.store.folder(job_id) / "final" / key_folder(key))
                index = stages.mark_final(self.ctx, target, name, folder, has_config=(folder / "config.json").is_file())
                stages.retain(self.ctx, target, index, has_config=(folder / "config.json").is_file())
                new_work = True
            self.store.indexed(job_id, key)
            self.store.published(job_id, key)
        with self._marks:
            self._sealed.add(job_id)
        self.store.done(job_id)
        self.store.remove_files(job_id)
        logger.info("%s %s final on %s", "marked" if new_work else "already had", name, self._where())
        return PublishedRevision(self.ctx.repo_id, name, record.step, commits, skipped=not new_work)

    def _where(self) -> str:
        return ", ".join(t.describe() for t in self.targets)

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


def key_folder(key: str) -> str:
    """A target key as one folder name."""
    import hashlib

    return hashlib.sha256(key.encode()).hexdigest()[:16]


__all__ = ["Pipeline", "PublishedRevision"]
