"""Model cards: per-revision and repo cards rendered from the Jinja templates in `model_cards/`.

Templates render with `StrictUndefined`, so a misspelt variable fails loudly instead of printing
nothing. The YAML metadata is built with `huggingface_hub.ModelCardData`, so it is what the Hub
validates (`library_name`, `license`, `base_model`, `datasets`, `tags`, `model-index` with this
revision's eval results). Users can point `CardOptions.template_dir` at their own templates
(`revision.md.j2`, `repo.md.j2`; the same variables are available).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .revisions import RevisionIndex, RevisionInfo

REVISION_TEMPLATE = "revision.md.j2"
REPO_TEMPLATE = "repo.md.j2"


@dataclass
class CardOptions:
    """What goes into the cards' metadata beyond what the checkpoints record."""
    license: str | None = None
    base_model: str | None = None
    datasets: list[str] = field(default_factory=list)
    tags: list[str] = field(default_factory=list)
    language: str | None = None
    library_name: str | None = None  # default: "transformers" when the revision has a config.json
    task: str = "text-generation"  # model-index task type for eval results
    dataset_name: str = "evaluation set"
    template_dir: Path | None = None


def builtin_template_dir() -> Path:
    """`model_cards/`: shipped in the wheel as `hubckpt.model_cards`, or the top-level folder of a checkout."""
    checkout = Path(__file__).resolve().parent.parent / "model_cards"
    if (checkout / REVISION_TEMPLATE).is_file():
        return checkout
    from importlib.resources import files

    return Path(str(files("hubckpt.model_cards")))


def _environment(template_dir: Path | None):
    import jinja2

    loaders = []
    if template_dir is not None:
        loaders.append(jinja2.FileSystemLoader(str(template_dir)))
    loaders.append(jinja2.FileSystemLoader(str(builtin_template_dir())))
    return jinja2.Environment(loader=jinja2.ChoiceLoader(loaders), undefined=jinja2.StrictUndefined,
                              keep_trailing_newline=True, autoescape=False)


def is_quality_metric(name: str) -> bool:
    """Worth showing as a result (loss, accuracy...), unlike throughput and timing counters."""
    return not name.endswith(("_runtime", "_per_second", "flos")) and name not in ("epoch", "step")


def _eval_metrics(metrics: dict[str, float]) -> dict[str, float]:
    return {k: v for k, v in metrics.items() if k.startswith(("eval_", "val", "test")) and is_quality_metric(k)}


def _yaml(options: CardOptions, *, has_config: bool, repo_id: str, eval_metrics: dict[str, float]) -> str:
    from huggingface_hub import EvalResult, ModelCardData

    results = [EvalResult(task_type=options.task, dataset_type="custom", dataset_name=options.dataset_name,
                          metric_type=name, metric_value=value, metric_name=name)
               for name, value in sorted(eval_metrics.items())]
    data = ModelCardData(
        library_name=options.library_name or ("transformers" if has_config else None),
        license=options.license, base_model=options.base_model, datasets=options.datasets or None,
        language=options.language, tags=sorted({"hubckpt", "checkpoint", *options.tags}),
        model_name=repo_id.split("/")[-1] if results else None, eval_results=results or None)
    return data.to_yaml()


def human_size(size: float) -> str:
    """1234567 → '1.2 MB' (decimal units, as the Hub shows sizes)."""
    value = float(size)
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if value < 1000 or unit == "TB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1000
    return f"{value:.1f} TB"


def render_revision_card(*, repo_id: str, repo_url: str, info: RevisionInfo, previous: str | None, monitor: str | None,
                         mode: str, files: list[str], options: CardOptions) -> str:
    """The README.md of one revision."""
    eval_metrics = _eval_metrics(info.metrics)
    env = _environment(options.template_dir)
    return env.get_template(REVISION_TEMPLATE).render(
        card_yaml=_yaml(options, has_config="config.json" in files, repo_id=repo_id, eval_metrics=eval_metrics).strip(),
        repo_id=repo_id, repo_url=repo_url, revision=info.name, step=info.step, epoch=info.epoch, tokens=info.tokens,
        metrics=info.metrics, final=info.final, source_format=info.source_format or "unknown", date=info.date or "",
        previous=previous, monitor=monitor, mode=mode,
        has_training_state=any(f.startswith("training_state/") for f in files))


