"""`hubckpt ls / show / tag / prune / reindex`: browse and maintain a published repo."""

from __future__ import annotations

import json
import re
from dataclasses import asdict
from pathlib import Path

import typer

from ..cards import human_size
from ..names import page_url
from ._options import HubOpt, RootOpt, TokenOpt, target
from .publish import KeepBestOpt, KeepEveryOpt, KeepLastOpt


def reader_for(repo: str, hub: str | None, root: Path | None, token: str | None):
    """The read-only HubReader of a browsing command, announcing which hub and repo it uses."""
    from ..hub.reader import HubReader
    from ..hub.select import resolve_hub

    reader = HubReader(resolve_hub(hub, root=root, start=True), repo, token=token)
    typer.echo(f"Using {reader.describe()}", err=True)
    return reader


def split_ref(ref: str, *, need_revision: bool = True) -> tuple[str, str | None]:
    """`namespace/name@revision` → (repo, revision)."""
    from ..errors import HubConfigError

    if "@" not in ref:
        if need_revision:
            raise HubConfigError(f"Expected REPO@REVISION (e.g. me/exp1@step-0001200 or me/exp1@best), got {ref!r}")
        return ref, None
    repo, revision = ref.split("@", 1)
    if not revision:
        raise HubConfigError(f"Empty revision in {ref!r}: use REPO@REVISION")
    return repo, revision


