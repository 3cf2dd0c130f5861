"""Revision names: one branch per checkpoint, named from a template (the index itself: `formats.index`)."""

from __future__ import annotations

import string
from typing import Any

from .defaults import REVISION_TEMPLATE
from .errors import HubConfigError, InvalidNameError
from .names import STAGING_PREFIX, is_staging_branch, validate_ref_name

DEFAULT_TEMPLATE = REVISION_TEMPLATE  # the name this module has always exported
RESERVED = {"main", "best", "final", "latest"}


def render_revision_name(template: str, *, step: int, tokens: int | None = None, epoch: float | None = None) -> str:
    """Fill a revision template; fields: step, tokens, tokens_b / tokens_m (billions / millions, rounded), epoch.

    `step-{step:07d}` → `step-0001200`; OLMo-style `step{step}-tokens{tokens_b}B` → `step1000-tokens4B`.

    Args:
        template: a `str.format` template.
        step: the training step.
        tokens: tokens seen (needed by templates using tokens, tokens_b, tokens_m).
        epoch: the epoch (0 when not given).

    Returns:
        The revision name, validated as a git branch name.

    Raises:
        HubConfigError: a field the template names that is unknown or not given, or a bad format spec.
        InvalidNameError: the name is reserved (`main`, `best`, `final`, `latest`) or not a valid branch name.
    """
    fields: dict[str, Any] = {"step": step, "epoch": epoch if epoch is not None else 0}
    if tokens is not None:
        fields.update(tokens=tokens, tokens_b=round(tokens / 1e9), tokens_m=round(tokens / 1e6))
    used = {name for _, name, _, _ in string.Formatter().parse(template) if name}
    unknown = sorted(used - {"step", "epoch", "tokens", "tokens_b", "tokens_m"})
    if unknown:
        raise HubConfigError(
            f"Revision template {template!r} uses unknown field(s) {', '.join(unknown)}; "
            "available: step, epoch, tokens, tokens_b, tokens_m"
        )
    missing = sorted(used - fields.keys())
    if missing:
        raise HubConfigError(
            f"Revision template {template!r} needs {', '.join(missing)}, which this checkpoint does not "
            "record; pass tokens=... (CLI: a Trainer run records num_input_tokens_seen) or choose "
            "another template"
        )
    try:
        name = template.format(**fields)
    except (ValueError, KeyError, IndexError) as e:
        raise HubConfigError(f"Revision template {template!r} cannot be filled: {e}") from e
    return validate_revision_name(name)


def validate_revision_name(name: str) -> str:
    if name in RESERVED:
        raise InvalidNameError("revision name", name, f"'{name}' is reserved (main, best, final, latest)")
    if is_staging_branch(name):
        raise InvalidNameError(
            "revision name",
            name,
            f"names starting with {STAGING_PREFIX!r} are hubckpt's staging branches, hidden from every listing",
        )
    return validate_ref_name(name, "revision name")


def check_template(template: str) -> str:
    """Fail early (at Publisher creation) on a template that can never give a valid name."""
    render_revision_name(template, step=1, tokens=10**9, epoch=1.0) if "tokens" in template else render_revision_name(
        template, step=1, epoch=1.0
    )
    if "{step" not in template and "{tokens" not in template:
        raise HubConfigError(
            f"Revision template {template!r} has no {{step}}: every checkpoint would get the same name"
        )
    return template
