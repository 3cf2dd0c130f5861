"""What each page shows, read from storage (sync: called off the event loop by `routes`)."""

from __future__ import annotations

import json
import logging
import math
import threading
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeGuard

from markupsafe import Markup, escape

from ...cards import is_hubckpt_card
from ...errors import HubConfigError, HubHTTPError
from ...formats.index import INDEX_FILE, RevisionIndex, RevisionInfo
from ...names import is_staging_branch
from ..context import HubContext
from ..storage import PR_REF_PREFIX, Discussion, FileEntry, Repo
from ..trees import list_tree
from . import tensors as tensor_mod
from .charts import Point, metric_chart
from .markdown import render_card
from .render import number, seg, short_date, size

logger = logging.getLogger(__name__)

CARD_FILE = "README.md"
MAX_CARD_BYTES = 2 * 1024 * 1024
MAX_TEXT_BYTES = 2 * 1024 * 1024
MAX_TENSOR_ROWS = 3000


def read_bytes(ctx: HubContext, entry: FileEntry, limit: int) -> bytes | None:
    """The content of a stored file, or None if it is larger than `limit` or its object is missing."""
    if entry.size > limit:
        return None
    try:
        return ctx.blobs.path(entry.sha256).read_bytes()
    except OSError:
        logger.warning("object %s of %s is missing from the data folder", entry.sha256, entry.path)
        return None


def load_index(ctx: HubContext, files: dict[str, FileEntry]) -> RevisionIndex | None:
    """The hubckpt revisions index of a commit, if it has a readable one."""
    entry = files.get(INDEX_FILE)
    raw = read_bytes(ctx, entry, 64 * 1024 * 1024) if entry else None
    if raw is None:
        return None
    try:
        return RevisionIndex.from_json(raw)
    except (ValueError, TypeError, HubConfigError) as e:
        logger.warning("unreadable %s: %s", INDEX_FILE, e)
        return None


_CARDS: OrderedDict[tuple[str, str, str, bool], tuple[dict, str]] = OrderedDict()
_CARDS_LOCK = threading.Lock()
_CARDS_KEPT = 64


def without_index_sections(text: str) -> str:
    """A repo card hubckpt wrote, less what the model page draws itself: the metrics chart and the
    Revisions table (shown twice otherwise, once by the page and once in the card). Other cards as they are."""
    if not is_hubckpt_card(text):
        return text
    out, skipping = [], False
    for line in text.splitlines(keepends=True):
        if line.startswith("## "):
            skipping = line.strip() == "## Revisions"
        if skipping or line.startswith("![metrics over training]("):
            continue
        out.append(line)
    return "".join(out)


def card_of(
    ctx: HubContext, repo: Repo, files: dict[str, FileEntry], revision: str, *, page_draws_index: bool = False
) -> tuple[dict, str] | None:
    """(front matter, safe HTML) of the commit's README.md; remembered per stored object, which never changes.

    `page_draws_index`: the page shows the revisions and their charts itself (see `without_index_sections`).
    """
    entry = files.get(CARD_FILE)
    if entry is None:
        return None
    key = (entry.sha256, repo.repo_id, revision, page_draws_index)
    with _CARDS_LOCK:
        if key in _CARDS:
            _CARDS.move_to_end(key)
            return _CARDS[key]
    raw = read_bytes(ctx, entry, MAX_CARD_BYTES)
    if raw is None:
        return None
    text = raw.decode("utf-8", "replace")
    card = render_card(
        without_index_sections(text) if page_draws_index else text, repo_id=repo.repo_id, revision=revision
    )
    with _CARDS_LOCK:
        _CARDS[key] = card
        while len(_CARDS) > _CARDS_KEPT:
            _CARDS.popitem(last=False)
    return card


@dataclass
class RefMap:
    """Branches and tags of a repo, and which names point at each commit."""

    branches: dict[str, str] = field(default_factory=dict)
    tags: dict[str, str] = field(default_factory=dict)

    @classmethod
    def of(cls, ctx: HubContext, repo: Repo) -> RefMap:
        refs = cls()
        for row in ctx.store.refs(repo):
            if row["kind"] == "branch" and is_staging_branch(row["name"]):
                continue  # a publish killed mid-commit left it; not a revision
            if row["kind"] == "branch" and row["name"].startswith(PR_REF_PREFIX):
                continue  # a pull request's head: shown on its discussion page
            (refs.branches if row["kind"] == "branch" else refs.tags)[row["name"]] = row["target"]
        return refs

    def tags_at(self, sha: str | None) -> list[str]:
        return sorted(t for t, target in self.tags.items() if target == sha)

    def names_at(self, sha: str) -> list[str]:
        return sorted(b for b, t in self.branches.items() if t == sha) + self.tags_at(sha)


