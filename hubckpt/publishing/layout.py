"""The layout of `main`, in one place: what the publisher, `prune` and `reindex` write there.

main   README.md        the repo card (rendered for the hub it is committed to)
       revisions.json   the index
       metrics.svg      the metrics chart, once two revisions have a metric
       model files, config, checkpoint.json ...  the final revision's files (never its training_state/)
"""

from __future__ import annotations

import re

from ..cards import CardOptions, metrics_chart_svg, render_repo_card
from ..formats.index import INDEX_FILE, RevisionIndex
from ..hub.writer import HubTarget

CHART_FILE = "metrics.svg"
CARD_FILE = "README.md"
_MODEL_FILE = re.compile(r"^(model.*\.safetensors(\.index\.json)?|checkpoint\.json)$")


def main_files(target: HubTarget, index: RevisionIndex, card: CardOptions, *, has_config: bool) -> dict[str, bytes]:
    """What `main` carries for an index on `target`: revisions.json, the repo card and the metrics chart."""
    files = {INDEX_FILE: index.to_json()}
    chart = metrics_chart_svg(index)
    if chart:
        files[CHART_FILE] = chart.encode()
    files[CARD_FILE] = render_repo_card(
        repo_id=target.repo_id,
        repo_url=target.repo_url,
        index=index,
        options=card,
        chart=CHART_FILE if chart else None,
        has_config=has_config,
    ).encode()
    return files


def final_files_to_replace(main_listing: list[str], final_files: set[str]) -> list[str]:
    """Model files of an earlier final on `main` that the new final does not have (they must not mix)."""
    return [p for p in main_listing if _MODEL_FILE.match(p) and p not in final_files]


__all__ = ["CHART_FILE", "CARD_FILE", "main_files", "final_files_to_replace"]
