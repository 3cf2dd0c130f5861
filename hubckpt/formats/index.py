"""`revisions.json` on `main`: the index of every revision (a rebuildable cache of their checkpoint.json).

The one place that reads and writes it (`RevisionIndex.from_json` / `to_json`), with the verbs both
sides use: `latest()`, `best_info()`, `final_info()`, `at_step()`, `at_tokens()`, `best_revision()`.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

from ..errors import HubConfigError
from .manifest import manifest_metrics
from .numbers import decode_number, encode_number
from .untrusted import (
    Source,
    check_commit,
    check_int,
    check_number,
    check_sha256,
    check_str,
    check_type,
    load_json,
    printable,
)

INDEX_FILE = "revisions.json"
INDEX_FORMAT_VERSION = 1


@dataclass
class RevisionInfo:
    """One published checkpoint, as listed in the index (`revisions.json`).

    Attributes:
        name: the revision's branch name (`step-0001200`).
        step: the training step, if known.
        commit: the 40-hex commit the revision's branch points at.
        epoch: the epoch, if recorded.
        tokens: tokens seen, if recorded.
        metrics: metric name -> value (NaN / inf kept as floats).
        size: bytes of the revision's files.
        date: when it was published (ISO 8601).
        source_format: what it was converted from (`trainer`, `torch`, `safetensors`...).
        manifest_sha256: sha256 of its `checkpoint.json`, which tells identical content apart.
        tags: `best`, `final` and user tags on it.
        final: whether it is the run's final checkpoint.
        pruned: deleted by the retention policy (kept in the index, not listed by `list_revisions`).
    """

    name: str
    step: int | None
    commit: str | None = None
    epoch: float | None = None
    tokens: int | None = None
    metrics: dict[str, float] = field(default_factory=dict)
    size: int = 0
    date: str | None = None
    source_format: str | None = None
    manifest_sha256: str | None = None
    tags: list[str] = field(default_factory=list)
    final: bool = False
    pruned: bool = False

    @classmethod
    def from_json(cls, data: dict[str, Any], source: Source | None = None) -> RevisionInfo:
        """One record of `revisions.json`, every field type-checked (see `formats.untrusted`)."""
        src = source or Source(path=INDEX_FILE)
        check_type(data, dict, src, "revision record")
        name = check_str(data.get("name"), src, "revision name", optional=False, limit=255)
        assert name is not None
        if not name or not name.isprintable():
            raise src.error(f"a revision name {printable(name)!r} is empty or has control characters")
        src = Source(src.repo_id, src.revision, f"{src.path} (revision {printable(name)})")
        commit = data.get("commit")
        metrics = check_type(data.get("metrics") or {}, dict, src, "metrics")
        tags = check_type(data.get("tags") or [], list, src, "tags")
        return cls(
            name=name,
            step=check_int(data.get("step"), src, "step"),
            commit=None if commit is None else check_commit(commit, src),
            epoch=check_number(data.get("epoch"), src, "epoch"),
            tokens=check_int(data.get("tokens"), src, "tokens"),
            metrics={
                check_str(k, src, "metric name", optional=False, limit=255) or "": v
                for k, raw in metrics.items()
                if (v := check_number(raw, src, f"metric {printable(str(k), 40)}")) is not None
            },
            size=check_int(data.get("size") or 0, src, "size") or 0,
            date=check_str(data.get("date"), src, "date", limit=64),
            source_format=check_str(data.get("source_format"), src, "source format", limit=255),
            manifest_sha256=check_sha256(data.get("manifest_sha256"), src, "manifest_sha256"),
            tags=[check_str(t, src, "tag", optional=False, limit=255) or "" for t in tags],
            final=bool(check_type(data.get("final", False), bool, src, "final flag")),
            pruned=bool(check_type(data.get("pruned", False), bool, src, "pruned flag")),
        )

    def to_json(self) -> dict[str, Any]:
        doc = asdict(self)
        doc["metrics"] = {k: encode_number(v) for k, v in self.metrics.items()}
        doc["epoch"] = encode_number(self.epoch)
        return doc


@dataclass
class RevisionIndex:
    """The machine-readable list of every revision (a rebuildable cache of their checkpoint.json).

    Stored as `revisions.json` on `main` (see `to_json` / `from_json`); `hubckpt reindex` rebuilds it
    from the branches.

    Attributes:
        revisions: every revision, sorted by step (pruned ones included, marked).
        monitor: the metric that decides `best`.
        mode: `min` or `max`, for `monitor`.
        best: the name of the best revision.
        final: the name of the final revision.
        tags: user tags (`hubckpt tag`): tag -> revision name.
    """

    revisions: list[RevisionInfo] = field(default_factory=list)
    monitor: str | None = None
    mode: str = "min"
    best: str | None = None
    final: str | None = None
    tags: dict[str, str] = field(default_factory=dict)  # user tags (`hubckpt tag`): tag → revision name

    def get(self, name: str) -> RevisionInfo | None:
        return next((r for r in self.revisions if r.name == name), None)

    def upsert(self, info: RevisionInfo) -> None:
        self.revisions = [r for r in self.revisions if r.name != info.name] + [info]
        self.revisions.sort(key=lambda r: (r.step if r.step is not None else -1, r.name))

    def live(self) -> list[RevisionInfo]:
        return [r for r in self.revisions if not r.pruned]

    def recompute_tags(self) -> None:
        managed = (("best", self.best), ("final", self.final))
        for r in self.revisions:
            r.tags = sorted({t for t, name in (*managed, *self.tags.items()) if name == r.name})

    def set_tag(self, tag: str, revision: str | None) -> None:
        """Record a user tag on `revision` (None removes it)."""
        if revision is None:
            self.tags.pop(tag, None)
        else:
            self.tags[tag] = revision
        self.recompute_tags()

    def to_json(self) -> bytes:
        """The index as JSON that every parser accepts: NaN / ±inf metrics as strings (see `encode_number`)."""
        self.recompute_tags()
        doc = {
            "format_version": INDEX_FORMAT_VERSION,
            "monitor": self.monitor,
            "mode": self.mode,
            "best": self.best,
            "final": self.final,
            "tags": dict(sorted(self.tags.items())),
            "revisions": [r.to_json() for r in self.revisions],
        }
        return (json.dumps(doc, indent=2, sort_keys=True, allow_nan=False) + "\n").encode()

    @classmethod
    def from_json(cls, raw: bytes | str, source: Source | None = None) -> RevisionIndex:
        """Parse `revisions.json`: untrusted input, size- and depth-capped, every field type-checked.

        Args:
            raw: the file's content.
            source: where it was read (repo, revision), for the error that refuses it.

        Returns:
            The index, with `"NaN"` / `"Infinity"` strings turned back into floats.

        Raises:
            HubConfigError: the file was written by a newer hubckpt (a higher `format_version`).
            HubContentError: the file is not a valid index (not JSON, wrong types, too large or deep).
        """
        src = source or Source(path=INDEX_FILE)
        doc = check_type(load_json(raw, src), dict, src, "content")
        if (check_int(doc.get("format_version", 0), src, "format_version") or 0) > INDEX_FORMAT_VERSION:
            raise HubConfigError("revisions.json was written by a newer hubckpt; upgrade hubckpt")
        tags = check_type(doc.get("tags") or {}, dict, src, "tags")
        mode = doc.get("mode") or "min"
        if mode not in ("min", "max"):
            raise src.error(f"its mode {printable(str(mode), 20)!r} is neither min nor max")
        return cls(
            revisions=[
                RevisionInfo.from_json(r, src) for r in check_type(doc.get("revisions") or [], list, src, "revisions")
            ],
            monitor=check_str(doc.get("monitor"), src, "monitor", limit=255),
            mode=mode,
            best=check_str(doc.get("best"), src, "best", limit=255),
            final=check_str(doc.get("final"), src, "final", limit=255),
            tags={
                check_str(k, src, "tag", optional=False, limit=255) or "": check_str(
                    v, src, "tag", optional=False, limit=255
                )
                or ""
                for k, v in tags.items()
            },
        )

    # -- verbs for the consumer side (`best` is the field naming the best revision, hence best_info) --

    def latest(self) -> RevisionInfo | None:
        """The live revision with the highest step (None in an empty index)."""
        live = [(r.step, r) for r in self.live() if r.step is not None]
        return max(live, key=lambda step_r: step_r[0])[1] if live else None

    def best_info(self) -> RevisionInfo | None:
        """The revision tagged `best` (by the monitored metric), if any."""
        return self.get(self.best) if self.best else None

    def final_info(self) -> RevisionInfo | None:
        """The revision tagged `final`, if any."""
        return self.get(self.final) if self.final else None

    def at_step(self, step: int, match: str = "exact") -> RevisionInfo | None:
        """The live revision at `step`: `exact`, the `nearest` one, or the last one `at_or_before` it."""
        return pick_revision(self.live(), step, lambda r: r.step, match)

    def at_tokens(self, tokens: int, match: str = "exact") -> RevisionInfo | None:
        """As `at_step`, by tokens seen."""
        return pick_revision(self.live(), tokens, lambda r: r.tokens, match)


def info_from_manifest(name: str, commit: str | None, manifest: dict[str, Any] | None) -> RevisionInfo:
    """A revision record from its `checkpoint.json` (or a bare record for a plain branch or tag).

    For repos whose index lacks the revision: `size` counts every file the manifest lists.
    """
    if not manifest:
        return RevisionInfo(name=name, step=None, commit=commit)
    return RevisionInfo(
        name=name,
        step=manifest.get("step"),
        commit=commit,
        epoch=decode_number(manifest.get("epoch")),
        tokens=manifest.get("tokens"),
        metrics=manifest_metrics(manifest),
        size=sum(int(f.get("size") or 0) for f in manifest.get("files") or [] if isinstance(f, dict)),
        source_format=(manifest.get("source") or {}).get("format"),
    )


def better(value: float, than: float | None, mode: str) -> bool:
    """Is `value` an improvement over `than` for a metric monitored in `mode` ('min' or 'max')?"""
    if than is None:
        return True
    return value < than if mode == "min" else value > than


def best_revision(index: RevisionIndex) -> str | None:
    """Name of the best live revision by the index's monitored metric (ties: the earliest)."""
    if not index.monitor:
        return None
    best: RevisionInfo | None = None
    for r in index.live():
        value = r.metrics.get(index.monitor)
        if isinstance(value, float) and math.isnan(value):
            continue  # a diverged evaluation is never the best
        if value is not None and (best is None or better(value, best.metrics[index.monitor], index.mode)):
            best = r
    return best.name if best else None