def _is_number(value: object) -> TypeGuard[int | float]:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def metric_names(revisions: list[RevisionInfo], monitor: str | None) -> list[str]:
    """Every metric any revision records; the monitored one first, then alphabetical."""
    names = sorted({str(m) for r in revisions if isinstance(r.metrics, dict) for m in r.metrics})
    if monitor in names:
        names.remove(monitor)
        names.insert(0, monitor)
    return names


# -- pages ------------------------------------------------------------------------------------------


def home(ctx: HubContext, caller) -> dict:
    repos = [r for r in ctx.store.list_repos() if ctx.can_read(r, caller)]
    rows = []
    for repo in sorted(repos, key=lambda r: r.last_modified, reverse=True):
        refs = RefMap.of(ctx, repo)
        rows.append({"repo": repo, "revisions": len([b for b in refs.branches if b != "main"]), "tags": len(refs.tags)})
    return {"repos": rows}


def model(ctx: HubContext, repo: Repo) -> dict:
    refs = RefMap.of(ctx, repo)
    main_sha = refs.branches.get("main")
    files = ctx.store.files(repo, main_sha) if main_sha else {}
    index = load_index(ctx, files)
    card = card_of(ctx, repo, files, "main", page_draws_index=index is not None)
    out: dict = {
        "repo": repo,
        "refs": refs,
        "card": card,
        "index": index,
        "main_sha": main_sha,
        "rows": [],
        "metrics": [],
        "charts": [],
    }
    if index is None:
        return out
    revisions = index.revisions
    metrics = metric_names(revisions, index.monitor)
    for r in revisions:
        head = refs.branches.get(r.name)
        tags = sorted(set(r.tags) | set(refs.tags_at(head))) if head else list(r.tags)
        out["rows"].append({"info": r, "linked": head is not None, "tags": tags})
    marks: dict[str, str] = {}
    if index.best:
        marks[index.best] = "best"
    if index.final:
        marks[index.final] = "best · final" if index.final == index.best else "final"
    live = [(r.step, r) for r in revisions if not r.pruned and _is_number(r.step)]
    for m in metrics:
        points = [
            Point(float(step), float(r.metrics[m]), str(r.name)) for step, r in live if _is_number(r.metrics.get(m))
        ]
        chart = metric_chart(m, points, marks)
        if chart:
            out["charts"].append({"metric": m, "svg": chart, "monitored": m == index.monitor})
    out["metrics"] = metrics
    out["table"] = revisions_table_rows(out["rows"], repo.repo_id, metrics, index)
    return out


def revisions_table_rows(rows: list[dict], repo_id: str, metrics: list[str], index: RevisionIndex) -> Markup:
    """The <tr>s of the revisions table, built here rather than in Jinja: 1,000 rows of a dozen cells
    each cost ~10x less as f-strings (see bench/web.py)."""
    out = []
    previous: str | None = None
    for row in rows:
        r: RevisionInfo = row["info"]
        name = escape(r.name)
        href = f"/{repo_id}/tree/{seg(r.name)}"
        if row["linked"]:
            first = f'<a href="{href}">{name}</a>'
        else:
            first = name + (' <span class="muted">(pruned)</span>' if r.pruned else "")
        cells = [
            f'<tr class="{"pruned" if r.pruned else ""}" data-revision="{name}"><td class="mono">{first}</td>',
            f'<td class="num">{escape(number(r.step))}</td><td class="num">{escape(number(r.tokens))}</td>',
        ]
        for m in metrics:
            best = " best-cell" if r.name == index.best and m == index.monitor else ""
            cells.append(f'<td class="num{best}" data-metric="{escape(m)}">{escape(number(r.metrics.get(m)))}</td>')
        cells.append(
            f'<td class="num">{size(r.size) if r.size else "—"}</td>'
            f'<td title="{escape(r.date or "")}">{escape(short_date(r.date))}</td><td>'
        )
        cells.extend(f'<span class="badge badge-{escape(t)}">{escape(t)}</span> ' for t in row["tags"])
        cells.append("</td><td>")
        if row["linked"] and previous is not None:
            cells.append(
                f'<a class="muted small" href="/{repo_id}/compare/{seg(previous)}...{seg(r.name)}" '
                'title="What changed since the previous revision">diff</a>'
            )
        cells.append("</td></tr>\n")
        previous = r.name if row["linked"] else None
        out.append("".join(cells))
    return Markup("".join(out))


