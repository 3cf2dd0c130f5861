"""PNG figures: CKA heatmaps per layer, drift curves over steps, metric curves from the index.

Figures are drawn on matplotlib's Agg canvas through `matplotlib.figure.Figure` (never `pyplot`), so
nothing depends on a display or on global pyplot state, and concurrent callers cannot interfere.
Every function returns the path it wrote. matplotlib is the `analysis` extra: `pip install "hubckpt[analysis]"`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import AnalysisError
from ..extras import require

_MAX_TICKS = 12
_MAX_CURVES = 12
# Fixed metadata keep the files byte-identical across runs and matplotlib versions.
_PNG_META = {"Software": None}


def _figure(**kwargs: Any):
    require_matplotlib()
    from matplotlib.figure import Figure

    return Figure(**kwargs)


def require_matplotlib() -> None:
    """Plots need the `analysis` extra: say so in one line (MissingExtraError) when it is missing."""
    require("matplotlib", extra="analysis", feature="plots")


def _save(fig: Any, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, format="png", dpi=100, metadata=_PNG_META)
    return path


def _ticks(labels: Sequence[str]) -> tuple[list[int], list[str]]:
    every = max(1, math.ceil(len(labels) / _MAX_TICKS))
    idx = list(range(0, len(labels), every))
    return idx, [str(labels[i]) for i in idx]


def heatmap_scale(
    matrices: Sequence[np.ndarray], vmin: float | None = None, vmax: float | None = None
) -> tuple[float, float]:
    """The colour scale of heatmaps: `vmin` / `vmax` where given, else the data's own range.

    CKA between nearby checkpoints is often above 0.99 everywhere: on a fixed 0-1 scale that is one
    flat colour, so by default the scale spans the values there are.
    """
    values = np.concatenate([np.asarray(m, dtype=float).ravel() for m in matrices]) if matrices else np.array([])
    finite = values[np.isfinite(values)]
    lo = float(vmin) if vmin is not None else float(finite.min()) if finite.size else 0.0
    hi = float(vmax) if vmax is not None else float(finite.max()) if finite.size else 1.0
    if hi <= lo:  # one value everywhere: a small band around it
        pad = max(abs(hi) * 1e-3, 1e-6)
        lo, hi = lo - pad, hi + pad
    return lo, hi


def _decimals(lo: float, hi: float) -> int:
    """Decimals that tell apart values spread over [lo, hi] (0.991..0.999 needs 4, 0.97..1 needs 3, 0..1 needs 2)."""
    return int(min(6, max(2, math.ceil(-math.log10(hi - lo)) + 1)))


def _annotation_size(n: int) -> float | None:
    """Font size of the values written in the cells of an n x n heatmap; None when cells are too small."""
    return 7.0 if n <= 6 else 5.5 if n <= 10 else 4.5 if n <= 16 else None


def _heatmap(
    ax: Any,
    matrix: np.ndarray,
    labels: Sequence[str],
    scale: tuple[float, float],
    title: str,
    axis_label: str | None = None,
) -> Any:
    values = np.asarray(matrix, dtype=float)
    lo, hi = scale
    image = ax.imshow(values, vmin=lo, vmax=hi, cmap="magma", origin="upper", interpolation="nearest")
    idx, text = _ticks(labels)
    ax.set_xticks(idx, text, rotation=90, fontsize=7)
    ax.set_yticks(idx, text, fontsize=7)
    ax.set_title(title, fontsize=9)
    if axis_label:
        ax.set_xlabel(axis_label, fontsize=8)
        ax.set_ylabel(axis_label, fontsize=8)
    size = _annotation_size(max(values.shape))
    if size is not None:
        decimals = _decimals(lo, hi)
        for (row, col), value in np.ndenumerate(values):
            if not math.isfinite(value):
                continue
            light = (value - lo) / (hi - lo) > 0.6  # magma is light at the top of the scale: dark text there
            ax.text(
                col,
                row,
                f"{value:.{decimals}f}",
                ha="center",
                va="center",
                fontsize=size,
                color="black" if light else "white",
            )
    return image


def _colorbar(fig: Any, image: Any, axes: Any, scale: tuple[float, float], **kwargs: Any) -> None:
    from matplotlib.ticker import FormatStrFormatter

    bar = fig.colorbar(image, ax=axes, **kwargs)
    bar.ax.yaxis.set_major_formatter(FormatStrFormatter(f"%.{_decimals(*scale)}f"))  # no "1e-3 + 9.9e-1" offset


def cka_figure(
    cka: Mapping[str, np.ndarray],
    labels: Sequence[str],
    *,
    title: str = "Linear CKA between revisions",
    vmin: float | None = None,
    vmax: float | None = None,
    axis_label: str | None = None,
) -> Any:
    """The figure `plot_cka_heatmaps` saves (a `matplotlib.figure.Figure`)."""
    if not cka:
        raise AnalysisError("No similarity matrices to plot.")
    for layer, m in cka.items():
        if np.asarray(m).shape != (len(labels), len(labels)):
            raise AnalysisError(f"matrix of {layer} is {np.asarray(m).shape}, expected {len(labels)} x {len(labels)}")
    scale = heatmap_scale(list(cka.values()), vmin, vmax)
    n = len(cka)
    cols = min(n, 4)
    rows = math.ceil(n / cols)
    fig = _figure(figsize=(3.4 * cols + 0.8, 3.4 * rows + 0.6), layout="constrained")
    axes = np.atleast_1d(fig.subplots(rows, cols, squeeze=False)).ravel()
    image = None
    for ax, (layer, m) in zip(axes, cka.items()):
        image = _heatmap(ax, m, labels, scale, layer, axis_label)
    for ax in axes[n:]:
        ax.set_visible(False)
    _colorbar(fig, image, list(axes[:n]), scale, shrink=0.8)
    fig.suptitle(f"{title}\n{_span(scale)}")
    return fig


def _span(scale: tuple[float, float]) -> str:
    decimals = _decimals(*scale)
    return f"(colours span {scale[0]:.{decimals}f} to {scale[1]:.{decimals}f})"


def plot_cka_heatmaps(
    cka: Mapping[str, np.ndarray],
    labels: Sequence[str],
    path: str | Path,
    *,
    title: str = "Linear CKA between revisions",
    vmin: float | None = None,
    vmax: float | None = None,
    axis_label: str | None = None,
) -> Path:
    """One heatmap per layer (revision x revision), on a grid with one shared colour scale; `labels` name
    the revisions (e.g. their steps, with `axis_label="step"`).

    The colour scale spans the values there are unless `vmin` / `vmax` fix it; cells carry their
    values (up to 16 revisions), with as many decimals as it takes to tell them apart.
    """
    return _save(cka_figure(cka, labels, title=title, vmin=vmin, vmax=vmax, axis_label=axis_label), path)


def similarity_figure(
    matrix: np.ndarray,
    labels: Sequence[str],
    *,
    title: str,
    vmin: float | None = None,
    vmax: float | None = None,
    axis_label: str | None = None,
) -> Any:
    """The figure `plot_similarity_matrix` saves (a `matplotlib.figure.Figure`)."""
    scale = heatmap_scale([matrix], vmin, vmax)
    fig = _figure(figsize=(5.5, 4.8), layout="constrained")
    ax = fig.subplots()
    _colorbar(fig, _heatmap(ax, matrix, labels, scale, f"{title}\n{_span(scale)}", axis_label), ax, scale)
    return fig


def plot_similarity_matrix(
    matrix: np.ndarray,
    labels: Sequence[str],
    path: str | Path,
    *,
    title: str,
    vmin: float | None = None,
    vmax: float | None = None,
    axis_label: str | None = None,
) -> Path:
    """A single heatmap, e.g. layer x layer within one revision; scaled and annotated as `plot_cka_heatmaps`."""
    return _save(similarity_figure(matrix, labels, title=title, vmin=vmin, vmax=vmax, axis_label=axis_label), path)


def plot_curves(
    steps: Sequence[float | None],
    series: Mapping[str, Sequence[float | None]],
    path: str | Path,
    *,
    title: str,
    ylabel: str,
    xlabel: str = "step",
    logy: bool = False,
) -> Path:
    """Lines over steps, one per series (at most 12, the ones with the largest final value first)."""
    if not series:
        raise AnalysisError("No series to plot.")
    x = np.array([np.nan if s is None else float(s) for s in steps])
    if np.isnan(x).all():  # no steps recorded: plot against the position
        x, xlabel = np.arange(len(steps), dtype=float), "revision"

    def final(values: Sequence[float | None]) -> float:
        real = [v for v in values if v is not None and not math.isnan(v)]
        return real[-1] if real else -math.inf

    chosen = sorted(series.items(), key=lambda kv: -final(kv[1]))[:_MAX_CURVES]
    fig = _figure(figsize=(7.5, 4.5), layout="constrained")
    ax = fig.subplots()
    for name, values in chosen:
        y = np.array([np.nan if v is None else float(v) for v in values])
        if len(y) != len(x):
            raise AnalysisError(f"series {name} has {len(y)} values for {len(x)} steps")
        ax.plot(x, y, marker="o", markersize=3, linewidth=1.2, label=name)
    if logy:
        ax.set_yscale("log")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=10)
    ax.grid(True, alpha=0.3)
    extra = f" (+{len(series) - len(chosen)} more)" if len(series) > len(chosen) else ""
    ax.legend(fontsize=7, loc="best", title=f"{len(chosen)} shown{extra}" if extra else None, title_fontsize=7)
    return _save(fig, path)


def plot_drift(
    steps: Sequence[int | None],
    drift: Mapping[str, Sequence[float | None]],
    path: str | Path,
    *,
    reference: str = "the first revision",
) -> Path:
    """Relative drift curves `|W - W_ref| / |W_ref|` over steps."""
    return plot_curves(steps, drift, path, title=f"Weight drift from {reference}", ylabel="relative Frobenius distance")


def plot_metrics(records: Sequence[Any], path: str | Path, metrics: Sequence[str] | None = None) -> Path:
    """Metric curves over steps from index records (`RevisionInfo` or dicts with `step` and `metrics`)."""

    def get(r: Any, k: str) -> Any:
        return r.get(k) if isinstance(r, Mapping) else getattr(r, k, None)

    rows = sorted((r for r in records if get(r, "step") is not None), key=lambda r: get(r, "step"))
    names = list(metrics) if metrics else sorted({m for r in rows for m in (get(r, "metrics") or {})})
    series = {m: [(get(r, "metrics") or {}).get(m) for r in rows] for m in names}
    series = {
        m: [float(v) if isinstance(v, (int, float)) else None for v in vs]
        for m, vs in series.items()
        if any(isinstance(v, (int, float)) for v in vs)
    }
    if not series:
        raise AnalysisError("The revisions record no numeric metrics to plot.")
    # one panel per metric: losses and accuracies rarely share a scale
    chosen = list(series.items())[:_MAX_CURVES]
    x = np.array([float(get(r, "step")) for r in rows])
    fig = _figure(figsize=(7.5, 1.0 + 2.2 * len(chosen)), layout="constrained")
    axes = np.atleast_1d(fig.subplots(len(chosen), 1, sharex=True, squeeze=False)).ravel()
    for ax, (name, values) in zip(axes, chosen):
        y = np.array([np.nan if v is None else v for v in values])
        ax.plot(x, y, marker="o", markersize=3, linewidth=1.2)
        ax.set_ylabel(name)
        ax.grid(True, alpha=0.3)
    axes[-1].set_xlabel("step")
    fig.suptitle("Metrics over training", fontsize=10)
    return _save(fig, path)
