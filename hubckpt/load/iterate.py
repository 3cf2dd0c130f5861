"""Iterate over many revisions of a run, in step order, without filling the disk.

Cache policies (as lm-checkpoints offers them): `keep` leaves everything in the huggingface_hub cache;
`previous` deletes a revision's files once the next one is asked for (the last one stays); `bounded` deletes the oldest
revisions this iteration downloaded whenever the repo's cache would grow past `max_cache_bytes`.
Deletion goes through huggingface_hub's cache tools (`scan_cache_dir().delete_revisions`), which keep
blobs still used by other cached revisions. Revisions that were cached before the iteration are never
deleted.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from ..errors import HubConfigError
from ..formats.index import RevisionInfo
from ..hub.reader import HubReader
from ..hub.select import Hub
from .lazy import LazyRevision
from .loaders import Revision, rev_model, rev_state_dict
from .resolve import RepoRevisions

logger = logging.getLogger(__name__)

POLICIES = ("keep", "previous", "bounded")


class IteratedRevision(Revision):
    """One revision handed out by `iter_revisions`: load it whole, in part, as a model, or lazily."""

    def state_dict(
        self, *, keys: Iterable[str] | None = None, prefix: str | None = None, dtype=None, device="cpu"
    ) -> dict:
        """Its tensors (see `hubckpt.load_state_dict`)."""
        return rev_state_dict(self, keys=keys, prefix=prefix, dtype=dtype, device=device)

    def load_model(self, model_class: Any = None, **from_pretrained_kwargs):
        """A transformers model of it (see `hubckpt.load_model`)."""
        return rev_model(self, model_class=model_class, **from_pretrained_kwargs)

    def open(self) -> LazyRevision:
        """Lazy reads (see `hubckpt.open_revision`); files already cached are read from disk."""
        return LazyRevision(self, count_from_now=True)

    def __repr__(self) -> str:
        return f"<IteratedRevision {self.repo_id}@{self.info.name} step={self.info.step} commit={self.commit[:12]}>"


class _CacheKeeper:
    """Applies a cache policy to one repo's part of the huggingface_hub cache."""

    def __init__(self, repo_id: str, policy: str, max_bytes: int | None, cache_dir: str | Path | None) -> None:
        self.repo_id = repo_id
        self.policy = policy
        self.max_bytes = max_bytes
        self.cache_dir = cache_dir
        self.preexisting = set(self._cached().keys()) if policy != "keep" else set()
        self.ours: list[str] = []  # commits this iteration may delete, oldest first
        self.peak = 0

    def _scan(self):
        from huggingface_hub import scan_cache_dir

        cache_dir = self.cache_dir
        if cache_dir is None:
            from huggingface_hub import constants

            cache_dir = constants.HF_HUB_CACHE
        if not Path(cache_dir).exists():
            return None, None
        info = scan_cache_dir(cache_dir)
        repo = next(
            (r for r in info.repos if r.repo_type == "model" and r.repo_id.lower() == self.repo_id.lower()), None
        )
        return info, repo

    def _cached(self) -> dict[str, int]:
        _, repo = self._scan()
        return {r.commit_hash: r.size_on_disk for r in repo.revisions} if repo is not None else {}

    def size(self) -> int:
        """Bytes the repo takes in the cache (shared blobs counted once)."""
        _, repo = self._scan()
        size = repo.size_on_disk if repo is not None else 0
        self.peak = max(self.peak, size)
        return size

    def _delete(self, commits: list[str]) -> None:
        info, repo = self._scan()
        if info is None or repo is None:
            return
        present = {r.commit_hash for r in repo.revisions}
        doomed = [c for c in commits if c in present]
        if doomed:
            strategy = info.delete_revisions(*doomed)
            logger.info(
                "cache: deleting %d revision(s) of %s, freeing %d bytes",
                len(doomed),
                self.repo_id,
                strategy.expected_freed_size,
            )
            strategy.execute()
        for c in commits:
            if c in self.ours:
                self.ours.remove(c)

    def before(self, rev: RevisionInfo) -> None:
        """Make room for the next revision."""
        if self.policy == "previous":
            self._delete([c for c in self.ours if c != rev.commit])
        elif self.policy == "bounded":
            assert self.max_bytes is not None
            need = rev.size or 0
            while self.ours and self.size() + need > self.max_bytes:
                self._delete([self.ours[0]])
            self.size()

    def after(self, rev: RevisionInfo) -> None:
        """The consumer is done with `rev`."""
        if self.policy == "keep":
            return
        commit = rev.commit  # resolved revisions always have one
        if commit is not None and commit not in self.preexisting and commit not in self.ours:
            self.ours.append(commit)
        if self.policy == "bounded":
            self.size()
            if self.max_bytes is not None and self.peak > self.max_bytes:
                logger.warning(
                    "cache of %s reached %d bytes, over the bound of %d (a single revision is larger, "
                    "or revisions cached before were kept)",
                    self.repo_id,
                    self.peak,
                    self.max_bytes,
                )

    def finish(self) -> None:
        """The iteration ended; the last revision stays cached (its item may still be in use)."""
        if self.policy == "bounded":
            self.size()


