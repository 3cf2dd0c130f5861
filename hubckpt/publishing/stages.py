"""The stages of a publish job — convert, commit, index, retain — each taking a job and (but convert) a target.

Every stage is idempotent and asks the hub, not only the journal, what is already there: a revision
is published on a hub when that hub's index lists it (live, same content digest) and its branch points
at the commit the index records. So a second hub, or a repo deleted and created again, is published in
full, and a stage interrupted by a kill is finished (or found finished) by the next attempt.

Retention deletes a branch *before* the index marks it pruned (a crash in between leaves a live entry
whose branch is gone, which the next retention pass marks); entries an older version marked pruned
while their branch survived are deleted then too. Tags `best` and `final` are reconciled with the index
after every index change. The Hub has no atomic tag move: moving a tag is a delete followed at once by
a create, and a kill between the two is repaired by the next pass.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..cards import CardOptions, render_revision_card
from ..checkpoint import Checkpoint
from ..errors import PublishError, RevisionCollisionError
from ..faults import fault
from ..formats.index import RevisionIndex, RevisionInfo, best_revision
from ..formats.manifest import MANIFEST_FILE, manifest_digest, manifest_metrics, read_manifest
from ..hub.writer import HubTarget
from ..names import is_staging_branch
from ..revisions import RESERVED
from .jobs import JobStore
from .journal import JobRecord
from .layout import CARD_FILE, final_files_to_replace, main_files
from .options import PublishOptions
from .policies import protected
from .staging import Captured

logger = logging.getLogger(__name__)


@dataclass
class Run:
    """What every stage needs to know: the repo, the publisher's options, and the metric deciding `best`
    (the option, else learnt from the first Trainer checkpoint that records one)."""

    repo_id: str
    options: PublishOptions
    monitor: str | None = None
    mode: str = "min"


@dataclass
class HubView:
    """One hub's state of the repo, read with two requests."""

    index: RevisionIndex
    branches: dict[str, str]
    tags: dict[str, str]

    def holds(self, name: str, digest: str | None) -> str | None:
        """The commit of revision `name` if this hub has it complete with content `digest`."""
        info = self.index.get(name)
        if info is None or info.pruned or info.commit is None or self.branches.get(name) != info.commit:
            return None
        return info.commit if digest is None or info.manifest_sha256 == digest else None

    def pruned(self, name: str, digest: str | None) -> bool:
        """This hub had revision `name` with content `digest`, and retention pruned it: nothing to publish again."""
        info = self.index.get(name)
        if info is None or digest is None or info.manifest_sha256 != digest:
            return False
        # Listed live but its branch is gone: a retention pass (or `hubckpt prune`) died between deleting
        # the branch and marking it; the next pass marks it.
        return info.pruned or (info.commit is not None and name not in self.branches)


def read_view(target: HubTarget) -> HubView:
    index, _ = target.read_index()
    branches, tags = target.refs()
    return HubView(index, branches, tags)


def source_signature(path: str | Path | None) -> str | None:
    """Cheap identity of a checkpoint on disk (names, sizes, mtimes): unchanged files → same signature."""
    if not path:
        return None
    path = Path(path)
    try:
        files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
        parts = [
            (p.relative_to(path).as_posix() if p != path else p.name, p.stat().st_size, p.stat().st_mtime_ns)
            for p in files
        ]
    except OSError:
        return None
    return hashlib.sha256(json.dumps(parts).encode()).hexdigest()[:32]


# -- convert ----------------------------------------------------------------------------------------


