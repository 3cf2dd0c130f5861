"""Model cards: per-revision and repo cards rendered from the Jinja templates in `model_cards/`.

Templates render with `StrictUndefined`, so a misspelt variable fails loudly instead of printing
nothing. The YAML metadata is built with `huggingface_hub.ModelCardData`, so it is what the Hub
validates (`library_name`, `license`, `base_model`, `datasets`, `tags`, `model-index` with this
revision's eval results). Users can point `CardOptions.template_dir` at their own templates
(`revision.md.j2`, `repo.md.j2`; the same variables are available).

Everything that comes from a run (revision and metric names, values, repo ids) is escaped for where it
lands: the `md`, `code` and `url` filters for Markdown text, code spans and link targets, XML escaping in
the SVG chart. Links point at the hub the card is committed to: callers pass that target's `repo_url`
(render per target). Non-finite metrics are shown as NaN / inf, never dropped.
"""

from __future__ import annotations

import functools
import math
import shlex
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # annotations only: `hubckpt --help` imports this module (human_size), not the formats
    import jinja2

    from .formats.index import RevisionIndex, RevisionInfo

REVISION_TEMPLATE = "revision.md.j2"
REPO_TEMPLATE = "repo.md.j2"


@dataclass
class CardOptions:
    """What goes into the cards' metadata beyond what the checkpoints record.

    Pass it as `Publisher(..., card=CardOptions(...))` (also through `Checkpointer` and the Trainer
    callback); every field is optional.

    Attributes:
        license: the Hub license id (`apache-2.0`, `mit`...).
        base_model: the repo id this model was fine-tuned from.
        datasets: dataset repo ids the model was trained on.
        tags: extra Hub tags.
        language: language code(s) of the model.
        library_name: the Hub's library name (default: `transformers` when the revision has a config.json).
        task: the model-index task type under which eval metrics are reported.
        dataset_name: the name the model-index gives the evaluation set.
        template_dir: a folder with your own `revision.md.j2` / `repo.md.j2` (Jinja, strict) instead of
            the built-in ones.
    """

    license: str | None = None
    base_model: str | None = None
    datasets: list[str] = field(default_factory=list)
    tags: list[str] = field(default_factory=list)
    language: str | None = None
    library_name: str | None = None  # default: "transformers" when the revision has a config.json
    task: str = "text-generation"  # model-index task type for eval results
    dataset_name: str = "evaluation set"
    template_dir: Path | None = None


# The built-in templates: package data of `hubckpt`, in its folder `model_cards` (a link to the top-level
# model_cards/ in a checkout; a real folder in the sdist and the wheel).
TEMPLATES_PACKAGE = ("hubckpt", "model_cards")


@functools.lru_cache(maxsize=8)
def _environment(template_dir: Path | None) -> jinja2.Environment:
    """One jinja environment per template folder, kept: its compiled templates are reused by every card
    (compiling them again took ~15-20 ms per card); jinja reloads a template whose file changed."""
    import jinja2

    loaders: list[jinja2.BaseLoader] = []
    if template_dir is not None:
        loaders.append(jinja2.FileSystemLoader(str(template_dir)))
    # PackageLoader reads through the package's loader (a folder, or a zip's entries), never a guessed path
    loaders.append(jinja2.PackageLoader(*TEMPLATES_PACKAGE))
    env = jinja2.Environment(
        loader=jinja2.ChoiceLoader(loaders),
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
        autoescape=False,
    )
    env.filters.update(md=md_text, code=md_code, url=url_part, num=format_number, shell=shlex.quote)
    return env


CARD_MARKER = "<!-- hubckpt card -->"


def is_hubckpt_card(text: str) -> bool:
    """Was this README written by hubckpt (so it may be rewritten)? Older cards lack the marker but credit hubckpt."""
    return CARD_MARKER in text or "by [hubckpt](" in text or "Published with [hubckpt](" in text


_MD_SPECIAL = {c: f"\\{c}" for c in "\\`*_{}[]()#+!|~>"}


def md_text(value: object) -> str:
    """Plain text for Markdown (also inside table cells): HTML and Markdown syntax characters escaped."""
    text = str(value).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    text = "".join(_MD_SPECIAL.get(c, c) for c in text if c not in "\r\n")
    return text


def md_code(value: object) -> str:
    """A Markdown code span that holds `value` whatever it contains (backticks, pipes in tables)."""
    text = str(value).replace("\r", " ").replace("\n", " ").replace("|", "\\|")
    fence = "`"
    while fence in text:
        fence += "`"
    pad = " " if text.startswith("`") or text.endswith("`") else ""
    return f"{fence}{pad}{text}{pad}{fence}"


def url_part(value: object) -> str:
    """A revision or repo name inside a link target."""
    from urllib.parse import quote

    return quote(str(value), safe="/")