# -- verbs of the index, for the consumer side ------------------------------------------------------------

MATCHES = ("exact", "nearest", "at_or_before")


RevisionKey = Callable[[RevisionInfo], int | None]
"""What `pick_revision` and `nearest_to` match on: a revision's step or tokens (None: not known)."""


def _keyed(revisions: list[RevisionInfo], key: RevisionKey) -> list[tuple[int, RevisionInfo]]:
    """(key, revision) for the revisions whose key is known, in their order."""
    return [(k, r) for r in revisions if (k := key(r)) is not None]


def pick_revision(revisions: list[RevisionInfo], value: int, key: RevisionKey, match: str) -> RevisionInfo | None:
    """The revision whose `key` matches `value` under `match` (ties: the earlier revision)."""
    if match not in MATCHES:
        raise HubConfigError(f"match must be one of {', '.join(MATCHES)}, got {match!r}")
    candidates = _keyed(revisions, key)
    if match == "exact":
        return next((r for k, r in candidates if k == value), None)
    if match == "at_or_before":
        before = [(k, r) for k, r in candidates if k <= value]
        return max(before, key=lambda kr: kr[0])[1] if before else None
    return min(candidates, key=lambda kr: (abs(kr[0] - value), kr[0]))[1] if candidates else None


def nearest_to(revisions: list[RevisionInfo], value: int, key: RevisionKey, n: int = 2) -> list[RevisionInfo]:
    """The closest revision below and above `value` (by `key`), for error messages."""
    candidates = sorted(_keyed(revisions, key), key=lambda kr: kr[0])
    below = [r for k, r in candidates if k < value][-1:]
    above = [r for k, r in candidates if k > value][:1]
    return (below + above)[:n]
