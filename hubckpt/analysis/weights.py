"""How far weights move during training: drift from a reference revision, and norms, per tensor and layer.

Drift of a tensor is the relative Frobenius norm of the difference, `|W_r - W_ref|_F / |W_ref|_F`; a
layer's drift pools its tensors, `sqrt(sum |dW|^2) / sqrt(sum |W_ref|^2)`. A tensor whose reference is
all zeros (e.g. zero-initialised biases) has no relative drift: NaN (`null` in JSON) for the tensor,
while its layer's pooled value stays defined.

The core (`DriftTracker`) works on any tensor source: a `dict` of tensors, a `state_dict()`, or an
object with `keys()` and `get_tensor(name)` such as `hubckpt.open_revision(...)` or a safetensors
`safe_open` handle. `weight_drift(repo_id, ...)` reads revisions through `open_revision`, so only the
selected tensors' bytes are downloaded (HTTP Range reads), never whole checkpoints.
"""

from __future__ import annotations

import fnmatch
import logging
import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from ..errors import AnalysisError

logger = logging.getLogger(__name__)

_BLOCK = re.compile(
    r"^(.*?\.\d+)\."
)  # the first numbered component: transformer.h.3.attn.c_attn.weight -> transformer.h.3


def layer_of(name: str) -> str:
    """The layer a parameter belongs to: its numbered block (`transformer.h.3`) if it has one, else its
    module (`transformer.wte` for `transformer.wte.weight`)."""
    m = _BLOCK.match(name)
    if m:
        return m.group(1)
    return name.rsplit(".", 1)[0] if "." in name else name


def _keys(source: Any) -> list[str]:
    return list(source.keys())


def _get(source: Any, name: str) -> torch.Tensor:
    return source.get_tensor(name) if hasattr(source, "get_tensor") else source[name]


def _dtype_of(source: Any, name: str) -> torch.dtype | None:
    """The dtype without reading the tensor where the source knows it (lazy handles), else None."""
    if isinstance(source, Mapping):
        t = source[name]
        return t.dtype if isinstance(t, torch.Tensor) else None
    dtype = getattr(source, "dtype", None)  # hubckpt.open_revision: from the safetensors header
    if callable(dtype):
        try:
            value = dtype(name)
        except (KeyError, ValueError, TypeError):
            return None
        return value if isinstance(value, torch.dtype) else None
    return None


def select_keys(available: Sequence[str], keys: Sequence[str] | None = None, prefix: str | None = None) -> list[str]:
    """Names from `available` matching `keys` (exact names or shell patterns such as `*.attn.*`) and
    `prefix`; all of them when neither is given. An exact name that does not exist is an error."""
    chosen = [k for k in available if prefix is None or k.startswith(prefix)]
    if keys:
        wanted = []
        for pattern in keys:
            hits = [k for k in chosen if fnmatch.fnmatchcase(k, pattern)]
            if not hits:
                raise AnalysisError(f"No tensor matches {pattern!r}; some names: {', '.join(list(available)[:5])}...")
            wanted.extend(hits)
        chosen = list(dict.fromkeys(wanted))
    return chosen


def relative_drift(w: torch.Tensor, ref: torch.Tensor) -> float:
    """`|w - ref|_F / |ref|_F` (NaN when `ref` is all zeros)."""
    if w.shape != ref.shape:
        raise AnalysisError(f"shapes differ: {tuple(w.shape)} vs reference {tuple(ref.shape)}")
    ref_norm = float(torch.linalg.vector_norm(ref.double()))
    diff = float(torch.linalg.vector_norm(w.double() - ref.double()))
    if ref_norm == 0.0:
        return 0.0 if diff == 0.0 else math.nan
    return diff / ref_norm


@dataclass
class DriftResult:
    """Drift and norms per revision, in the order revisions were added."""

    reference: str
    revisions: list[str] = field(default_factory=list)
    steps: list[int | None] = field(default_factory=list)
    parameters: dict[str, list[float]] = field(default_factory=dict)  # relative drift per tensor
    layers: dict[str, list[float]] = field(default_factory=dict)  # pooled relative drift per layer
    norms: dict[str, list[float]] = field(default_factory=dict)  # Frobenius norm per tensor
    layer_norms: dict[str, list[float]] = field(default_factory=dict)  # Frobenius norm per layer
    bytes_received: int = 0  # over the network, when read through open_revision (headers included)

    def to_json(self) -> dict[str, Any]:
        def clean(d: dict[str, list[float]]) -> dict[str, list[float | None]]:
            return {k: [None if math.isnan(v) else v for v in vs] for k, vs in d.items()}

        return {
            "reference": self.reference,
            "revisions": self.revisions,
            "steps": self.steps,
            "parameters": clean(self.parameters),
            "layers": clean(self.layers),
            "norms": clean(self.norms),
            "layer_norms": clean(self.layer_norms),
            "bytes_received": self.bytes_received,
        }