def convert(run: Run, store: JobStore, record: JobRecord, captured: Captured | None = None) -> dict:
    """The job's verified safetensors + checkpoint.json in the spool (reused if already staged); its manifest.

    Read from the checkpoint on disk, or from `captured` (live tensors in staging buffers)."""
    from ..conversion import convert_checkpoint
    from ..readers import read_checkpoint
    from ..snapshots import check_snapshot

    folder = store.revision_folder(record.job)
    if record.manifest_sha256 is None and (folder / MANIFEST_FILE).is_file():
        # Converted (the converter renames a complete, verified folder into place) but the process died
        # before the journal said so. A new capture clears the folder first, so it is this capture's.
        digest = folder_digest(folder)
        store.converted(record.job, digest)
        return converted_manifest(folder)
    if record.manifest_sha256 is not None:
        if (folder / MANIFEST_FILE).is_file() and folder_digest(folder) == record.manifest_sha256:
            return converted_manifest(folder)
        logger.info("%s: the spool no longer holds its converted files; converting again", record.revision)
        store.unstaged(record.job)
    entry = record.captured
    source = entry.get("source")
    if source and Path(source).exists():
        check_snapshot(Path(source))
        ckpt = read_checkpoint(source, allow_globals=run.options.allow_globals)
    elif captured is not None and not captured.released:
        ckpt = Checkpoint(
            source=Path(record.revision),
            source_format="live",
            weights=captured.weights,
            training_state=captured.training_state or {},
        )
    elif source:
        raise PublishError(
            f"Cannot publish {record.revision}: its checkpoint {source} no longer exists and the spool "
            "does not hold its converted files any more. Publish it again from a copy "
            f"(or drop the job: hubckpt jobs {run.repo_id} --drop {record.revision})."
        )
    else:
        raise PublishError(
            f"Cannot publish {record.revision}: it was captured from live tensors in memory, and the "
            "process stopped before they were written to the spool. Publish that step again "
            f"from the training loop, or drop the job: hubckpt jobs {run.repo_id} --drop "
            f"{record.revision}."
        )
    ckpt.step = entry["step"]
    for key in ("epoch", "tokens"):
        if entry.get(key) is not None:
            setattr(ckpt, key, entry[key])
    ckpt.metrics = {**ckpt.metrics, **entry.get("metrics", {})}
    ckpt.companions += [Path(c) for c in entry.get("companions", [])]
    if not run.options.include_training_state:
        ckpt.training_state = {}
    if ckpt.best and ckpt.best.get("metric") and run.monitor is None:
        run.monitor, run.mode = ckpt.best["metric"], ckpt.best.get("mode", "min")
    convert_checkpoint(ckpt, folder, max_shard_size=run.options.max_shard_size, overwrite=True, link=True)
    if source and Path(source).exists():
        check_snapshot(Path(source))  # not overwritten in place while it was being read
    digest = folder_digest(folder)
    store.converted(record.job, digest)
    fault("publish.after_convert")
    return converted_manifest(folder)


def converted_manifest(folder: Path) -> dict[str, Any]:
    """The checkpoint.json of a converted spool folder (the converter writes it last)."""
    manifest = read_manifest(folder)
    if manifest is None:
        raise PublishError(f"{folder} holds no {MANIFEST_FILE}: the spool was changed from outside; publish again")
    return manifest


def converted_digest(record: JobRecord) -> str:
    """The manifest digest the journal recorded when this job's capture was converted."""
    if record.manifest_sha256 is None:
        raise PublishError(f"{record.revision}: committing before the journal recorded its conversion")
    return record.manifest_sha256


def folder_digest(folder: Path) -> str:
    return manifest_digest(converted_manifest(folder))


def revision_info(captured: dict, manifest: dict, *, commit: str | None, digest: str | None = None) -> RevisionInfo:
    size = sum(f["size"] for f in manifest.get("files", []) if not f["path"].startswith("training_state/"))
    return RevisionInfo(
        name=captured["revision"],
        step=captured["step"],
        commit=commit,
        epoch=manifest.get("epoch"),
        tokens=manifest.get("tokens"),
        metrics=manifest_metrics(manifest),
        size=size,
        date=captured.get("captured_at"),
        source_format=manifest["source"]["format"],
        manifest_sha256=digest,
        final=bool(captured.get("final")),
    )


def revision_card(
    run: Run, target: HubTarget, record: JobRecord, manifest: dict, folder: Path, previous: str | None
) -> bytes:
    """This revision's README.md, rendered for `target` (its links point at that hub)."""
    info = revision_info(record.captured, manifest, commit=None)
    files = sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file() and p.name != CARD_FILE)
    return render_revision_card(
        repo_id=run.repo_id,
        repo_url=target.repo_url,
        info=info,
        previous=previous,
        monitor=run.monitor,
        mode=run.mode,
        files=files,
        options=run.options.card,
    ).encode()


# -- commit -----------------------------------------------------------------------------------------


def refuse_collision(index: RevisionIndex, target: HubTarget, name: str, digest: str | None) -> None:
    existing = index.get(name)
    if (
        existing is not None
        and not existing.pruned
        and digest is not None
        and existing.manifest_sha256 not in (None, digest)
    ):
        raise RevisionCollisionError.of(target.repo_id, name, target.hub.endpoint)


def commit(target: HubTarget, view: HubView, record: JobRecord, folder: Path, *, card: bytes, replace: bool) -> str:
    """The revision's one commit on its branch (started from the latest earlier live revision)."""
    name, step = record.revision, record.step
    earlier = [
        r
        for r in view.index.revisions
        if r.step is not None
        and step is not None
        and r.step < step
        and not r.pruned
        and r.name in view.branches
        and r.name != name
    ]
    start = earlier[-1].name if earlier else "main"
    return target.commit_revision(
        name,
        folder,
        start_from=start,
        message=f"Checkpoint {name} (step {step})",
        manifest_sha256=converted_digest(record),
        replace=replace,
        extra_files={CARD_FILE: card},
    )


# -- index ------------------------------------------------------------------------------------------


