"""Which revision: list a repo's revisions and resolve a name, word, step or token count to a pinned commit.

The index (`revisions.json` on `main`) answers in one request. A repo without one (not published by
hubckpt, or an index that lost a branch) is described from its refs and each branch's `checkpoint.json`.
Whatever is resolved carries the commit sha, and everything downstream reads at that commit, so a
branch or tag that moves meanwhile cannot change what was loaded.
"""

from __future__ import annotations

import dataclasses
import logging
import re
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC

from ..errors import AmbiguousRevisionError, HubConfigError, RevisionLookupError
from ..formats.index import (
    MATCHES,
    RevisionIndex,
    RevisionInfo,
    RevisionKey,
    info_from_manifest,
    nearest_to,
    pick_revision,
)
from ..formats.untrusted import is_commit
from ..hub.reader import MAIN, HubReader
from ..hub.select import Hub
from ..names import is_staging_branch

logger = logging.getLogger(__name__)

WORDS = ("best", "latest", "final")
_HEX = re.compile(r"^[0-9a-f]{7,40}$")


def _order(r: RevisionInfo):
    return (r.step is None, r.step if r.step is not None else 0, r.name)


class RepoRevisions:
    """The revisions of one repo as read once from the hub: the index, the refs, and records built from them.

    Each piece is read at most once per instance (open_revision, iter_revisions and diff reuse one).
    """

    def __init__(self, reader: HubReader) -> None:
        self.reader = reader
        self._index: RevisionIndex | None = None
        self._index_read = False
        self._refs: tuple[dict[str, str], dict[str, str]] | None = None
        self._records: list[RevisionInfo] | None = None
        self.source = "index"

    @property
    def repo_id(self) -> str:
        return self.reader.repo_id

    def index(self) -> RevisionIndex | None:
        if not self._index_read:
            self._index, _ = self.reader.index()
            self._index_read = True
        return self._index

    def refs(self) -> tuple[dict[str, str], dict[str, str]]:
        if self._refs is None:
            branches, tags = self.reader.refs()
            # a staging branch (left by a publish killed mid-commit) is not a revision
            self._refs = {n: c for n, c in branches.items() if not is_staging_branch(n)}, tags
        return self._refs

    def records(self, *, refresh: bool = False) -> list[RevisionInfo]:
        """Every live revision sorted by step (unstepped ones last, by name)."""
        if self._records is not None and not refresh:
            return self._records
        index = self.index()
        if index is None:
            logger.info("%s has no %s on main: listing its branches and tags instead", self.repo_id, "revisions.json")
            self.source = "refs"
            self._records = self._from_refs()
        else:
            records = [dataclasses.replace(r, tags=list(r.tags)) for r in index.live()]
            if refresh:
                records = self._merge_refs(records)
            self._records = sorted(records, key=_order)
        return self._records

    def _manifests(self, named: dict[str, str]) -> dict[str, dict | None]:
        with ThreadPoolExecutor(max_workers=8) as pool:
            found = pool.map(lambda commit: self.reader.manifest(commit), named.values())
            return dict(zip(named, found))

    def _dates(self, commits: list[str]) -> dict[str, str | None]:
        """Commit sha → its date (ISO 8601, UTC), for records built without the index (one request each)."""

        def date(commit: str) -> str | None:
            try:
                when = self.reader.api.model_info(self.repo_id, revision=commit).last_modified
            except Exception as e:  # noqa: BLE001 - a record without a date is still a record
                logger.debug("no date for %s@%s: %s", self.repo_id, commit[:12], e)
                return None
            return when.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ") if when else None

        unique = sorted(set(commits))
        with ThreadPoolExecutor(max_workers=8) as pool:
            return dict(zip(unique, pool.map(date, unique)))

    def _dated(self, records: list[RevisionInfo]) -> list[RevisionInfo]:
        dates = self._dates([r.commit for r in records if r.commit and r.date is None])
        return [dataclasses.replace(r, date=dates[r.commit]) if r.commit in dates else r for r in records]

    def _from_refs(self) -> list[RevisionInfo]:
        branches, tags = self.refs()
        manifests = self._manifests(branches)
        records = {name: info_from_manifest(name, branches[name], manifests[name]) for name in branches}
        main = records.get(MAIN)
        if (
            main is not None
            and main.step is not None
            and any(r.step == main.step for n, r in records.items() if n != MAIN)
        ):
            del records[MAIN]  # main carries a copy of the final revision's files
        by_commit = {r.commit: r for r in records.values()}
        for tag, commit in sorted(tags.items()):
            if commit in by_commit:
                by_commit[commit].tags.append(tag)
            else:
                records[tag] = dataclasses.replace(
                    info_from_manifest(tag, commit, self.reader.manifest(commit)), tags=[tag]
                )
        return sorted(self._dated(list(records.values())), key=_order)

    def _merge_refs(self, records: list[RevisionInfo]) -> list[RevisionInfo]:
        """Add branches the index does not list and user tags; log what the index missed."""
        branches, tags = self.refs()
        known = {r.name for r in records} | {MAIN}
        missing = {name: sha for name, sha in branches.items() if name not in known}
        if missing:
            logger.info(
                "the index of %s does not list %s; read from their checkpoint.json",
                self.repo_id,
                ", ".join(sorted(missing)),
            )
            manifests = self._manifests(missing)
            records += self._dated([info_from_manifest(name, sha, manifests[name]) for name, sha in missing.items()])
        by_commit = {branches.get(r.name, r.commit): r for r in records}
        for tag, commit in tags.items():
            r = by_commit.get(commit)
            if r is not None and tag not in r.tags:
                r.tags = sorted([*r.tags, tag])
        return records

    # -- resolution ---------------------------------------------------------------------------------

    def resolve(
        self, revision: str | None = None, *, step: int | None = None, tokens: int | None = None, match: str = "exact"
    ) -> RevisionInfo:
        given = [n for n, v in (("revision", revision), ("step", step), ("tokens", tokens)) if v is not None]
        if len(given) > 1:
            raise HubConfigError(f"Pass one of revision, step and tokens, not {' and '.join(given)}")
        if match not in MATCHES:
            raise HubConfigError(f"match must be one of {', '.join(MATCHES)}, got {match!r}")
        if step is not None:
            return self._by_number(int(step), "step", lambda r: r.step, match)
        if tokens is not None:
            return self._by_number(int(tokens), "tokens", lambda r: r.tokens, match)
        if revision is None or revision in WORDS:
            return self._by_word(revision or "latest")
        if is_commit(revision):  # a full commit sha: found in the index, or asked of the hub; no refs needed
            entry, commit = self._by_commit(revision)
            return (
                dataclasses.replace(entry, tags=list(entry.tags), metrics=dict(entry.metrics))
                if entry
                else info_from_manifest(revision[:12], commit, self.reader.manifest(commit))
            )
        return self._by_name(revision)

    def _lookup_error(self, wanted: str, nearest: list[RevisionInfo], hint: str = "") -> RevisionLookupError:
        names = [f"{r.name} (step {r.step})" if r.step is not None else r.name for r in nearest]
        near = f"; nearest: {', '.join(names)}" if names else "; it has no stepped revisions"
        return RevisionLookupError(
            f"{self.repo_id} has no revision at {wanted}{near}{hint}",
            repo_id=self.repo_id,
            wanted=wanted,
            nearest=[r.name for r in nearest],
        )

    def _by_number(self, value: int, what: str, key: RevisionKey, match: str) -> RevisionInfo:
        records = self.records()
        found = pick_revision(records, value, key, match)
        if found is None:
            hint = " (match='nearest' or 'at_or_before' picks one)" if match == "exact" else ""
            raise self._lookup_error(f"{what} {value}", nearest_to(records, value, key), hint)
        return self._pinned(found)

    def _by_word(self, word: str) -> RevisionInfo:
        index = self.index()
        records = self.records()
        if word == "latest":
            stepped = [(r.step, r) for r in records if r.step is not None]
            if stepped:
                return self._pinned(max(stepped, key=lambda step_r: step_r[0])[1])
            return self._by_name(MAIN)  # a plain repo: its latest state is main
        name = (index.best if word == "best" else index.final) if index is not None else None
        if name is None:  # no index, or one that names none: a tag of that name still counts
            tagged = next((r for r in records if word in r.tags), None)
            if tagged is not None:
                return self._pinned(tagged)
            why = "its index monitors no metric" if word == "best" and index is not None else f"no `{word}` tag"
            raise RevisionLookupError(
                f"{self.repo_id} has no {word} revision ({why}); see `hubckpt ls {self.repo_id}`",
                repo_id=self.repo_id,
                wanted=word,
            )
        found = next((r for r in records if r.name == name), None)
        if found is None:
            raise RevisionLookupError(
                f"{self.repo_id}'s index names {name} as {word}, but lists no such live revision; "
                f"run `hubckpt reindex {self.repo_id}`",
                repo_id=self.repo_id,
                wanted=word,
            )
        return self._pinned(found)

    def _pinned(self, info: RevisionInfo) -> RevisionInfo:
        """The record with its commit; reads refs only when the index did not record one."""
        if info.commit:
            return dataclasses.replace(info, tags=list(info.tags), metrics=dict(info.metrics))
        return self._by_name(info.name)

    def _by_name(self, name: str) -> RevisionInfo:
        branches, tags = self.refs()
        if name in branches and name in tags and branches[name] != tags[name]:
            raise AmbiguousRevisionError(
                f"{self.repo_id}: {name!r} is both a branch (at {branches[name][:12]}) "
                f"and a tag (at {tags[name][:12]}); "
                "pass the commit you mean instead"
            )
        commit = branches.get(name) or tags.get(name)
        index = self.index()
        entry = None
        if index is not None:
            entry = index.get(name) if name in branches else None
            if entry is None and commit is not None:
                entry = next((r for r in index.live() if r.commit == commit), None)
        if commit is None:
            pruned = index.get(name) if index is not None else None
            if index is not None and pruned is not None and pruned.pruned:
                raise RevisionLookupError(
                    f"{self.repo_id}@{name} was pruned: a retention policy deleted its branch; "
                    f"`hubckpt ls {self.repo_id} --all` lists it, the live revisions are the others",
                    repo_id=self.repo_id,
                    wanted=name,
                    nearest=[r.name for r in nearest_to(index.live(), pruned.step, lambda r: r.step)]
                    if pruned.step is not None
                    else [],
                )
            entry, commit = self._by_commit(name)
        if entry is not None and entry.commit == commit:
            info = dataclasses.replace(entry, tags=list(entry.tags), metrics=dict(entry.metrics))
        else:
            if entry is not None:
                logger.info(
                    "%s@%s has moved since the index recorded it (%s → %s); describing its head",
                    self.repo_id,
                    name,
                    entry.commit,
                    commit,
                )
            info = info_from_manifest(name, commit, self.reader.manifest(commit))
        info.tags = sorted(set(info.tags) | {t for t, sha in tags.items() if sha == commit})
        return info

    def _by_commit(self, name: str) -> tuple[RevisionInfo | None, str]:
        """A commit (or any revision the hub knows that is neither branch nor tag): ask the hub."""
        from huggingface_hub.errors import RevisionNotFoundError

        from .. import errors

        index = self.index()
        if index is not None and _HEX.match(name):
            found = next(((r, r.commit) for r in index.live() if r.commit and r.commit.startswith(name)), None)
            if found is not None:
                return found
        try:
            _, commit = self.reader.get("checkpoint.json", name)
        except RevisionNotFoundError as e:
            raise errors.UnknownRevisionError(
                f"{self.repo_id} has no revision {name!r} (no such branch, tag or commit); "
                f"see `hubckpt ls {self.repo_id}`",
                response=e.response,
            ) from None
        if not commit:
            raise HubConfigError(f"The hub did not say which commit {name!r} of {self.repo_id} is (no X-Repo-Commit)")
        return None, commit


