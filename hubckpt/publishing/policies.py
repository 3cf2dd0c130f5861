"""Retention: which published revisions to keep. `best`, `final` and revisions with a user tag are always kept."""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import HubConfigError
from ..formats.index import RevisionIndex, better


@dataclass(frozen=True)
class Retention:
    """Keep the last K revisions, every N-th step, and the best M by the monitored metric (union of all set).

    With nothing set, every revision is kept.
    """

    keep_last: int | None = None
    keep_every: int | None = None
    keep_best: int | None = None

    def __post_init__(self) -> None:
        for name in ("keep_last", "keep_every", "keep_best"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise HubConfigError(f"{name} must be at least 1, got {value}")

    @property
    def active(self) -> bool:
        return any(v is not None for v in (self.keep_last, self.keep_every, self.keep_best))

    def kept(self, index: RevisionIndex, hub_tags: dict[str, str] | None = None) -> set[str]:
        """Names of the live revisions this policy keeps (`hub_tags`: as for `protected`)."""
        live = index.live()
        if not self.active:
            return {r.name for r in live}
        keep = set(protected(index, hub_tags))
        if self.keep_last:
            keep |= {r.name for r in live[-self.keep_last :]}
        if self.keep_every:
            keep |= {r.name for r in live if r.step is not None and r.step % self.keep_every == 0}
        monitor = index.monitor
        if self.keep_best and monitor:
            scored = [r for r in live if monitor in r.metrics]
            ranked = sorted(scored, key=lambda r: r.metrics[monitor], reverse=index.mode == "max")
            keep |= {r.name for r in ranked[: self.keep_best]}
        return keep

    def to_prune(self, index: RevisionIndex, hub_tags: dict[str, str] | None = None) -> list[str]:
        keep = self.kept(index, hub_tags)
        return [r.name for r in index.live() if r.name not in keep]


def protected(index: RevisionIndex, hub_tags: dict[str, str] | None = None) -> dict[str, list[str]]:
    """Revisions no policy prunes, with why: `best`, `final`, and each user tag on it.

    `hub_tags` (tag -> revision name) adds the tags the hub holds but the index does not list (made
    with another client than `hubckpt tag`).
    """
    why: dict[str, list[str]] = {}
    user_tags = {**(hub_tags or {}), **index.tags}
    for reason, name in (
        ("best", index.best),
        ("final", index.final),
        *((f"tag {tag}", name) for tag, name in sorted(user_tags.items())),
    ):
        if name and reason not in why.get(name, []):
            why.setdefault(name, []).append(reason)
    return why


__all__ = ["Retention", "better", "protected"]
