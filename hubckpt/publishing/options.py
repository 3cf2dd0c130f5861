"""`PublishOptions`: what a `Publisher` is told beyond its repo; typed, checked at construction, JSON both ways.

The JSON form is how the publishing process (`process/`) gets the options whole: `to_json()` writes
every field and `from_json()` reads them back by the fields' own types (`typed_json`), so no option
needs a case of its own on either side.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from ..cards import CardOptions
from ..defaults import MAX_SHARD_SIZE, REVISION_TEMPLATE
from ..errors import HubConfigError
from ..hub.select import Hub
from ..revisions import check_template
from .policies import Retention
from .typed_json import from_plain, to_plain


@dataclass(frozen=True)
class PublishOptions:
    """How a run is published: where, under which names, what is kept, what goes into the cards.

    Every `hubckpt.Publisher` (and `hubckpt.Checkpointer`) keyword argument is a field here:
    `Publisher(repo_id, keep_last=5)` is `Publisher(repo_id, options=PublishOptions(keep_last=5))`.

    Args:
        hub: `local` (default), `hf`, a URL, a `Hub`, or a list of them to publish to several hubs from
            one spool.
        token: a token for the one hub, or {hub: token} for several; None: each hub's own default (the
            stored huggingface.co token is only ever sent to huggingface.co; other hubs get HUBCKPT_TOKEN).
        root: the local hub's data folder (default ~/.cache/hubckpt/hub).
        private: create the repo private.
        revision_template: branch name of a revision; fields step, epoch, tokens, tokens_b, tokens_m.
        monitor: the metric that decides the `best` tag; default: what a Trainer checkpoint records as
            its best metric.
        mode: "min" or "max", for `monitor`.
        keep_last: retention: keep the last K revisions (see `Retention`); nothing set keeps every revision.
        keep_every: retention: keep every N-th step.
        keep_best: retention: keep the best M by `monitor`.
        card: what goes into the model cards beyond what the checkpoints record.
        max_shard_size: above this, weights are written as shards (`"5GB"`, `"500MB"`, or bytes).
        allow_globals: pickle globals (`module.Name`) trusted when reading checkpoints from disk.
        include_training_state: publish optimizer / scheduler / RNG / loop state under `training_state/`.
        max_pending: jobs that may wait for the worker before `publish()` blocks.
        spool_dir: where converted checkpoints and the journal live (default ~/.cache/hubckpt/spool/<repo>).
            One process owns a spool at a time; a second gets `SpoolBusyError`.
        resume: finish what a previous process left in the journal before anything new.

    Raises:
        HubConfigError: a value out of range (mode, max_pending, retention, a bad revision template, one
            token for several hubs).

    Example:
        >>> PublishOptions(keep_last=3, revision_template="step{step}").retention
        Retention(keep_last=3, keep_every=None, keep_best=None)
    """

    hub: str | Hub | list[str | Hub] | None = None
    token: str | dict[str, str] | None = None
    root: Path | None = None
    private: bool = False
    revision_template: str = REVISION_TEMPLATE
    monitor: str | None = None
    mode: Literal["min", "max"] = "min"
    keep_last: int | None = None
    keep_every: int | None = None
    keep_best: int | None = None
    card: CardOptions = field(default_factory=CardOptions)
    max_shard_size: int | str = MAX_SHARD_SIZE
    allow_globals: tuple[str, ...] = ()
    include_training_state: bool = True
    max_pending: int = 2
    spool_dir: Path | None = None
    resume: bool = True

    def __post_init__(self) -> None:
        # Normalise what callers may pass loosely (str paths, any iterable, None for the default card).
        for name in ("root", "spool_dir"):  # (an empty string, as None: the default folder)
            value = getattr(self, name)
            object.__setattr__(self, name, Path(value) if value else None)
        object.__setattr__(self, "allow_globals", tuple(self.allow_globals))
        if self.card is None:
            object.__setattr__(self, "card", CardOptions())
        elif not isinstance(self.card, CardOptions):
            raise HubConfigError(f"card= must be a hubckpt.CardOptions, got {type(self.card).__name__}")
        if self.mode not in ("min", "max"):
            raise HubConfigError(f"mode must be 'min' or 'max', got {self.mode!r}")
        if self.max_pending < 1:
            raise HubConfigError("max_pending must be at least 1")
        check_template(self.revision_template)
        Retention(self.keep_last, self.keep_every, self.keep_best)  # checked now, not at the first retention pass
        if isinstance(self.token, str) and len(self.hubs) > 1:
            raise HubConfigError(
                "A token belongs to one hub: with several hubs pass token={hub: token, ...} "
                "(keys as in hub=..., or endpoints); hubs left out use their own default"
            )

    @property
    def hubs(self) -> list[str | Hub | None]:
        """`hub` as a list (one None: the default hub)."""
        return list(self.hub) if isinstance(self.hub, list) else [self.hub]

    @property
    def retention(self) -> Retention:
        return Retention(self.keep_last, self.keep_every, self.keep_best)

    def replace(self, **changes: Any) -> PublishOptions:
        """A copy with `changes` applied (and checked)."""
        return dataclasses.replace(self, **changes)

    def to_json(self) -> dict[str, Any]:
        """Every field as plain JSON values (see `from_json`).

        Raises:
            HubConfigError: a value JSON cannot hold.
        """
        try:
            plain: dict[str, Any] = to_plain(self)
            return plain
        except ValueError as e:
            raise HubConfigError(f"These publish options cannot be written as JSON: {e}") from e

    def to_record(self) -> dict[str, Any] | None:
        """The fields that decide how a job is published, as JSON, for the job's record in the journal:
        `hubckpt jobs --retry` and `hubckpt resume` publish with them again. Never the hub, token or
        folders (given again where the job is retried). None if they cannot be written as JSON."""
        try:
            plain = self.to_json()
        except HubConfigError:
            return None
        return {name: plain[name] for name in _RECORDED if name in plain}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> PublishOptions:
        """The options `to_json()` wrote (fields left out keep their defaults).

        Raises:
            HubConfigError: an unknown field, or a value of the wrong shape.
        """
        try:
            return from_plain(cls, data)
        except (ValueError, TypeError) as e:
            raise HubConfigError(f"Unreadable publish options: {e}") from e


_RECORDED = (
    "private",
    "revision_template",
    "monitor",
    "mode",
    "keep_last",
    "keep_every",
    "keep_best",
    "card",
    "max_shard_size",
    "allow_globals",
    "include_training_state",
)

__all__ = ["PublishOptions"]
