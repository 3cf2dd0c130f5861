"""Mirror a published run from one hub to another: `hubckpt.mirror` / `hubckpt mirror REPO --from A --to B`.

Here in `publishing/` (not a top-level `hubckpt/mirror.py`): mirroring publishes a run's revisions the
way the publisher does (staging branch, one commit per revision, the index and card on `main`), and a
module named `hubckpt.mirror` would shadow the public function of that name. The parts, each a module:

- `mirror_plan`: what to copy. Each copy carries its source commit (`Mirrored-From: <sha>`), so the
  target's histories say what it has (nothing is kept locally); every branch's commits not copied yet,
  `main`'s included, are the steps, oldest first. Branches in the way are conflicts.
- `mirror_copy`: each step as one commit sending only what the target lacks: a revision's on its staging
  branch (the branch is then created at the copy of its head), `main`'s on `main`. So every branch has
  the source's number of commits, chained the same way; a kill leaves at most a staging branch to reuse.
- `mirror_io`: the reads and writes; a commit whose answer was lost is settled by reading the branch.
- `mirror_progress`: the counts, the waits under the target's commit budget (`hub/budget.py`), the ETA.
- here: the run in order (conflicts, commits, branches, tags) and what a stopped run reports:
  `MirrorConflictError` before anything is written, `MirrorIncompleteError` when the target kept failing
  or the deadline passed (a rerun continues).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from ..errors import (
    DiskFullError,
    HubConfigError,
    HubUnavailableError,
    IntegrityError,
    MirrorConflictError,
    MirrorIncompleteError,
)
from ..hub.reader import HubReader
from ..hub.retries import TRANSIENT_STATUS, status_of
from ..hub.select import resolve_hub
from ..hub.writer import MAIN, HubTarget, is_staging_branch, staging_branch
from .mirror_copy import Copier
from .mirror_io import MirrorIO
from .mirror_plan import Plan, Step, make_plan
from .mirror_progress import MirrorProgress, Pace

logger = logging.getLogger(__name__)

RETRYABLE = (HubUnavailableError, IntegrityError, DiskFullError, ConnectionError, TimeoutError)


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
        tags_deleted: tags deleted on the target because the source deleted them since an earlier run.
        pruned: branches deleted on the target because the source pruned their revisions since an earlier run.
        main_updated: whether `main` (index, card, final files) got commits.
        refused: commits the target refused for its commit budget (429), each then sent again.
        waited_s: seconds spent waiting for the target's commit budget (before a commit, or after a 429).
    """

    repo_id: str
    dst_repo_id: str
    copied: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)
    commits: int = 0
    bytes_downloaded: int = 0
    tags_moved: list[str] = field(default_factory=list)
    tags_deleted: list[str] = field(default_factory=list)
    pruned: list[str] = field(default_factory=list)
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
        self.result = MirrorResult(src.repo_id, dst.repo_id)
        ends_at = None if deadline is None else time.monotonic() + deadline
        self.io = MirrorIO(src, dst, ends_at=ends_at)
        self.pace = Pace(self.io.pacer, progress, lambda: self.io.bytes_done, ends_at=ends_at, target=dst.describe())
        self.io.on_refused = self.pace.refused  # the retry's wait after a 429, said and counted too
        self.plan = Plan()

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
        self.retire_tags(src_tags, dst_tags)
        copier = Copier(self.io, dict(plan.copied), staging, plan.main_head)
        self.pace.revisions_total, self.pace.commits_total = len(plan.branches), len(plan.steps)
        self.pace.bytes_total = plan.bytes_total
        self.pace.report()
        try:
            self.copy(copier, dst_branches)
            self.move_tags(copier.copied, src_tags, dst_tags)
            self.retire_pruned(src_branches, dst_branches)
            self.pace.report()
        except Exception as e:
            # What a rerun can get past (a hub that kept refusing or failing, a bad download, the deadline)
            # says what is done and what is left; anything else (a read token, a bug) is raised as it is.
            if isinstance(e, RETRYABLE) or status_of(e) in TRANSIENT_STATUS:
                raise self.incomplete(e) from e
            raise
        finally:
            self.result.refused, self.result.waited_s = self.io.pacer.refusals, self.pace.waited_s
        self.result.bytes_downloaded = self.io.bytes_done
        # Left by a killed run: for a branch it had finished, or for a revision the source pruned since (its
        # head a copy, so the mirror's own; its commits are in the later revisions' histories now).
        copies = set(copier.copied.values())
        for name, head in sorted(copier.staging.items()):
            if name in {staging_branch(r) for r in src_branches} or head in copies:
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
        pending = [b for b in self.plan.branches if b not in self.result.copied]
        done = self.result.copied + self.result.unchanged
        return MirrorIncompleteError(
            f"mirroring {self.src.describe()} to {self.dst.describe()} stopped: {error}. Mirrored: "
            f"{', '.join(sorted(done)) or 'nothing'}; not mirrored: {', '.join(pending) or 'main and tags'}. "
            "Run the same mirror again when the target accepts commits: it continues where this one stopped.",
            mirrored=sorted(done),
            pending=pending,
        )

    def copy(self, copier: Copier, dst_branches: dict[str, str]) -> None:
        """Copy the planned steps in order, each revision branch set once its head is copied."""
        heads: dict[str, list[str]] = {}  # source head → the branches waiting for its copy
        for name, head in self.plan.branches.items():
            heads.setdefault(head, []).append(name)
        for name in [n for h in list(heads) if h in copier.copied for n in heads.pop(h)]:  # copied by a killed run
            self.set_branch(copier, name, copier.copied[self.plan.branches[name]], dst_branches.get(name))

        def copied(step: Step, new: str) -> None:
            self.result.commits += 1
            self.result.main_updated |= step.branch == MAIN
            self.pace.commits_done += 1
            for name in heads.pop(step.commit, []):
                self.set_branch(copier, name, new, dst_branches.get(name))
            self.pace.report(step.branch)

        pace = self.pace
        copier.copy_all(self.plan.steps, starting=pace.check_deadline, sending=pace.before_commit, after=copied)

    def set_branch(self, copier: Copier, name: str, target: str, there: str | None) -> None:
        if there != target:
            if there is not None:
                self.dst.delete_branch(name)  # a fast-forward, or --force over other content
            self.dst._create_branch(name, target)
        if copier.staging.pop(staging_branch(name), None) is not None:
            self.dst.delete_branch(staging_branch(name))
        self.result.copied.append(name)
        self.pace.revisions_done += 1

    def retire_pruned(self, src_branches: dict[str, str], dst_branches: dict[str, str]) -> None:
        """Delete the target's branches of revisions the source pruned since an earlier run.

        Only a branch the source no longer has, which the target's index (the source's, as just mirrored)
        marks pruned, still at the commit it lists: the test `retain` applies to a publisher's leftovers.
        A target branch of the user's own is never touched. Idempotent: a run killed before it is finished
        by the next one. Reads the target's index only when the target has branches the source has not.
        """
        gone = [b for b in dst_branches if b not in src_branches and b != MAIN and not is_staging_branch(b)]
        if not gone:
            return
        index, _ = self.dst.reader.index()
        for name in sorted(gone):
            info = index.get(name) if index is not None else None
            if info is not None and info.pruned and info.commit == dst_branches[name]:
                logger.info("%s: deleting branch %s, pruned at the source", self.dst.describe(), name)
                self.dst.delete_branch(name)
                self.result.pruned.append(name)

    def retire_tags(self, src_tags: dict[str, str], dst_tags: dict[str, str]) -> None:
        """Delete the target's copies of tags the source deleted since an earlier run, before anything is copied.

        Only a tag at a copy of a source commit that is `best` / `final` or that the target's index (the
        source's, as last mirrored) lists: a tag the source had. A tag made on the target itself is kept.
        Done before `main` is copied, while the target's index still lists the tag, so a run killed after
        it is finished by the next one. Reads the target's index only when the target has tags the source has not.
        """
        copies = set(self.plan.copied.values())
        gone = sorted(t for t, commit in dst_tags.items() if t not in src_tags and commit in copies)
        if not gone:
            return
        index, _ = self.dst.reader.index()
        listed = set(index.tags) if index is not None else set()
        for tag in gone:
            if tag in ("best", "final") or tag in listed:
                logger.info("%s: deleting tag %s, deleted at the source", self.dst.describe(), tag)
                self.dst.delete_tag(tag)
                self.result.tags_deleted.append(tag)

    def move_tags(self, copied: dict[str, str], src_tags: dict[str, str], dst_tags: dict[str, str]) -> None:
        for tag, commit in sorted(src_tags.items()):
            target = copied.get(commit)
            if target is None:
                logger.warning("tag %s of %s is at %s, which was not mirrored; skipped", tag, self.src.repo_id, commit)
            elif dst_tags.get(tag) != target:
                self.dst.move_tag(tag, target)
                self.result.tags_moved.append(tag)


__all__ = ["MirrorProgress", "MirrorResult", "mirror"]