def print_table(header: list[str], rows: list[list[str]]) -> None:
    """Print rows as left-aligned columns under `header` (the CLI's tables)."""
    widths = [max(len(h), *(len(row[i]) for row in rows)) if rows else len(h) for i, h in enumerate(header)]
    typer.echo("  ".join(h.ljust(w) for h, w in zip(header, widths)).rstrip())
    for row in rows:
        typer.echo("  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip())


def ls(
    repo: str = typer.Argument(..., help="namespace/name"),
    hub: str | None = HubOpt,
    root: Path | None = RootOpt,
    token: str | None = TokenOpt,
    as_json: bool = typer.Option(False, "--json", help="Print the revisions as JSON."),
    all_: bool = typer.Option(False, "--all", help="Include pruned revisions."),
    refresh: bool = typer.Option(False, "--refresh", help="Also read the refs: branches the index misses, user tags."),
) -> None:
    """List revisions with step, tokens, key metrics, size, date and tags (one request, via the index).

    The size is that of the model files (weights, config, tokenizer), without training_state/.
    """
    from ..cards import table_metrics
    from ..load.resolve import RepoRevisions

    if "@" in repo:  # `ls REPO@REV` said only "Invalid repo name 'name@rev'"
        from ..errors import HubConfigError

        raise HubConfigError(
            f"ls lists a whole repo: `hubckpt ls {repo.split('@', 1)[0]}`; for one revision use `hubckpt show {repo}`"
        )
    revs = RepoRevisions(reader_for(repo, hub, root, token))
    revisions = list(revs.records(refresh=refresh))
    index = revs.index()
    if all_ and index is not None:
        revisions = sorted(
            revisions + [r for r in index.revisions if r.pruned], key=lambda r: (r.step is None, r.step or 0, r.name)
        )
    if as_json:
        doc = {
            "repo_id": repo,
            "source": revs.source,
            "monitor": index.monitor if index else None,
            "mode": index.mode if index else None,
            "best": index.best if index else None,
            "final": index.final if index else None,
            "revisions": [asdict(r) for r in revisions],
        }
        typer.echo(json.dumps(doc, indent=2, sort_keys=True))
        return
    if not revisions:
        typer.echo(f"{repo} has no published revisions yet.")
        return
    metrics = table_metrics(revisions, limit=3)
    header = ["revision", "step", "tokens", *metrics, "size", "date", "tags"]
    rows = [
        [
            r.name + (" (pruned)" if r.pruned else ""),
            str(r.step if r.step is not None else "-"),
            f"{r.tokens:,}" if r.tokens is not None else "-",
            *[f"{r.metrics[m]:.6g}" if m in r.metrics else "-" for m in metrics],  # enough to see why `best`
            human_size(r.size) if r.size else "-",
            (r.date or "-")[:16].replace("T", " "),
            ",".join(r.tags),
        ]
        for r in revisions
    ]
    print_table(header, rows)
    if revs.source == "refs":
        typer.echo(f"({repo} has no revisions.json: listed from its branches and tags)")
    typer.echo(f"page: {page_url(revs.reader.endpoint, repo)}")


def card_summary(card: str) -> tuple[str | None, str | None]:
    """(title, first paragraph as plain text) of a model card, front matter skipped."""
    text = card
    if text.startswith("---"):
        end = text.find("\n---", 3)
        text = text[end + 4 :] if end != -1 else text
    title: str | None = None
    paragraph: list[str] = []
    for line in text.splitlines():
        stripped = line.strip()
        if stripped.startswith("#"):
            if title is None and not paragraph:
                title = stripped.lstrip("#").strip()
                continue
            if paragraph:
                break
            continue
        if not stripped:
            if paragraph:
                break
            continue
        if stripped.startswith(("|", "```", "<")):
            if paragraph:
                break
            continue
        paragraph.append(stripped)
    plain = " ".join(paragraph)
    plain = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", plain)  # links → their text
    plain = plain.replace("**", "").replace("`", "")
    return title, plain or None


def show(
    ref: str = typer.Argument(..., help="namespace/name@revision (a branch, tag, commit, best, latest, final)"),
    hub: str | None = HubOpt,
    root: Path | None = RootOpt,
    token: str | None = TokenOpt,
    as_json: bool = typer.Option(False, "--json", help="Print the revision, its checkpoint.json and tensors as JSON."),
    max_tensors: int = typer.Option(40, "--max-tensors", help="Tensors to list in the table (0: all)."),
) -> None:
    """Show one revision: card summary, metrics, files, and a tensor table read from the safetensors headers."""
    from ..errors import NoSafetensorsError
    from ..load.lazy import LazyRevision
    from ..load.loaders import Revision
    from ..load.resolve import RepoRevisions

    repo, revision = split_ref(ref)
    revs = RepoRevisions(reader_for(repo, hub, root, token))
    rev = Revision(repo, info=revs.resolve(revision), revisions=revs, lazy=True)
    info, manifest = rev.info, rev.files.manifest
    lazy = LazyRevision(rev)
    try:
        tensors = lazy.tensors()
    except NoSafetensorsError:
        tensors = {}
    if as_json:
        doc = {
            "repo_id": repo,
            "revision": asdict(info),
            "manifest": manifest,
            "files": {p: f for p, f in sorted(rev.files.files.items())},
            "tensors": {n: {"dtype": m.dtype, "shape": list(m.shape), "file": m.file} for n, m in tensors.items()},
        }
        typer.echo(json.dumps(doc, indent=2, sort_keys=True))
        return
    where = [f"step {info.step}" if info.step is not None else "no step recorded"]
    if info.epoch is not None:
        where.append(f"epoch {info.epoch:g}")
    if info.tokens is not None:
        where.append(f"{info.tokens:,} tokens")
    typer.echo(f"{repo}@{info.name}  ({', '.join(where)})")
    typer.echo(f"commit  {info.commit}" + (f"   tags: {', '.join(info.tags)}" if info.tags else ""))
    card, _ = rev.reader.get("README.md", rev.commit)
    if card is not None:
        title, summary = card_summary(card.decode("utf-8", "replace"))
        if summary:
            typer.echo(f"\n{summary}")
    if info.metrics:
        typer.echo("\nMetrics")
        print_table(["name", "value"], [[k, f"{v:.6g}"] for k, v in sorted(info.metrics.items())])
    files = rev.files.files
    typer.echo(f"\nFiles ({len(files)}, {human_size(sum(int(f.get('size') or 0) for f in files.values()))})")
    print_table(
        ["path", "size", "sha256"],
        [[p, human_size(int(f.get("size") or 0)), (f.get("sha256") or "-")[:12]] for p, f in sorted(files.items())],
    )
    state = sum(int(f.get("size") or 0) for p, f in files.items() if p.startswith("training_state/"))
    typer.echo(
        f"{human_size(info.size)} of model files (the size `hubckpt ls` shows)"
        + (f", {human_size(state)} in training_state/" if state else "")
        + "; the rest is the card and metadata"
    )
    if not tensors:
        typer.echo("\nNo safetensors weights in this revision.")
        typer.echo(f"page: {page_url(rev.reader.endpoint, repo, info.name)}")
        return
    params = sum(m.numel for m in tensors.values())
    typer.echo(f"\nTensors ({len(tensors)}, {params:,} parameters; from the safetensors headers)")
    shown = list(tensors.values()) if max_tensors <= 0 else list(tensors.values())[:max_tensors]
    print_table(
        ["name", "dtype", "shape", "file"],
        [[m.name, m.dtype, "x".join(map(str, m.shape)) or "scalar", m.file] for m in shown],
    )
    if len(shown) < len(tensors):
        typer.echo(f"... {len(tensors) - len(shown)} more (--max-tensors 0 lists all, --json too)")
    typer.echo(f"page: {page_url(rev.reader.endpoint, repo, info.name)}")


def tag(
    repo: str = typer.Argument(...),
    revision: str = typer.Argument(..., help="Revision to tag."),
    name: str = typer.Argument(..., help="Tag name."),
    delete: bool = typer.Option(False, "--delete", help="Delete the tag instead."),
    hub: str | None = HubOpt,
    root: Path | None = RootOpt,
    token: str | None = TokenOpt,
) -> None:
    """Create or move a tag on a revision (or --delete it)."""
    from ..publishing.maintenance import tag as do_tag

    do_tag(target(repo, hub, root, token), revision, name, delete=delete)
    typer.echo(f"{'Deleted' if delete else 'Tagged'} {name}" + ("" if delete else f" -> {revision}"))


def prune(
    repo: str = typer.Argument(...),
    keep_last: int | None = KeepLastOpt,
    keep_every: int | None = KeepEveryOpt,
    keep_best: int | None = KeepBestOpt,
    monitor: str | None = typer.Option(None, "--monitor", help="Metric for --keep-best (default: the index's)."),
    mode: str | None = typer.Option(None, "--mode", help="min or max"),
    dry_run: bool = typer.Option(False, "--dry-run", help="Only say what would be pruned."),
    hub: str | None = HubOpt,
    root: Path | None = RootOpt,
    token: str | None = TokenOpt,
) -> None:
    """Delete the branches of revisions a retention policy no longer keeps (never best, final or user-tagged ones)."""
    from ..publishing.maintenance import prune as do_prune
    from ..publishing.policies import Retention

    result = do_prune(
        target(repo, hub, root, token),
        Retention(keep_last, keep_every, keep_best),
        monitor=monitor,
        mode=mode,
        dry_run=dry_run,
    )
    verb = "Would prune" if dry_run else "Pruned"
    typer.echo(f"{verb} {len(result.pruned)}: {', '.join(result.pruned) or '-'}; keeping {len(result.kept)}")
    for name in result.kept:
        why = result.protected.get(name)
        typer.echo(f"  keeping {name}: {', '.join(why) if why else 'kept by the policy'}")


def reindex(
    repo: str = typer.Argument(...),
    hub: str | None = HubOpt,
    root: Path | None = RootOpt,
    token: str | None = TokenOpt,
) -> None:
    """Rebuild revisions.json and the repo card from the branches' checkpoint.json files."""
    from ..publishing.maintenance import reindex as do_reindex

    index = do_reindex(target(repo, hub, root, token))
    typer.echo(f"Rebuilt the index of {repo}: {len(index.live())} revisions")
