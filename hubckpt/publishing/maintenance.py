"""After-the-fact operations on a published repo: list, show, tag, prune, reindex."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from ..cards import CardOptions, is_hubckpt_card
from ..errors import HubConfigError
from ..formats.index import RevisionIndex, RevisionInfo, best_revision
from ..formats.manifest import manifest_digest, manifest_metrics
from ..hub.writer import HubTarget, is_staging_branch
from ..revisions import RESERVED
from .layout import main_files
from .policies import Retention, protected
from .stages import hub_user_tags, read_view, retire

logger = logging.getLogger(__name__)


def list_revisions(target: HubTarget) -> RevisionIndex:
    """The index of a repo, in one request."""
    index, _ = target.read_index()
    return index


def _has_config(target: HubTarget, index: RevisionIndex) -> bool:
    live = index.live()
    return bool(live) and target.read_json("config.json", live[-1].commit or live[-1].name) is not None


@dataclass
class PruneResult:
    """What `prune` deleted (or would), what it keeps, and why the protected ones are kept whatever the policy."""

    pruned: list[str]
    kept: list[str]
    protected: dict[str, list[str]] = field(default_factory=dict)  # name -> ["best", "tag paper-v1", ...]


def prune(
    target: HubTarget,
    retention: Retention,
    *,
    monitor: str | None = None,
    mode: str | None = None,
    dry_run: bool = False,
    card: CardOptions | None = None,
) -> PruneResult:
    """Apply a retention policy to a published repo: delete the branches it no longer keeps.

    Never `best`, `final` or a revision with a user tag (`hubckpt tag`, or a tag another client made).
    """
    if not retention.active:
        raise HubConfigError("Nothing to prune by: pass --keep-last, --keep-every and/or --keep-best.")
    view = read_view(target)  # the index and the refs (user tags made with any client protect too)
    index = view.index
    if monitor:
        index.monitor, index.mode = monitor, mode or index.mode
    hub_tags = hub_user_tags(view)
    why = protected(index, hub_tags)
    live = {r.name for r in index.live()}
    why = {name: reasons for name, reasons in why.items() if name in live}
    plan = retention.to_prune(index, hub_tags)
    kept = [r.name for r in index.live() if r.name not in plan]
    if dry_run or not plan:
        return PruneResult(plan, kept, why)
    has_config = _has_config(target, index)

    def still_to_prune(current: RevisionIndex) -> set[str]:
        # Re-read just before deleting: a publisher running meanwhile may have changed what is kept.
        if monitor:
            current.monitor, current.mode = monitor, mode or current.mode
        return set(retention.to_prune(current))

    deleted = retire(target, plan, card or CardOptions(), has_config=has_config, confirm=still_to_prune)
    return PruneResult(deleted, [r.name for r in index.live() if r.name not in deleted], why)


def reindex(target: HubTarget, *, card: CardOptions | None = None) -> RevisionIndex:
    """Rebuild revisions.json (and the repo card) from the branches' own checkpoint.json files."""
    old = list_revisions(target)
    branches = target.branches()
    rebuilt = RevisionIndex(monitor=old.monitor, mode=old.mode)
    for name, commit in sorted(branches.items()):
        if name == "main" or is_staging_branch(name):
            continue  # a staging branch is not (yet) a revision
        manifest = target.read_json("checkpoint.json", commit)
        if manifest is None:
            logger.info("reindex: branch %s has no checkpoint.json; not a revision", name)
            continue
        previous = old.get(name)
        # A branch started from the previous revision inherits its checkpoint.json until its own commit lands.
        if previous is None and any(r.commit == commit for r in rebuilt.revisions):
            continue
        rebuilt.upsert(
            RevisionInfo(
                name=name,
                step=manifest.get("step"),
                commit=commit,
                epoch=manifest.get("epoch"),
                tokens=manifest.get("tokens"),
                metrics=manifest_metrics(manifest),
                size=sum(f["size"] for f in manifest.get("files", []) if not f["path"].startswith("training_state/")),
                date=previous.date if previous else None,
                source_format=(manifest.get("source") or {}).get("format"),
                manifest_sha256=manifest_digest(manifest),
                final=name == old.final,
            )
        )
    for r in old.revisions:  # pruned revisions stay listed as pruned
        if r.pruned and rebuilt.get(r.name) is None:
            rebuilt.upsert(r)
    rebuilt.final = old.final if old.final and rebuilt.get(old.final) else None
    rebuilt.best = best_revision(rebuilt)
    has_config = _has_config(target, rebuilt)

    readme = target.read_bytes("README.md", "main")
    keep_readme = readme is not None and not is_hubckpt_card(readme.decode("utf-8", "replace"))
    if keep_readme:
        logger.info("reindex: main's README.md was not written by hubckpt; leaving it as it is")
    rebuilt.tags = {t: n for t, n in old.tags.items() if rebuilt.get(n) is not None}

    def mutate(_current: RevisionIndex):
        files = main_files(target, rebuilt, card or CardOptions(), has_config=has_config)
        if keep_readme:
            files.pop("README.md")
        return files, None, [], "Rebuild the index"

    target.update_main(mutate)
    return rebuilt


def tag(target: HubTarget, revision: str, name: str, *, delete: bool = False) -> None:
    """Create or move a user tag (`best` and `final` are managed by the publisher)."""
    from ..names import validate_ref_name

    validate_ref_name(name, "tag name")
    if name in RESERVED:
        raise HubConfigError(f"The tag {name!r} is managed by hubckpt; choose another name.")
    if delete:
        target.delete_tag(name)
    else:
        target.move_tag(name, revision)
    # The index (and so `ls` and the card) lists user tags too.
    index = list_revisions(target)
    if index.get(revision) is None and not delete:
        return  # not a revision of the index (a branch of the user's own): the hub tag is all there is
    has_config = _has_config(target, index)

    def mutate(current: RevisionIndex):
        current.set_tag(name, None if delete else revision)
        verb = "Untag" if delete else f"Tag {revision} as"
        return main_files(target, current, CardOptions(), has_config=has_config), None, [], f"{verb} {name}"

    target.update_main(mutate)