def repo_revisions(repo_id: str, *, hub: Hub | str | None = None, token: str | bool | None = None) -> RepoRevisions:
    return RepoRevisions(HubReader(hub, repo_id, token=token))


def list_revisions(
    repo_id: str, *, hub: Hub | str | None = None, token: str | bool | None = None, refresh: bool = False
) -> list[RevisionInfo]:
    """Every live revision of `repo_id`, sorted by step, from the index in one request.

    Each record has name, step, epoch, tokens, metrics, commit, date, size and tags. Without an index
    (a repo not published by hubckpt) the records come from the refs and each branch's `checkpoint.json`
    (plain branches and tags as records without metrics); that is logged. `refresh=True` also reads the
    refs to add branches the index does not list and user tags.

    Args:
        repo_id: the repo, `namespace/name`.
        hub: `local` (default), `hf`, a URL or a `Hub`; None reads `HUBCKPT_HUB` / `HF_ENDPOINT`.
        token: token for that hub; None picks the hub's own (never the huggingface.co token elsewhere).
        refresh: also read the refs, for branches the index misses and user tags.

    Returns:
        The revisions as `RevisionInfo` records, sorted by step (pruned ones left out).

    Raises:
        RepositoryNotFoundError: unknown repo, or a private one without a token that can read it.
        HubUnavailableError: the hub could not be reached.
    """
    return repo_revisions(repo_id, hub=hub, token=token).records(refresh=refresh)


