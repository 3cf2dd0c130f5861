"""Metric charts as inline SVG (no JavaScript, nothing vendored): one line chart per metric over steps,
with the `best` and `final` revisions marked."""

from __future__ import annotations

import math
from dataclasses import dataclass
from html import escape

from markupsafe import Markup

WIDTH, HEIGHT = 420, 220
_LEFT, _RIGHT, _TOP, _BOTTOM = 56, 14, 14, 34
# Per-point hover titles make the SVG heavy; past this many points only the marked ones get them.
_TITLED_POINTS = 200


@dataclass(frozen=True)
class Point:
    step: float
    value: float
    revision: str


def _fmt(value: float) -> str:
    return f"{value:.4g}"


def _ticks(low: float, high: float, count: int = 4) -> list[float]:
    """Round tick values covering [low, high]."""
    if high <= low:
        return [low]
    raw = (high - low) / count
    magnitude = 10 ** math.floor(math.log10(raw))
    step = next(m * magnitude for m in (1, 2, 2.5, 5, 10) if m * magnitude >= raw)
    first = math.ceil(low / step) * step
    ticks, t = [], first
    while t <= high + step * 1e-9:
        ticks.append(round(t, 12))
        t += step
    return ticks


def metric_chart(metric: str, points: list[Point], marks: dict[str, str]) -> Markup:
    """An SVG line chart of `metric`; `marks` maps revision name → label ('best', 'final') to circle."""
    points = sorted((p for p in points if math.isfinite(p.value)), key=lambda p: p.step)
    title = escape(metric)
    if not points:
        return Markup("")
    xs = [p.step for p in points]
    ys = [p.value for p in points]
    x0, x1 = min(xs), max(xs)
    y0, y1 = min(ys), max(ys)
    if x1 == x0:
        x0, x1 = x0 - 1, x1 + 1
    if y1 == y0:
        pad = abs(y0) * 0.05 or 1.0
        y0, y1 = y0 - pad, y1 + pad
    else:  # room for the marks' labels above the highest and below the lowest point
        pad = (y1 - y0) * 0.1
        y0, y1 = y0 - pad, y1 + pad
    plot_w, plot_h = WIDTH - _LEFT - _RIGHT, HEIGHT - _TOP - _BOTTOM

    def sx(x: float) -> float:
        return _LEFT + (x - x0) / (x1 - x0) * plot_w

    def sy(y: float) -> float:
        return _TOP + (1 - (y - y0) / (y1 - y0)) * plot_h

    parts = [
        f'<svg class="chart" role="img" aria-label="{title} over training steps" viewBox="0 0 {WIDTH} {HEIGHT}" '
        f'width="{WIDTH}" height="{HEIGHT}" xmlns="http://www.w3.org/2000/svg" data-metric="{title}">',
        f"<title>{title} over steps</title>",
    ]
    for t in _ticks(y0, y1):
        y = sy(t)
        parts.append(
            f'<line class="grid" x1="{_LEFT}" x2="{WIDTH - _RIGHT}" y1="{y:.1f}" y2="{y:.1f}"/>'
            f'<text class="tick" x="{_LEFT - 6}" y="{y + 4:.1f}" text-anchor="end">{_fmt(t)}</text>'
        )
    for t in _ticks(x0, x1, 5):
        x = sx(t)
        parts.append(
            f'<line class="axis" x1="{x:.1f}" x2="{x:.1f}" y1="{HEIGHT - _BOTTOM}" y2="{HEIGHT - _BOTTOM + 4}"/>'
            f'<text class="tick" x="{x:.1f}" y="{HEIGHT - _BOTTOM + 16}" text-anchor="middle">{_fmt(t)}</text>'
        )
    parts.append(
        f'<line class="axis" x1="{_LEFT}" x2="{WIDTH - _RIGHT}" y1="{HEIGHT - _BOTTOM}" y2="{HEIGHT - _BOTTOM}"/>'
    )
    parts.append(f'<text class="label" x="{WIDTH - _RIGHT}" y="{HEIGHT - 4}" text-anchor="end">step</text>')
    coords = " ".join(f"{sx(p.step):.1f},{sy(p.value):.1f}" for p in points)
    parts.append(f'<polyline class="line" points="{coords}"/>')
    if len(points) <= _TITLED_POINTS:
        for p in points:
            parts.append(
                f'<circle class="pt" cx="{sx(p.step):.1f}" cy="{sy(p.value):.1f}" r="2.5">'
                f"<title>{escape(p.revision)}: step {_fmt(p.step)}, {title} {_fmt(p.value)}</title></circle>"
            )
    by_name = {p.revision: p for p in points}
    for name, label in marks.items():
        point = by_name.get(name)
        if point is None:
            continue
        x, y = sx(point.step), sy(point.value)
        anchor = "end" if x > WIDTH - 90 else "start"
        dx = -8 if anchor == "end" else 8
        dy = -8 if label.startswith("best") else 14
        ty = min(max(y + dy, _TOP + 10), HEIGHT - _BOTTOM - 4)
        parts.append(
            f'<g class="mark mark-{escape(label.split()[0])}" data-label="{escape(label)}" '
            f'data-revision="{escape(name)}">'
            f'<circle cx="{x:.1f}" cy="{y:.1f}" r="5"><title>{escape(label)}: {escape(name)}, step '
            f"{_fmt(point.step)}, {title} {_fmt(point.value)}</title></circle>"
            f'<text x="{x + dx:.1f}" y="{ty:.1f}" text-anchor="{anchor}">{escape(label)} {_fmt(point.value)}</text></g>'
        )
    parts.append("</svg>")
    return Markup("".join(parts))