def _neighbours(index: RevisionIndex | None, rev: str, sha: str, refs: RefMap):
    """(this revision's index entry, previous live one, next live one)."""
    if index is None:
        return None, None, None
    live = [r for r in index.live() if r.name in refs.branches]
    here = next((i for i, r in enumerate(live) if r.name == rev), None)
    if here is None:
        here = next((i for i, r in enumerate(live) if refs.branches.get(r.name) == sha), None)
    if here is None:
        return None, None, None
    return live[here], (live[here - 1] if here > 0 else None), (live[here + 1] if here + 1 < len(live) else None)


def tensor_table(ctx: HubContext, files: dict[str, FileEntry]) -> tuple[list, list[str], int]:
    """(tensors of every .safetensors file, unreadable-file notes, total parameter count)."""
    rows, problems, total = [], [], 0
    for path, entry in files.items():
        if not path.endswith(".safetensors"):
            continue
        try:
            found, _ = tensor_mod.read_header(ctx.blobs.path(entry.sha256), path)
        except (OSError, tensor_mod.HeaderError) as e:
            problems.append(f"{path}: {e}")
            continue
        rows.extend(found)
        if not path.startswith("training_state/"):
            total += sum(t.numel for t in found)
    return rows, problems, total


def tree(ctx: HubContext, repo: Repo, rev: str, path: str) -> dict:
    sha = ctx.resolve(repo, rev)
    files = ctx.store.files(repo, sha)
    entries = list_tree(files, path, recursive=False)
    if entries is None:
        raise HubHTTPError(404, f"{path} does not exist on {rev}", "EntryNotFound")
    refs = RefMap.of(ctx, repo)
    main_sha = refs.branches.get("main")
    index = load_index(ctx, ctx.store.files(repo, main_sha)) if main_sha else None
    entry, previous, following = _neighbours(index, rev, sha, refs)
    listing = []
    for kind, p in entries:
        if kind == "directory":
            inner = [e for q, e in files.items() if q.startswith(p + "/")]
            listing.append(
                {
                    "kind": kind,
                    "path": p,
                    "name": p.rsplit("/", 1)[-1],
                    "size": sum(e.size for e in inner),
                    "count": len(inner),
                }
            )
        else:
            listing.append({"kind": kind, "path": p, "name": p.rsplit("/", 1)[-1], "entry": files[p]})
    tensors, problems, params = tensor_table(ctx, files) if not path else ([], [], 0)
    return {
        "repo": repo,
        "rev": rev,
        "sha": sha,
        "path": path,
        "listing": listing,
        "refs": refs,
        "commit": ctx.store.commit(repo, sha),
        "card": card_of(ctx, repo, files, rev) if not path else None,
        "entry": entry,
        "previous": previous,
        "next": following,
        "tensors": tensors[:MAX_TENSOR_ROWS],
        "tensor_count": len(tensors),
        "tensor_problems": problems,
        "params": params,
        "total_size": sum(e.size for e in files.values()),
        "file_count": len(files),
    }


def blob(ctx: HubContext, repo: Repo, rev: str, path: str) -> dict:
    sha = ctx.resolve(repo, rev)
    files = ctx.store.files(repo, sha)
    entry = files.get(path)
    if entry is None:
        raise HubHTTPError(404, f"{path} does not exist on {rev}", "EntryNotFound")
    text, language, tensors, problem = None, None, None, None
    if path.endswith(".safetensors"):
        try:
            tensors, _ = tensor_mod.read_header(ctx.blobs.path(entry.sha256), path)
        except (OSError, tensor_mod.HeaderError) as e:
            problem = str(e)
    else:
        raw = read_bytes(ctx, entry, MAX_TEXT_BYTES)
        if raw is not None and b"\0" not in raw[:8192]:
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError:
                text = None
        if text is not None and path.endswith(".json"):
            try:
                text = json.dumps(json.loads(text), indent=2, ensure_ascii=False)
                language = "json"
            except ValueError:
                pass
    return {
        "repo": repo,
        "rev": rev,
        "sha": sha,
        "path": path,
        "file": entry,
        "text": text,
        "language": language,
        "tensors": tensors,
        "problem": problem,
        "too_large": entry.size > MAX_TEXT_BYTES,
        "commit": ctx.store.commit(repo, entry.last_commit),
        "refs": RefMap.of(ctx, repo),
    }