def resolve_revision(
    repo_id: str,
    revision: str | None = None,
    *,
    step: int | None = None,
    tokens: int | None = None,
    match: str = "exact",
    hub: Hub | str | None = None,
    token: str | bool | None = None,
) -> RevisionInfo:
    """The revision meant by a branch, tag or commit, a word (`best`, `latest`, `final`), a step or tokens.

    `match` is `exact`, `nearest` or `at_or_before` (for step/tokens). No argument means `latest` (or
    `main` for a repo without stepped revisions). The result's `commit` is the 40-hex sha to read at.

    Args:
        repo_id: the repo, `namespace/name`.
        revision: a branch, tag or commit, or `best`, `latest`, `final`.
        step: the revision published at this training step (instead of `revision`).
        tokens: the revision published at this token count (instead of `revision`).
        match: for `step` / `tokens`: `exact`, `nearest` or `at_or_before`.
        hub: `local` (default), `hf`, a URL or a `Hub`; None reads `HUBCKPT_HUB` / `HF_ENDPOINT`.
        token: token for that hub; None picks the hub's own (never the huggingface.co token elsewhere).

    Returns:
        The revision's `RevisionInfo`; its `commit` pins every later read.

    Raises:
        HubConfigError: more than one of `revision`, `step`, `tokens`, or an unknown `match`.
        RevisionLookupError: no revision at that step/tokens (the message names the nearest), or no best/final.
        UnknownRevisionError: no branch, tag or commit of that name (a huggingface_hub RevisionNotFoundError).
        AmbiguousRevisionError: a name that is both a branch and a tag at different commits.
        RepositoryNotFoundError: unknown repo, or a private one without a token that can read it.
    """
    return repo_revisions(repo_id, hub=hub, token=token).resolve(revision, step=step, tokens=tokens, match=match)