def format_number(value: object, spec: str = ".4g") -> str:
    """A metric value for a card: NaN / inf / -inf spelled out; "—" only when there is no value."""
    if value is None:
        return "—"
    if isinstance(value, float) and not math.isfinite(value):
        return "NaN" if math.isnan(value) else ("inf" if value > 0 else "-inf")
    if isinstance(value, (int, float)):
        return format(value, spec)
    return md_text(value)


def is_quality_metric(name: str) -> bool:
    """Worth showing as a result (loss, accuracy...), unlike throughput and timing counters."""
    return not name.endswith(("_runtime", "_per_second", "flos")) and name not in ("epoch", "step")


def _eval_metrics(metrics: dict[str, float]) -> dict[str, float]:
    return {k: v for k, v in metrics.items() if k.startswith(("eval_", "val", "test")) and is_quality_metric(k)}


def _yaml(options: CardOptions, *, has_config: bool, repo_id: str, eval_metrics: dict[str, float]) -> str:
    from huggingface_hub import EvalResult, ModelCardData

    results = [
        EvalResult(
            task_type=options.task,
            dataset_type="custom",
            dataset_name=options.dataset_name,
            metric_type=name,
            metric_value=value,
            metric_name=name,
        )
        for name, value in sorted(eval_metrics.items())
        if math.isfinite(value)
    ]
    data = ModelCardData(
        library_name=options.library_name or ("transformers" if has_config else None),
        license=options.license,
        base_model=options.base_model,
        datasets=options.datasets or None,
        language=options.language,
        tags=sorted({"hubckpt", "checkpoint", *options.tags}),
        model_name=repo_id.split("/")[-1] if results else None,
        eval_results=results or None,
    )
    return data.to_yaml()


def human_size(size: float) -> str:
    """1234567 → '1.2 MB' (decimal units, as the Hub shows sizes)."""
    value = float(size)
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if value < 1000 or unit == "TB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1000
    return f"{value:.1f} TB"


def render_revision_card(
    *,
    repo_id: str,
    repo_url: str,
    info: RevisionInfo,
    previous: str | None,
    monitor: str | None,
    mode: str,
    files: list[str],
    options: CardOptions,
) -> str:
    """The README.md of one revision."""
    eval_metrics = _eval_metrics(info.metrics)
    env = _environment(options.template_dir)
    return env.get_template(REVISION_TEMPLATE).render(
        card_yaml=_yaml(options, has_config="config.json" in files, repo_id=repo_id, eval_metrics=eval_metrics).strip(),
        repo_id=repo_id,
        repo_url=repo_url,
        revision=info.name,
        step=info.step,
        epoch=info.epoch,
        tokens=info.tokens,
        metrics=info.metrics,
        final=info.final,
        source_format=info.source_format or "unknown",
        date=info.date or "",
        previous=previous,
        monitor=monitor,
        mode=mode,
        has_config="config.json" in files,
        marker=CARD_MARKER,
        weights_file=_weights_file(files),
        has_training_state=any(f.startswith("training_state/") for f in files),
    )


def _weights_file(files: list[str]) -> str:
    return "model.safetensors.index.json" if "model.safetensors.index.json" in files else "model.safetensors"


def render_repo_card(
    *, repo_id: str, repo_url: str, index: RevisionIndex, options: CardOptions, chart: str | None, has_config: bool
) -> str:
    """The README.md on `main`: the run and a table of every live revision."""
    live = index.live()
    metric_names = sorted({m for r in live for m in r.metrics if m in table_metrics(live)})
    rows: list[dict[str, Any]] = [
        dict(name=r.name, step=r.step, tokens=r.tokens, metrics=r.metrics, size_h=human_size(r.size), tags=r.tags)
        for r in live
    ]
    # The model-index describes what `main` holds: the final checkpoint's weights (none before there is one).
    final = index.get(index.final) if index.final else None
    eval_metrics = _eval_metrics(final.metrics if final else {})
    env = _environment(options.template_dir)
    return env.get_template(REPO_TEMPLATE).render(
        card_yaml=_yaml(options, has_config=has_config, repo_id=repo_id, eval_metrics=eval_metrics).strip(),
        repo_id=repo_id,
        repo_url=repo_url,
        revisions=rows,
        pruned=len(index.revisions) - len(live),
        final=index.final,
        best=index.best,
        monitor=index.monitor,
        mode=index.mode,
        chart=chart,
        metric_names=metric_names,
        example=(index.best or (live[-1].name if live else "main")),
        has_config=has_config,
        marker=CARD_MARKER,
        user_tags=dict(sorted(index.tags.items())),
    )


