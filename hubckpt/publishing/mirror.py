"""Mirror a published run from one hub to another: `hubckpt.mirror` / `hubckpt mirror REPO --from A --to B`.

Here in `publishing/` (not a top-level `hubckpt/mirror.py`): mirroring publishes a run's revisions to a
target the way the publisher does (staging branch, one commit per revision, the index and card on `main`,
`publishing/layout.py`), and a module named `hubckpt.mirror` would shadow the public function of that name.

A run, and the module that does each part:

- `mirror_plan`: what to copy. Every commit the mirror makes carries the source commit it copies
  (`Mirrored-From: <sha>`), so the target's histories say what it has; nothing is kept locally. Each
  branch's commits not copied yet, `main`'s included, are the steps, oldest first.
- `mirror_copy`: each step as one commit, sending only what the target lacks; a revision's on its staging
  branch, then the branch is created at the copy of its head; `main`'s on `main` itself. So every branch
  has as many commits as on the source, chained the same way. A kill leaves at most a staging branch
  whose commits the next run reuses.
- `mirror_io`: the reads and writes; a commit whose answer was lost is settled by reading the branch, so
  each is made exactly once.
- `hub/budget.py`: the target's commit budget, learned from its answers (headers of accepted commits, or
  the first 429): commits are spaced under it, and the progress says how long the rest will take.
- here: the run in order (conflicts, commits, branches, tags), progress, and what a stopped run reports.

A target branch of the same name that is not a copy of the source's (nor an older point of its history)
is a conflict: nothing is written, `MirrorConflictError` lists them (`force=True` replaces). Transient
failures are retried (`retries.with_retries`); when they outlast it, or `deadline` passes,
`MirrorIncompleteError` says what was mirrored and what not.
"""

from __future__ import annotations

import logging
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import (
    DiskFullError,
    HubConfigError,
    HubUnavailableError,
    IntegrityError,
    MirrorConflictError,
    MirrorIncompleteError,
)
from ..hub.budget import duration
from ..hub.reader import HubReader
from ..hub.retries import TRANSIENT_STATUS, status_of
from ..hub.select import resolve_hub
from ..hub.writer import MAIN, HubTarget, is_staging_branch, staging_branch
from .mirror_copy import Copier
from .mirror_io import MirrorIO
from .mirror_plan import Plan, make_plan

logger = logging.getLogger(__name__)

RETRYABLE = (HubUnavailableError, IntegrityError, DiskFullError, ConnectionError, TimeoutError)
PREFETCH_COMMITS = 2  # commits whose new files download ahead of the one uploading (bounds the disk used)


@dataclass(frozen=True)
class MirrorProgress:
    """Where a mirror stands, passed to `progress` after each commit, before each wait, and at the start.

    `waiting_s`: seconds the mirror is about to wait for the target's commit budget (0: not waiting).
    `pace`: the commits left and, once the budget is known, about how long they take
    (`12 commits left, about 2 min at 6/min`).
    """

    revisions_done: int
    revisions_total: int
    bytes_done: int
    bytes_total: int
    revision: str | None = None
    commits_done: int = 0
    commits_total: int = 0
    waiting_s: float = 0.0
    pace: str = ""


@dataclass
class MirrorResult:
    """What one `mirror` run did.

    Attributes:
        repo_id / dst_repo_id: the source and target repo.
        copied: revision branches created or brought up to date by this run.
        unchanged: revision branches the target already had (nothing sent).
        commits: commits made on the target (0 when it was up to date).
        bytes_downloaded: bytes read from the source's files (0 when the target had everything).
        tags_moved: tags created or moved on the target.
        main_updated: whether `main` (index, card, final files) got commits.
        refused: commits the target refused for its commit budget (429), each then sent again.
        waited_s: seconds spent waiting for the target's commit budget.
    """

    repo_id: str
    dst_repo_id: str
    copied: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)
    commits: int = 0
    bytes_downloaded: int = 0
    tags_moved: list[str] = field(default_factory=list)
    main_updated: bool = False
    refused: int = 0
    waited_s: float = 0.0


