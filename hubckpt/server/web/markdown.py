"""Model cards as safe HTML: front matter split off, Markdown rendered by cmark-gfm (GitHub's own
renderer, through cmarkgfm), the HTML sanitised by nh3 (Ammonia), relative links pointed at this hub's
pages. The same pairing renders READMEs on PyPI (readme_renderer); cmark-gfm is C, so a card with a
1,000-row revisions table renders in milliseconds.

A card is user content: after `render_card` no script, event handler, `javascript:` (or any other
non-web) URL, style or form survives; the page's Content-Security-Policy is the second fence.
"""

from __future__ import annotations

from urllib.parse import quote

import cmarkgfm
import nh3
import yaml
from cmarkgfm.cmark import Options

# Raw HTML in cards is kept (as on the Hub) and made safe by nh3 below, never by cmark.
_CMARK_OPTIONS = Options.CMARK_OPT_UNSAFE | Options.CMARK_OPT_GITHUB_PRE_LANG

# Ammonia's default tag set minus what makes no sense in a card (image maps), plus nothing new.
_TAGS = set(nh3.ALLOWED_TAGS) - {"map", "area"}
_ATTRIBUTES = {
    "a": {"href", "title"},
    "img": {"src", "alt", "title", "width", "height"},
    "td": {"align", "colspan", "rowspan"},
    "th": {"align", "colspan", "rowspan"},
    "ol": {"start"},
    "code": {"class"},
    "details": {"open"},
}
_SCHEMES = {"http", "https", "mailto"}


def split_front_matter(text: str) -> tuple[dict, str]:
    """(YAML metadata, Markdown body) of a card; metadata {} when absent or unreadable."""
    if not text.startswith("---"):
        return {}, text
    lines = text.split("\n")
    for i, line in enumerate(lines[1:], start=1):
        if line.strip() == "---":
            try:
                meta = yaml.safe_load("\n".join(lines[1:i])) or {}
            except yaml.YAMLError:
                meta = {}
            return (meta if isinstance(meta, dict) else {}), "\n".join(lines[i + 1 :])
    return {}, text


def _is_relative(url: str) -> bool:
    return bool(url) and not url.startswith(("/", "#", "?")) and ":" not in url.split("/", 1)[0]


def render_markdown(text: str, *, repo_id: str | None = None, revision: str = "main") -> str:
    """Sanitised HTML of Markdown `text`; relative links go to the repo's blob pages, images to raw files."""
    rev = quote(revision, safe="")

    def rewrite(tag: str, attr: str, value: str) -> str | None:
        if repo_id and attr in ("href", "src") and _is_relative(value):
            path = value.split("#", 1)[0].split("?", 1)[0]
            while path.startswith("./"):
                path = path[2:]
            if not path or ".." in path.split("/"):
                return None
            kind = "raw" if tag == "img" else "blob"
            return f"/{repo_id}/{kind}/{rev}/{quote(path)}"
        return value

    html = cmarkgfm.github_flavored_markdown_to_html(text, options=_CMARK_OPTIONS)
    return nh3.clean(
        html,
        tags=_TAGS,
        attributes=_ATTRIBUTES,
        url_schemes=_SCHEMES,
        attribute_filter=rewrite,
        link_rel="noopener noreferrer nofollow",
        strip_comments=True,
    )


def render_card(text: str, *, repo_id: str, revision: str) -> tuple[dict, str]:
    """(front matter, sanitised HTML body) of a README.md."""
    meta, body = split_front_matter(text)
    return meta, render_markdown(body, repo_id=repo_id, revision=revision)