def index(
    run: Run,
    target: HubTarget,
    record: JobRecord,
    manifest: dict,
    commit_sha: str,
    folder: Path,
    *,
    replace: bool,
    also: Sequence[Committed] = (),
    yield_to: Callable[[], bool] | None = None,
) -> RevisionIndex:
    """List the revision in revisions.json on `main` (and the final revision's files there); return the index.

    `also`: earlier revisions committed since `main` was last updated (their updates coalesced into this
    one). `yield_to`: see `HubTarget.update_main` (a 429 is raised instead of waited out when it says so).
    """
    name = record.revision
    final = bool(record.captured.get("final"))
    digest = record.manifest_sha256
    hub_tags = retention_tags(run, target)

    def mutate(current: RevisionIndex):
        for earlier in also:
            refuse_collision(current, target, earlier.record.revision, earlier.record.manifest_sha256)
            current.upsert(earlier.info())
        if not replace:
            refuse_collision(current, target, name, digest)  # again: another writer may have raced us
        current.upsert(revision_info(record.captured, manifest, commit=commit_sha, digest=digest))
        if current.monitor is None and run.monitor:
            current.monitor, current.mode = run.monitor, run.mode
        current.best = best_revision(current) or current.best
        if final:
            current.final = name
        pruned = fold_retention(run, current, hub_tags)
        files = main_files(target, current, run.options.card, has_config=(folder / "config.json").is_file())
        deletes: list[str] = []
        if final:  # old model files from an earlier final must not mix with the new ones
            ours = {p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file()}
            deletes = final_files_to_replace(target.list_files("main"), ours)
        title = f"Index {name} (step {record.step})"
        if also:
            title = f"Index {len(also) + 1} revisions: {', '.join(e.record.revision for e in also)}, {name}"
        return files, (folder if final else None), deletes, title + pruned_suffix(pruned)

    _, updated = target.update_main(mutate, yield_to=yield_to)
    return updated


@dataclass
class Committed:
    """A revision committed on its branch whose listing on `main` waits for the next update of `main`."""

    job: str
    record: JobRecord
    manifest: dict
    commit: str

    def info(self) -> RevisionInfo:
        return revision_info(
            self.record.captured, self.manifest, commit=self.commit, digest=self.record.manifest_sha256
        )


def mark_final(run: Run, target: HubTarget, name: str, folder: Path, *, has_config: bool) -> RevisionIndex:
    """Make the published revision `name` the final one: the index says so, `main` gets its files (`folder`).

    Nothing of the revision itself changes: its entry, branch and content digest stay as published."""
    hub_tags = retention_tags(run, target)

    def mutate(current: RevisionIndex):
        info = current.get(name)
        if info is None or info.pruned:
            raise PublishError(
                f"Cannot mark {name} final on {target.describe()}: the hub's index does not list it as a live "
                "revision (pruned or deleted since). Publish the final checkpoint under another step or name."
            )
        info.final = True
        current.final = name
        pruned = fold_retention(run, current, hub_tags)
        files = main_files(target, current, run.options.card, has_config=has_config)
        ours = {p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file()}
        deletes = final_files_to_replace(target.list_files("main"), ours)
        return files, folder, deletes, f"Final: {name}" + pruned_suffix(pruned)

    _, updated = target.update_main(mutate)
    return updated


def download_revision(target: HubTarget, commit: str, cache: Path) -> Path:
    """The files of a published revision that go to `main` (not its card or training state), read from the hub."""
    path = target.api.snapshot_download(
        target.repo_id,
        revision=commit,
        cache_dir=str(cache),
        ignore_patterns=[CARD_FILE, "training_state/*"],
    )
    return Path(path)


# -- retain and tags --------------------------------------------------------------------------------


def retention_tags(run: Run, target: HubTarget) -> dict[str, str] | None:
    """The hub's user tags (see `hub_user_tags`) for `fold_retention`, read once before `main` is updated;
    None (nothing read) when the run has no retention policy."""
    if not run.options.retention.active:
        return None
    branches, tags = target.refs()
    return hub_user_tags(HubView(RevisionIndex(), branches, tags))


def fold_retention(run: Run, current: RevisionIndex, hub_tags: dict[str, str] | None) -> list[str]:
    """Mark pruned, in the index about to be committed on `main`, what the retention policy no longer keeps.

    This folds a retention pass into the update of `main` that lists new revisions, so it costs no commit
    of its own (under a commit budget, each separate "Prune" commit cost a slot). `retain` then deletes
    the marked revisions' branches (branch deletions are not commits): until it does, the index already
    says pruned and the branches still exist, so no reader is sent to a missing branch, and a pass killed
    in between is finished by the next one (`retire` deletes a pruned revision's branch still at its
    commit). Computed inside the mutation, on the index as committed: a `best` or tag moved by another
    writer meanwhile is kept. `hub_tags`: `retention_tags`, None when the run has no retention policy.
    """
    retention = run.options.retention
    if hub_tags is None or not retention.active:
        return []
    plan = set(retention.to_prune(current, hub_tags))
    for r in current.revisions:  # never `best` or `final` (protected): they stay as they are
        if r.name in plan and not r.pruned:
            r.pruned = True
    return [r.name for r in current.revisions if r.name in plan]