def mirror(
    repo_id: str,
    *,
    src_hub: str | None = None,
    dst_hub: str | None = None,
    dst_repo_id: str | None = None,
    force: bool = False,
    src_token: str | bool | None = None,
    dst_token: str | bool | None = None,
    deadline: float | None = None,
    progress: Callable[[MirrorProgress], None] | None = None,
) -> MirrorResult:
    """Copy a published run to another hub: every revision branch, the tags, the index and `main`.

    Every branch keeps its name, files and history (the same number of commits, chained the same way);
    cards are re-rendered to link to the target; objects the target has are not sent again. Commits are
    spaced under the target's commit budget once it is known. Running it again copies only what the
    source gained since (nothing at all when nothing changed), and completes a run that was killed
    midway. A private source repo is created private on the target.

    Args:
        repo_id: the source repo (`namespace/name`).
        src_hub: the hub it is on (`local`, `hf`, a URL; None: the environment's, as everywhere).
        dst_hub: the hub to copy it to.
        dst_repo_id: the target repo's id (default: `repo_id`).
        force: replace target branches that hold other content (refused otherwise).
        src_token / dst_token: tokens for each hub (None: each hub's own default, see `resolve_token`).
        deadline: seconds the whole run may take; past it, `MirrorIncompleteError` (a rerun continues).
        progress: called with a `MirrorProgress` after each commit and before each wait for the budget.

    Returns:
        A `MirrorResult` saying what was copied.

    Raises:
        MirrorConflictError: the target holds other content under the source's branch names (nothing changed).
        MirrorIncompleteError: the target kept failing (e.g. a storm of 429s) or the deadline passed; it
            lists what was mirrored and what was not.
        HubConfigError: source and target are the same repo on the same hub.

    Example:
        >>> hubckpt.mirror("alice/run", src_hub="http://cluster:8900", dst_hub="hf")  # doctest: +SKIP
    """
    dst_repo_id = dst_repo_id or repo_id
    src = HubReader(resolve_hub(src_hub), repo_id, token=src_token)
    dst_resolved = resolve_hub(dst_hub)
    if dst_resolved.endpoint.rstrip("/") == src.hub.endpoint.rstrip("/") and dst_repo_id.lower() == repo_id.lower():
        raise HubConfigError(
            f"mirror: source and target are the same repo ({repo_id} on {src.hub.endpoint}); "
            "pass another --to hub or --to-repo name."
        )
    private = bool(
        getattr(src.retrying(lambda: src.api.repo_info(repo_id), what=f"reading {repo_id}"), "private", False)
    )
    dst = HubTarget(dst_resolved, dst_repo_id, token=dst_token, private=private)
    return _Mirror(src, dst, force=force, deadline=deadline, progress=progress).run()