def commits(ctx: HubContext, repo: Repo, rev: str, page: int, page_size: int) -> dict:
    sha = ctx.resolve(repo, rev)
    history = ctx.store.history(repo, sha)
    refs = RefMap.of(ctx, repo)
    pages = max(1, (len(history) + page_size - 1) // page_size)
    page = min(max(page, 0), pages - 1)
    shown = history[page * page_size : (page + 1) * page_size]
    rows = [{"commit": c, "names": refs.names_at(c.sha)} for c in shown]
    return {
        "repo": repo,
        "rev": rev,
        "sha": sha,
        "rows": rows,
        "page": page,
        "pages": pages,
        "total": len(history),
        "refs": refs,
    }


def _tensors_of(ctx: HubContext, files: dict[str, FileEntry]) -> tuple[dict[str, tuple], list[str]]:
    out, problems = {}, []
    for path, entry in files.items():
        if not path.endswith(".safetensors"):
            continue
        blob_path: Path = ctx.blobs.path(entry.sha256)
        try:
            found, _ = tensor_mod.read_header(blob_path, path)
        except (OSError, tensor_mod.HeaderError) as e:
            problems.append(str(e))
            continue
        for t in found:
            out[t.name if not path.startswith("training_state/") else f"{path}:{t.name}"] = (t, blob_path)
    return out, problems


def compare(ctx: HubContext, repo: Repo, a: str, b: str) -> dict:
    sha_a, sha_b = ctx.resolve(repo, a), ctx.resolve(repo, b)
    files_a, files_b = ctx.store.files(repo, sha_a), ctx.store.files(repo, sha_b)
    tensors_a, problems_a = _tensors_of(ctx, files_a)
    tensors_b, problems_b = _tensors_of(ctx, files_b)
    # Weights and training state (optimizer moments, step counters...) in separate tables, each with its
    # own counts and bar scale: mixed, "112 changed" counted 84 optimizer tensors with 28 weights, and the
    # step counters' relative change (several x) flattened every weight's bar.
    changes = tensor_mod.compare(tensors_a, tensors_b)
    weights = [c for c in changes if not c.name.startswith("training_state/")]
    state = [c for c in changes if c.name.startswith("training_state/")]
    file_changes = []
    for path in sorted(set(files_a) | set(files_b)):
        fa, fb = files_a.get(path), files_b.get(path)
        if fa is not None and fb is not None and fa.sha256 == fb.sha256:
            continue
        status = "added" if fa is None else "removed" if fb is None else "modified"
        file_changes.append({"path": path, "status": status, "a": fa, "b": fb})
    refs = RefMap.of(ctx, repo)
    choices = sorted(refs.branches) + sorted(refs.tags)
    return {
        "repo": repo,
        "a": a,
        "b": b,
        "sha_a": sha_a,
        "sha_b": sha_b,
        "changes": changes,
        "groups": [_change_group(weights, "weights"), _change_group(state, "training_state")],
        "files": file_changes,
        "problems": problems_a + problems_b,
        "choices": choices,
    }


def _change_group(changes: list, kind: str) -> dict:
    """One table of the compare page: its rows, counts by status, and the largest change (the bars' scale)."""
    counts: dict[str, int] = {}
    for c in changes:
        counts[c.status] = counts.get(c.status, 0) + 1
    largest = max(
        (c.rel_change for c in changes if c.rel_change is not None and math.isfinite(c.rel_change)), default=0.0
    )
    return {"kind": kind, "changes": changes, "counts": counts, "largest": largest or 1.0}


# -- discussions and pull requests -----------------------------------------------------------------


def discussions(ctx: HubContext, repo: Repo) -> dict:
    """A repo's discussions and pull requests, newest first."""
    return {"repo": repo, "discussions": ctx.store.discussions(repo)}


def discussion(ctx: HubContext, repo: Repo, found: Discussion) -> dict:
    """One discussion: its events; for a pull request also its files, conflicts and diff."""
    from ..routes_discussions import pr_diff

    events = [
        {"event": e, "text": e.data["history"][0]["raw"] if e.type == "comment" else ""}
        for e in ctx.store.discussion_events(repo, found.num)
    ]
    data: dict = {"repo": repo, "d": found, "events": events, "files": [], "conflicts": [], "diff": ""}
    if found.is_pr and found.base_commit is not None:
        changes, conflicts = ctx.store.pr_changes(repo, found)
        base_files = ctx.store.files(repo, found.base_commit)
        data["files"] = [
            {"path": p, "change": "deleted" if e is None else "modified" if p in base_files else "added"}
            for p, e in changes.items()
        ]
        data["conflicts"] = conflicts if found.status in ("open", "draft") else []
        data["diff"] = pr_diff(ctx, repo, found)
    return data