def pruned_suffix(pruned: list[str]) -> str:
    """What a commit message of `main` adds for the revisions it marks pruned."""
    return f"; prune {', '.join(pruned)}" if pruned else ""


def retire(
    target: HubTarget,
    names: list[str],
    card: CardOptions,
    *,
    has_config: bool,
    confirm: Callable[[RevisionIndex], set[str]] | None = None,
) -> list[str]:
    """Delete the branches of `names`, then mark them pruned in the index; return what was deleted.

    `confirm(index)` (re-read just before deleting) narrows `names` to what is still to prune, so a
    branch that became kept meanwhile (another writer moved `best`, changed the index) is left alone.
    Live entries whose branch is already gone (a previous pass killed after deleting) are marked too.
    """
    view = read_view(target)
    wanted = [n for n in names if n in view.branches and (confirm is None or n in confirm(view.index))]
    wanted = [n for n in wanted if n not in protected(view.index, hub_user_tags(view))]
    for name in wanted:
        logger.info("retention: deleting branch %s of %s", name, target.repo_id)
        target.delete_branch(name)
        fault("publish.retain.after_delete")
    branches = target.branches() if wanted else view.branches
    seen = {r.name: r.commit for r in view.index.revisions}
    gone = {r.name for r in view.index.live() if r.name not in branches}
    # Marked pruned by an older version that died before deleting: only a branch still at the pruned
    # commit. One at another commit was published again (a publisher between its commit and index
    # stages) and is live.
    # Also how the branches of revisions pruned by `fold_retention` (in the update of `main`) go.
    leftovers = [r.name for r in view.index.revisions if r.pruned and branches.get(r.name) == r.commit]
    kept = protected(view.index, hub_user_tags(view))
    for name in leftovers:
        if name in kept:  # tagged by a user since it was marked: its branch stays
            logger.warning(
                "retention: %s of %s is marked pruned but tagged since; keeping its branch", name, target.repo_id
            )
            continue
        logger.info("retention: deleting branch %s of %s", name, target.repo_id)
        target.delete_branch(name)
        fault("publish.retain.after_delete")
    if gone:

        def mutate(current: RevisionIndex):
            # ... and an entry re-indexed at a new commit meanwhile is not the one whose branch was gone
            marked = [r for r in current.revisions if r.name in gone and not r.pruned and r.commit == seen[r.name]]
            for r in marked:
                r.pruned = True
            current.best = best_revision(current)
            return (
                main_files(target, current, card, has_config=has_config),
                None,
                [],
                f"Prune {len(marked)} revision(s)",
            )

        target.update_main(mutate)
    return wanted


def hub_user_tags(view: HubView) -> dict[str, str]:
    """User tags on the hub (whatever client made them) that point at a revision's branch head: tag -> name."""
    heads = {commit: name for name, commit in view.branches.items() if name != "main" and not is_staging_branch(name)}
    return {tag: heads[c] for tag, c in view.tags.items() if tag not in RESERVED and c in heads}


def retain(run: Run, target: HubTarget, current: RevisionIndex, *, has_config: bool) -> RevisionIndex:
    """Apply the retention policy to `current` (the index just written), then put the tags right."""
    if run.options.retention.active:
        plan = run.options.retention.to_prune(current)
        if plan or any(r.pruned for r in current.revisions):
            retire(
                target,
                plan,
                run.options.card,
                has_config=has_config,
                confirm=lambda idx: set(run.options.retention.to_prune(idx)),
            )
            reconcile_tags(target)
            return current
    reconcile_tags(target, current)
    return current


def reconcile_tags(target: HubTarget, index: RevisionIndex | None = None) -> None:
    """`best` and `final` point at the heads of the revisions the index names (read from the hub if not given)."""
    if index is None:
        view = read_view(target)
    else:
        branches, tags = target.refs()
        view = HubView(index, branches, tags)
    for tag, name in (("best", view.index.best), ("final", view.index.final)):
        if name and name in view.branches and view.tags.get(tag) != view.branches[name]:
            target.move_tag(tag, name)


__all__ = [
    "Run",
    "HubView",
    "read_view",
    "source_signature",
    "convert",
    "folder_digest",
    "revision_info",
    "revision_card",
    "refuse_collision",
    "commit",
    "index",
    "Committed",
    "mark_final",
    "download_revision",
    "retire",
    "retention_tags",
    "fold_retention",
    "pruned_suffix",
    "hub_user_tags",
    "retain",
    "reconcile_tags",
]