class DriftTracker:
    """Drift of successive tensor sources from one reference source.

    Only the selected tensors of the reference are kept (in memory, as read); each `add()` reads the
    same tensors of one revision, compares them and lets them go.
    """

    def __init__(
        self,
        reference: Any,
        *,
        name: str = "reference",
        keys: Sequence[str] | None = None,
        prefix: str | None = None,
        floating_only: bool = True,
    ) -> None:
        names = select_keys(_keys(reference), keys, prefix)
        self.ref: dict[str, torch.Tensor] = {}
        for k in names:
            dtype = _dtype_of(reference, k)
            if floating_only and dtype is not None and not dtype.is_floating_point:
                continue
            t = _get(reference, k)
            if floating_only and not t.dtype.is_floating_point:
                continue
            self.ref[k] = t.detach().to("cpu")
        if not self.ref:
            raise AnalysisError("No floating-point tensors selected for drift.")
        self._ref_norm = {k: float(torch.linalg.vector_norm(t.double())) for k, t in self.ref.items()}
        self._layer_ref_sq: dict[str, float] = {}
        for k, n in self._ref_norm.items():
            self._layer_ref_sq[layer_of(k)] = self._layer_ref_sq.get(layer_of(k), 0.0) + n * n
        self.result = DriftResult(reference=name)

    @property
    def keys(self) -> list[str]:
        return list(self.ref)

    def add(self, name: str, source: Any, step: int | None = None) -> None:
        """Compare `source` (same tensor names as the reference) and append one value per series."""
        available = set(_keys(source))
        missing = [k for k in self.ref if k not in available]
        if missing:
            raise AnalysisError(f"{name} lacks tensors of the reference: {', '.join(missing[:5])}.")
        res = self.result
        res.revisions.append(name)
        res.steps.append(step)
        diff_sq: dict[str, float] = {}
        norm_sq: dict[str, float] = {}
        for k, ref in self.ref.items():
            w = _get(source, k).detach().to("cpu")
            if w.shape != ref.shape:
                raise AnalysisError(f"{name}: {k} has shape {tuple(w.shape)}, the reference {tuple(ref.shape)}.")
            d = float(torch.linalg.vector_norm(w.double() - ref.double()))
            n = float(torch.linalg.vector_norm(w.double()))
            ref_n = self._ref_norm[k]
            res.parameters.setdefault(k, []).append(d / ref_n if ref_n else (0.0 if d == 0 else math.nan))
            res.norms.setdefault(k, []).append(n)
            lay = layer_of(k)
            diff_sq[lay] = diff_sq.get(lay, 0.0) + d * d
            norm_sq[lay] = norm_sq.get(lay, 0.0) + n * n
        for lay, ref_sq in self._layer_ref_sq.items():
            ref_n = math.sqrt(ref_sq)
            d = math.sqrt(diff_sq[lay])
            res.layers.setdefault(lay, []).append(d / ref_n if ref_n else (0.0 if d == 0 else math.nan))
            res.layer_norms.setdefault(lay, []).append(math.sqrt(norm_sq[lay]))


def drift_over(
    sources: Iterable[tuple[str, Any]],
    *,
    reference: Any | None = None,
    reference_name: str | None = None,
    keys: Sequence[str] | None = None,
    prefix: str | None = None,
    steps: Sequence[int | None] | None = None,
) -> DriftResult:
    """Drift of each `(name, source)` from `reference` (default: the first source)."""
    tracker: DriftTracker | None = None
    if reference is not None:
        tracker = DriftTracker(reference, name=reference_name or "reference", keys=keys, prefix=prefix)
    for i, (name, source) in enumerate(sources):
        if tracker is None:
            tracker = DriftTracker(source, name=name, keys=keys, prefix=prefix)
        tracker.add(name, source, steps[i] if steps is not None else None)
    if tracker is None:
        raise AnalysisError("No revisions to compare.")
    return tracker.result


def weight_drift(
    repo_id: str,
    revisions: Sequence[Any] | None = None,
    *,
    reference: Any | None = None,
    keys: Sequence[str] | None = None,
    prefix: str | None = None,
    hub: Any = None,
    token: str | None = None,
) -> DriftResult:
    """Drift of `revisions` of `repo_id` (names or `RevisionInfo`; default every live revision in step
    order) from `reference` (default the first), reading only the selected tensors lazily."""
    from ..load import list_revisions, open_revision, resolve_revision

    if revisions is None:
        infos = list_revisions(repo_id, hub=hub, token=token)
    else:
        infos = [r if hasattr(r, "commit") else resolve_revision(repo_id, r, hub=hub, token=token) for r in revisions]
    if not infos:
        raise AnalysisError(f"{repo_id} has no revisions to compare.")
    ref_info = (
        infos[0]
        if reference is None
        else (reference if hasattr(reference, "commit") else resolve_revision(repo_id, reference, hub=hub, token=token))
    )
    with open_revision(repo_id, ref_info.commit, hub=hub, token=token) as ref:
        tracker = DriftTracker(ref, name=ref_info.name, keys=keys, prefix=prefix)
        received = int(getattr(ref, "bytes_received", 0))
    for info in infos:
        if info.commit == ref_info.commit:  # the reference itself: its tensors are in memory already
            tracker.add(info.name, tracker.ref, info.step)
            continue
        with open_revision(repo_id, info.commit, hub=hub, token=token) as handle:
            tracker.add(info.name, handle, info.step)
            received += int(getattr(handle, "bytes_received", 0))
        logger.info("drift of %s computed (%d tensors)", info.name, len(tracker.keys))
    tracker.result.bytes_received = received
    return tracker.result