def select_revisions(
    records: list[RevisionInfo], revisions: RepoRevisions, *, steps: Iterable[int] | None, every: int | None, match: str
) -> list[RevisionInfo]:
    """The revisions to iterate, in step order: given steps (each resolved with `match`), or every N-th."""
    if steps is not None:
        picked = {}
        for step in steps:
            info = revisions.resolve(step=step, match=match)
            picked[info.name] = info
        return sorted(picked.values(), key=lambda r: (r.step is None, r.step or 0, r.name))
    chosen = [r for r in records if r.step is not None] or list(records)
    if every is not None:
        if every < 1:
            raise HubConfigError(f"every must be >= 1, got {every}")
        chosen = [r for r in chosen if r.step is not None and r.step % every == 0]
    return chosen


def iter_revisions(
    repo_id: str,
    *,
    steps: Iterable[int] | None = None,
    every: int | None = None,
    hub: Hub | str | None = None,
    token: str | bool | None = None,
    cache: str = "keep",
    max_cache_bytes: int | None = None,
    match: str = "exact",
    cache_dir: str | Path | None = None,
) -> Iterator[IteratedRevision]:
    """The revisions of `repo_id` one at a time in step order, each resolved and pinned to its commit.

    `steps` picks steps (resolved with `match`; a step with no revision fails before anything is
    yielded), `every` keeps steps that are multiples of N. Each item offers `state_dict()`,
    `load_model()` and `open()`; nothing is downloaded until one of them is called. `cache` is `keep`,
    `previous` or `bounded` (with `max_cache_bytes`).

    Args:
        repo_id: the repo, `namespace/name`.
        steps: only the revisions at these steps (resolved with `match`).
        every: only the revisions whose step is a multiple of this.
        hub: `local` (default), `hf`, a URL or a `Hub`; None reads `HUBCKPT_HUB` / `HF_ENDPOINT`.
        token: token for that hub; None picks the hub's own (never the huggingface.co token elsewhere).
        cache: `keep` leaves the cache alone; `previous` deletes each revision once the next is asked for;
            `bounded` deletes the oldest revisions this iteration downloaded past `max_cache_bytes`.
        max_cache_bytes: the bound for `cache="bounded"`.
        match: for `steps`: `exact`, `nearest` or `at_or_before`.
        cache_dir: the huggingface_hub cache to use (default: its usual one).

    Yields:
        One item per revision, in step order: `.info` (its `RevisionInfo`), `state_dict()`, `load_model()`
        and `open()`.

    Raises:
        RevisionLookupError: a step in `steps` has no revision (raised before anything is yielded).
        HubConfigError: `every` below 1, an unknown `cache`, or `bounded` without `max_cache_bytes`.
        RepositoryNotFoundError: unknown repo, or a private one without a token that can read it.

    Example:
        >>> for rev in hubckpt.iter_revisions("me/run", every=1000, cache="bounded", max_cache_bytes=2**30):
        ...     print(rev.info.step, rev.state_dict(keys=["lm_head.weight"])["lm_head.weight"].norm())
    """
    if cache not in POLICIES:
        raise HubConfigError(f"cache must be one of {', '.join(POLICIES)}, got {cache!r}")
    if cache == "bounded" and (max_cache_bytes is None or max_cache_bytes <= 0):
        raise HubConfigError("cache='bounded' needs max_cache_bytes (a positive number of bytes)")
    revisions = RepoRevisions(HubReader(hub, repo_id, token=token))
    chosen = select_revisions(revisions.records(), revisions, steps=steps, every=every, match=match)
    keeper = _CacheKeeper(repo_id, cache, max_cache_bytes, cache_dir)
    return _iterate(revisions, chosen, keeper, cache_dir)


def _iterate(
    revisions: RepoRevisions, chosen: list[RevisionInfo], keeper: _CacheKeeper, cache_dir: str | Path | None
) -> Iterator[IteratedRevision]:
    try:
        for info in chosen:
            info = revisions.resolve(info.name) if not info.commit else info
            keeper.before(info)
            yield IteratedRevision(revisions.repo_id, info=info, revisions=revisions, cache_dir=cache_dir)
            keeper.after(info)
    finally:
        keeper.finish()
