"""`hubckpt ls / show / tag / prune / reindex`: browse and maintain a published repo."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer

from ..cards import human_size
from ._options import HubOpt, RootOpt, TokenOpt, target


def ls(repo: str = typer.Argument(..., help="namespace/name"), hub: Optional[str] = HubOpt,
       root: Optional[Path] = RootOpt, token: Optional[str] = TokenOpt,
       as_json: bool = typer.Option(False, "--json", help="Print the index as JSON."),
       all_: bool = typer.Option(False, "--all", help="Include pruned revisions.")) -> None:
    """List revisions with step, tokens, key metrics, size, date and tags (one request, via the index)."""
    from ..cards import _table_metrics
    from ..publishing.maintenance import list_revisions

    t = target(repo, hub, root, token)
    index = list_revisions(t)
    revisions = index.revisions if all_ else index.live()
    if as_json:
        typer.echo(index.to_json().decode())
        return
    if not revisions:
        typer.echo(f"{repo} has no published revisions yet.")
        return
    metrics = _table_metrics(revisions, limit=3)
    header = ["revision", "step", "tokens", *metrics, "size", "date", "tags"]
    rows = [[r.name + (" (pruned)" if r.pruned else ""), str(r.step if r.step is not None else "-"),
             f"{r.tokens:,}" if r.tokens is not None else "-",
             *[f"{r.metrics[m]:.4g}" if m in r.metrics else "-" for m in metrics],
             human_size(r.size), (r.date or "-")[:16].replace("T", " "), ",".join(r.tags)] for r in revisions]
    widths = [max(len(h), *(len(row[i]) for row in rows)) for i, h in enumerate(header)]
    typer.echo("  ".join(h.ljust(w) for h, w in zip(header, widths)).rstrip())
    for row in rows:
        typer.echo("  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip())
    typer.echo(f"page: {t.repo_url}")


def show(ref: str = typer.Argument(..., help="namespace/name@revision"), hub: Optional[str] = HubOpt,
         root: Optional[Path] = RootOpt, token: Optional[str] = TokenOpt) -> None:
    """Show one revision: its index entry and its checkpoint.json."""
    from ..errors import HubConfigError

    if "@" not in ref:
        raise HubConfigError(f"Expected REPO@REVISION (e.g. me/exp1@step-0001200), got {ref!r}")
    repo, revision = ref.split("@", 1)
    from huggingface_hub.errors import RevisionNotFoundError

    t = target(repo, hub, root, token)
    index, _ = t.read_index()
    entry = index.get(revision)
    try:
        manifest = t.read_json("checkpoint.json", revision)
    except RevisionNotFoundError:
        manifest = None  # e.g. a pruned revision: its branch is gone, its index entry stays
    if entry is None and manifest is None:
        raise HubConfigError(f"{repo} has no revision {revision!r}; see `hubckpt ls {repo}`")
    if entry is not None:
        typer.echo(f"{repo}@{entry.name}  step {entry.step}  commit {entry.commit}  tags {','.join(entry.tags) or '-'}"
                   + ("  (pruned)" if entry.pruned else ""))
    if manifest is not None:
        typer.echo(json.dumps(manifest, indent=2, sort_keys=True))
        from urllib.parse import quote

        typer.echo(f"page: {t.repo_url}/tree/{quote(revision, safe='')}")


def tag(repo: str = typer.Argument(...), revision: str = typer.Argument(..., help="Revision to tag."),
        name: str = typer.Argument(..., help="Tag name."), delete: bool = typer.Option(False, "--delete"),
        hub: Optional[str] = HubOpt, root: Optional[Path] = RootOpt, token: Optional[str] = TokenOpt) -> None:
    """Create or move a tag on a revision (or --delete it)."""
    from ..publishing.maintenance import tag as do_tag

    do_tag(target(repo, hub, root, token), revision, name, delete=delete)
    typer.echo(f"{'Deleted' if delete else 'Tagged'} {name}" + ("" if delete else f" -> {revision}"))


def prune(repo: str = typer.Argument(...), keep_last: Optional[int] = typer.Option(None, "--keep-last"),
          keep_every: Optional[int] = typer.Option(None, "--keep-every", help="Keep revisions whose step is a multiple."),
          keep_best: Optional[int] = typer.Option(None, "--keep-best"),
          monitor: Optional[str] = typer.Option(None, "--monitor", help="Metric for --keep-best (default: the index's)."),
          mode: Optional[str] = typer.Option(None, "--mode", help="min or max"),
          dry_run: bool = typer.Option(False, "--dry-run", help="Only say what would be pruned."),
          hub: Optional[str] = HubOpt, root: Optional[Path] = RootOpt, token: Optional[str] = TokenOpt) -> None:
    """Delete the branches of revisions a retention policy no longer keeps (never best or final)."""
    from ..publishing.maintenance import prune as do_prune
    from ..publishing.policies import Retention

    result = do_prune(target(repo, hub, root, token), Retention(keep_last, keep_every, keep_best), monitor=monitor,
                      mode=mode, dry_run=dry_run)
    verb = "Would prune" if dry_run else "Pruned"
    typer.echo(f"{verb} {len(result.pruned)}: {', '.join(result.pruned) or '-'}; keeping {len(result.kept)}")


def reindex(repo: str = typer.Argument(...), hub: Optional[str] = HubOpt, root: Optional[Path] = RootOpt,
            token: Optional[str] = TokenOpt) -> None:
    """Rebuild revisions.json and the repo card from the branches' checkpoint.json files."""
    from ..publishing.maintenance import reindex as do_reindex

    index = do_reindex(target(repo, hub, root, token))
    typer.echo(f"Rebuilt the index of {repo}: {len(index.live())} revisions")