def render_repo_card(*, repo_id: str, repo_url: str, index: RevisionIndex, options: CardOptions,
                     chart: str | None, has_config: bool) -> str:
    """The README.md on `main`: the run and a table of every live revision."""
    live = index.live()
    metric_names = sorted({m for r in live for m in r.metrics if m in _table_metrics(live)})
    rows: list[dict[str, Any]] = [dict(name=r.name, step=r.step, tokens=r.tokens, metrics=r.metrics, size_h=human_size(r.size),
                                       tags=r.tags) for r in live]
    best = index.get(index.best) if index.best else None
    eval_metrics = _eval_metrics(best.metrics if best else {})
    env = _environment(options.template_dir)
    return env.get_template(REPO_TEMPLATE).render(
        card_yaml=_yaml(options, has_config=has_config, repo_id=repo_id, eval_metrics=eval_metrics).strip(),
        repo_id=repo_id, repo_url=repo_url, revisions=rows, pruned=len(index.revisions) - len(live),
        final=index.final, best=index.best, monitor=index.monitor, mode=index.mode, chart=chart,
        metric_names=metric_names, example=(index.best or (live[-1].name if live else "main")))


def _table_metrics(revisions: list[RevisionInfo], limit: int = 4) -> list[str]:
    """The few metrics worth a column: eval metrics first, then loss, by how many revisions have them."""
    counts: dict[str, int] = {}
    for r in revisions:
        for m in r.metrics:
            if is_quality_metric(m) and m not in ("learning_rate", "grad_norm"):
                counts[m] = counts.get(m, 0) + 1
    ranked = sorted(counts, key=lambda m: (not m.startswith("eval_"), m not in ("loss", "train_loss"), -counts[m], m))
    return ranked[:limit]


def metrics_chart_svg(index: RevisionIndex, width: int = 640, height: int = 320) -> str | None:
    """A small SVG line chart of the table's metrics over steps (no plotting dependency)."""
    live = [r for r in index.live() if r.step is not None]
    names = _table_metrics(live, limit=3)
    series = {n: [(r.step, r.metrics[n]) for r in live if n in r.metrics] for n in names}
    series = {n: pts for n, pts in series.items() if len(pts) >= 2}
    if not series:
        return None
    steps = [s for pts in series.values() for s, _ in pts]
    values = [v for pts in series.values() for _, v in pts]
    x0, x1 = min(steps), max(steps) or 1
    y0, y1 = min(values), max(values)
    if y1 == y0:
        y1 = y0 + 1
    pad = 40

    def x(step: float) -> float:
        return pad + (step - x0) / ((x1 - x0) or 1) * (width - 2 * pad)

    def y(value: float) -> float:
        return height - pad - (value - y0) / (y1 - y0) * (height - 2 * pad)

    colors = ["#1f77b4", "#d62728", "#2ca02c"]
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" font-family="sans-serif" font-size="12">',
             f'<rect width="{width}" height="{height}" fill="white"/>',
             f'<line x1="{pad}" y1="{height - pad}" x2="{width - pad}" y2="{height - pad}" stroke="#888"/>',
             f'<line x1="{pad}" y1="{pad}" x2="{pad}" y2="{height - pad}" stroke="#888"/>',
             f'<text x="{pad}" y="{height - 12}">step {x0}</text>',
             f'<text x="{width - pad}" y="{height - 12}" text-anchor="end">step {x1}</text>',
             f'<text x="4" y="{pad}">{y1:.4g}</text><text x="4" y="{height - pad}">{y0:.4g}</text>']
    for i, (name, pts) in enumerate(sorted(series.items())):
        color = colors[i % len(colors)]
        path = " ".join(f"{x(s):.1f},{y(v):.1f}" for s, v in pts)
        parts.append(f'<polyline fill="none" stroke="{color}" stroke-width="2" points="{path}"/>')
        parts.append(f'<text x="{width - pad}" y="{pad + 16 * i}" text-anchor="end" fill="{color}">{name}</text>')
    parts.append("</svg>")
    return "\n".join(parts) + "\n"