def retarget_card(text: str, *, src_url: str, dst_url: str, src_repo_id: str, dst_repo_id: str) -> str:
    """A card copied to another hub (or repo), its links and snippets pointed there; its metadata unchanged.

    Used by `hubckpt.mirror`: the YAML front matter is kept byte for byte (what the run's publisher put
    there: license, base model, eval results...); in the text, links to `src_url` go to `dst_url`, and
    when the repo id changes, the id in code snippets (JSON-quoted, shell-quoted, Markdown-escaped or bare).
    """
    import json
    import re

    front, body = "", text
    if text.startswith("---\n") and (end := text.find("\n---\n", 4)) != -1:
        front, body = text[: end + 5], text[end + 5 :]
    body = body.replace(src_url.rstrip("/"), dst_url.rstrip("/"))
    if src_repo_id != dst_repo_id:
        for quote in (json.dumps, shlex.quote, md_text):
            if quote(src_repo_id) != src_repo_id:  # bare ids: below, only where a whole id stands
                body = body.replace(quote(src_repo_id), quote(dst_repo_id))
        body = re.sub(rf"(?<![\w/.-]){re.escape(src_repo_id)}(?![\w/-])", dst_repo_id, body)
    return front + body


def table_metrics(revisions: list[RevisionInfo], limit: int = 4) -> list[str]:
    """The few metrics worth a column: eval metrics first, then loss, by how many revisions have them."""
    counts: dict[str, int] = {}
    for r in revisions:
        for m in r.metrics:
            if is_quality_metric(m) and m not in ("learning_rate", "grad_norm"):
                counts[m] = counts.get(m, 0) + 1
    ranked = sorted(counts, key=lambda m: (not m.startswith("eval_"), m not in ("loss", "train_loss"), -counts[m], m))
    return ranked[:limit]


def metrics_chart_svg(index: RevisionIndex, width: int = 640, panel_height: int = 150) -> str | None:
    """Small multiples: one panel (own y-axis) per table metric over steps, no plotting dependency.

    Metrics on different scales (accuracy under perplexity) each keep their shape; non-finite values are
    left out of the line and counted in the panel's title. Every name is XML-escaped.
    """
    from xml.sax.saxutils import escape, quoteattr

    live = [r for r in index.live() if r.step is not None]
    names = table_metrics(live, limit=4)
    panels = []
    for name in names:
        values = [
            (r.step, r.metrics[name])
            for r in live
            if r.step is not None and isinstance(r.metrics.get(name), (int, float))  # narrows r.step for mypy
        ]
        finite = [(s, v) for s, v in values if math.isfinite(v)]
        if len(finite) >= 2:
            panels.append((name, finite, len(values) - len(finite)))
    if not panels:
        return None
    steps = [s for _, pts, _ in panels for s, _ in pts]
    x0, x1 = min(steps), max(steps)
    pad_l, pad_r, pad_t, pad_b = 64, 16, 22, 24
    height = panel_height * len(panels)
    colors = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd"]

    def x(step: float) -> float:
        return pad_l + (step - x0) / ((x1 - x0) or 1) * (width - pad_l - pad_r)

    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'font-family="sans-serif" font-size="12">',
        f'<rect width="{width}" height="{height}" fill="white"/>',
    ]
    for i, (name, pts, skipped) in enumerate(panels):
        top = i * panel_height
        y_lo, y_hi = min(v for _, v in pts), max(v for _, v in pts)
        if y_hi == y_lo:
            y_hi = y_lo + (abs(y_lo) or 1) * 0.01

        def y(value: float, top: int = top, lo: float = y_lo, hi: float = y_hi) -> float:
            return top + panel_height - pad_b - (value - lo) / (hi - lo) * (panel_height - pad_t - pad_b)

        color = colors[i % len(colors)]
        bottom = top + panel_height - pad_b
        title = name + (f" ({skipped} non-finite value{'s' if skipped != 1 else ''} not drawn)" if skipped else "")
        parts += [
            f'<text x="{pad_l}" y="{top + 15}" fill={quoteattr(color)}>{escape(title)}</text>',
            f'<line x1="{pad_l}" y1="{bottom}" x2="{width - pad_r}" y2="{bottom}" stroke="#888"/>',
            f'<line x1="{pad_l}" y1="{top + pad_t}" x2="{pad_l}" y2="{bottom}" stroke="#888"/>',
            f'<text x="{pad_l - 4}" y="{top + pad_t + 4}" text-anchor="end">{escape(format(y_hi, ".4g"))}</text>',
            f'<text x="{pad_l - 4}" y="{bottom}" text-anchor="end">{escape(format(y_lo, ".4g"))}</text>',
        ]
        path = " ".join(f"{x(s):.1f},{y(v):.1f}" for s, v in pts)
        parts.append(f'<polyline fill="none" stroke={quoteattr(color)} stroke-width="2" points="{path}"/>')
    parts += [
        f'<text x="{pad_l}" y="{height - 6}">step {x0}</text>',
        f'<text x="{width - pad_r}" y="{height - 6}" text-anchor="end">step {x1}</text>',
        "</svg>",
    ]
    return "\n".join(parts) + "\n"