class _Mirror:
    def __init__(
        self,
        src: HubReader,
        dst: HubTarget,
        *,
        force: bool,
        deadline: float | None,
        progress: Callable[[MirrorProgress], None] | None,
    ) -> None:
        self.src, self.dst, self.force = src, dst, force
        self.started = time.monotonic()
        self.ends_at = None if deadline is None else self.started + deadline
        self.progress = progress
        self.result = MirrorResult(src.repo_id, dst.repo_id)
        self.io = MirrorIO(src, dst, ends_at=self.ends_at)
        self.plan = Plan()
        self.done_revisions: list[str] = []

    def run(self) -> MirrorResult:
        src_branches, src_tags = self.src.refs()
        self.dst.ensure_repo()
        dst_branches, dst_tags = self.dst.refs()
        staging = {b: c for b, c in dst_branches.items() if is_staging_branch(b)}
        plan = self.plan = make_plan(self.io, src_branches, dst_branches)
        self.result.unchanged = list(plan.unchanged)
        if plan.conflicts and not self.force:
            raise MirrorConflictError(
                f"{self.dst.describe()} already holds other content under {len(plan.conflicts)} of the source's "
                f"branch names: {'; '.join(plan.conflicts)}. Nothing was changed. Mirror to another repo (--to-repo "
                "/ dst_repo_id=), delete those branches on the target, or pass --force (force=True) to overwrite them.",
                conflicts=plan.conflicts,
            )
        self.keep_private()
        copier = Copier(self.io, dict(plan.copied), staging, plan.main_head)
        self.report(None)
        try:
            self.copy(copier, dst_branches)
            self.move_tags(copier.copied, src_tags, dst_tags)
            self.report(None)
        except Exception as e:
            # What a rerun can get past (a hub that kept refusing or failing, a bad download, the deadline)
            # says what is done and what is left; anything else (a read token, a bug) is raised as it is.
            if isinstance(e, RETRYABLE) or status_of(e) in TRANSIENT_STATUS:
                raise self.incomplete(e) from e
            raise
        finally:
            self.result.refused = self.io.pacer.refusals
        self.result.bytes_downloaded = self.io.bytes_done
        for name in sorted(copier.staging):  # left by a killed run, for a branch that it had finished
            if name in {staging_branch(r) for r in src_branches}:
                self.dst.delete_branch(name)
        return self.result

    def keep_private(self) -> None:
        """A target that existed public is made private when the source is (after the conflict check)."""
        if not self.dst.private:
            return
        info = self.dst._retrying(lambda: self.dst.api.repo_info(self.dst.repo_id), what="reading the target")
        if not getattr(info, "private", False):
            logger.warning("%s was public; making it private as the source is", self.dst.describe())
            self.dst._retrying(
                lambda: self.dst.api.update_repo_settings(self.dst.repo_id, private=True),
                what=f"making {self.dst.repo_id} private",
            )

    def incomplete(self, error: BaseException) -> MirrorIncompleteError:
        pending = [b for b in self.plan.branches if b not in self.done_revisions]
        done = self.done_revisions + self.result.unchanged
        return MirrorIncompleteError(
            f"mirroring {self.src.describe()} to {self.dst.describe()} stopped: {error}. Mirrored: "
            f"{', '.join(sorted(done)) or 'nothing'}; not mirrored: {', '.join(pending) or 'main and tags'}. "
            "Run the same mirror again when the target accepts commits: it continues where this one stopped.",
            mirrored=sorted(done),
            pending=pending,
        )

    def pace(self) -> str:
        """The commits left and, once the target's budget is known, how long they will take."""
        done, total = self.result.commits, len(self.plan.steps)
        busy = time.monotonic() - self.started - self.result.waited_s
        return self.io.pacer.describe(total - done, busy / done if done else 0.0)

    def report(self, revision: str | None, waiting_s: float = 0.0) -> None:
        if self.progress is not None:
            self.progress(
                MirrorProgress(
                    len(self.done_revisions),
                    len(self.plan.branches),
                    self.io.bytes_done,
                    self.plan.bytes_total,
                    revision,
                    self.result.commits,
                    len(self.plan.steps),
                    waiting_s,
                    self.pace(),
                )
            )

    def wait_for_budget(self) -> None:
        """Before a commit: wait as long as the target's commit budget asks (never past the deadline)."""
        delay = self.io.pacer.delay()
        if self.ends_at is not None and time.monotonic() + delay > self.ends_at:
            raise HubUnavailableError(
                "the mirror's deadline passed"
                if delay <= 0
                else f"waiting {duration(delay)} for the target's "
                f"commit budget ({self.io.pacer.rate()}) would pass the mirror's deadline"
            )
        if delay > 0:
            logger.info(
                "mirror to %s: waiting %.1f s for its commit budget; %s", self.dst.describe(), delay, self.pace()
            )
            self.report(None, delay)
            time.sleep(delay)
            self.result.waited_s += delay

    def copy(self, copier: Copier, dst_branches: dict[str, str]) -> None:
        """Copy the planned steps in order, each revision branch set once its head is copied.

        The files of the next PREFETCH_COMMITS steps download in the background while a commit uploads
        (the two directions overlap; at most that many steps' new files are on disk at once).
        """
        steps = self.plan.steps
        wanted = copier.prefetch_plan(steps)
        heads: dict[str, list[str]] = {}  # source head → the branches waiting for its copy
        for name, head in self.plan.branches.items():
            heads.setdefault(head, []).append(name)
        for head in [h for h in heads if h in copier.copied]:  # copied before (a killed run): set at once
            for name in heads.pop(head):
                self.set_branch(copier, name, copier.copied[head], dst_branches.get(name))
        with (
            tempfile.TemporaryDirectory(prefix="hubckpt-mirror-") as work,
            ThreadPoolExecutor(max_workers=PREFETCH_COMMITS, thread_name_prefix="hubckpt-mirror") as pool,
        ):
            futures: dict[int, Future[Path]] = {}
            try:
                for i, step in enumerate(steps):
                    for j in range(i, min(i + PREFETCH_COMMITS, len(steps))):
                        if j not in futures:
                            futures[j] = pool.submit(copier.prefetch, steps[j].commit, wanted[j], Path(work) / str(j))
                    if self.ends_at is not None and time.monotonic() > self.ends_at:
                        raise HubUnavailableError("the mirror's deadline passed")
                    self.wait_for_budget()
                    new = copier.copy(step, futures.pop(i).result())
                    self.result.commits += 1
                    self.result.main_updated |= step.branch == MAIN
                    for name in heads.pop(step.commit, []):
                        self.set_branch(copier, name, new, dst_branches.get(name))
                    self.report(step.branch)
            finally:
                for future in futures.values():
                    future.cancel()

    def set_branch(self, copier: Copier, name: str, target: str, there: str | None) -> None:
        if there != target:
            if there is not None:
                self.dst.delete_branch(name)  # a fast-forward, or --force over other content
            self.dst._create_branch(name, target)
        if copier.staging.pop(staging_branch(name), None) is not None:
            self.dst.delete_branch(staging_branch(name))
        self.done_revisions.append(name)
        self.result.copied.append(name)

    def move_tags(self, copied: dict[str, str], src_tags: dict[str, str], dst_tags: dict[str, str]) -> None:
        for tag, commit in sorted(src_tags.items()):
            target = copied.get(commit)
            if target is None:
                logger.warning("tag %s of %s is at %s, which was not mirrored; skipped", tag, self.src.repo_id, commit)
            elif dst_tags.get(tag) != target:
                self.dst.move_tag(tag, target)
                self.result.tags_moved.append(tag)


__all__ = ["MirrorProgress", "MirrorResult", "mirror"]
