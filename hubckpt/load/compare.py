"""Compare two revisions tensor by tensor with lazy reads: which tensors changed, and by how much."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from ..hub.select import Hub
from .lazy import LazyRevision
from .loaders import open_revision


@dataclass
class TensorDiff:
    """How one tensor moved from revision A to B (norms in float64)."""

    name: str
    shape: tuple[int, ...]
    dtype: str
    norm_a: float
    norm_b: float
    diff_norm: float  # ||B - A||
    max_abs: float  # max |B - A|

    @property
    def relative(self) -> float:
        """||B - A|| / ||A|| (inf when A is zero and B is not)."""
        if self.diff_norm == 0:
            return 0.0
        return self.diff_norm / self.norm_a if self.norm_a else math.inf

    @property
    def changed(self) -> bool:
        return self.diff_norm != 0


@dataclass
class RevisionDiff:
    """The comparison of two revisions."""

    a: str
    b: str
    tensors: list[TensorDiff] = field(default_factory=list)  # tensors in both with the same shape and dtype
    only_a: list[str] = field(default_factory=list)
    only_b: list[str] = field(default_factory=list)
    reshaped: list[tuple[str, str, str]] = field(default_factory=list)  # name, "F32 4x4" in A, in B
    same_files: int = 0  # weight files identical by sha256: their tensors were not read
    bytes_received: int = 0

    @property
    def changed(self) -> list[TensorDiff]:
        """Changed tensors, most changed (relative) first."""
        return sorted((t for t in self.tensors if t.changed), key=lambda t: (-t.relative, t.name))

    @property
    def unchanged(self) -> list[str]:
        return sorted(t.name for t in self.tensors if not t.changed)


def _describe(meta) -> str:
    return f"{meta.dtype} {'x'.join(map(str, meta.shape)) or 'scalar'}"


def compare_revisions(a: LazyRevision, b: LazyRevision) -> RevisionDiff:
    """Compare two opened revisions; tensors in files identical in both (same sha256) are not read."""
    import torch

    out = RevisionDiff(f"{a.rev.repo_id}@{a.info.name}", f"{b.rev.repo_id}@{b.info.name}")
    ta, tb = a.tensors(), b.tensors()
    out.only_a = sorted(set(ta) - set(tb))
    out.only_b = sorted(set(tb) - set(ta))
    same = {f for f in a.files if a.rev.files.sha256(f) and a.rev.files.sha256(f) == b.rev.files.sha256(f)}
    out.same_files = len(same)
    for name in sorted(set(ta) & set(tb)):
        ma, mb = ta[name], tb[name]
        if (ma.dtype, ma.shape) != (mb.dtype, mb.shape):
            out.reshaped.append((name, _describe(ma), _describe(mb)))
            continue
        if ma.file in same and mb.file == ma.file and (ma.start, ma.end) == (mb.start, mb.end):
            x = None
        else:
            x = a.get_tensor(name).to(torch.float64)
            y = b.get_tensor(name).to(torch.float64)
        if x is None:
            norm = float("nan")  # not read: identical file
            out.tensors.append(TensorDiff(name, ma.shape, ma.dtype, norm, norm, 0.0, 0.0))
            continue
        delta = y - x
        out.tensors.append(
            TensorDiff(
                name,
                ma.shape,
                ma.dtype,
                float(x.norm()),
                float(y.norm()),
                float(delta.norm()),
                float(delta.abs().max()) if delta.numel() else 0.0,
            )
        )
    out.bytes_received = a.bytes_received + (b.bytes_received if b.rev.reader is not a.rev.reader else 0)
    return out


def diff_revisions(
    repo_id: str,
    a: str,
    b: str,
    *,
    repo_b: str | None = None,
    hub: Hub | str | None = None,
    token: str | bool | None = None,
) -> RevisionDiff:
    """Compare revision `a` of `repo_id` with revision `b` (of `repo_b`, default the same repo), lazily."""
    with (
        open_revision(repo_id, a, hub=hub, token=token) as ra,
        open_revision(repo_b or repo_id, b, hub=hub, token=token) as rb,
    ):
        return compare_revisions(ra, rb)
