"""`hubckpt diff REPO@A REPO@B`: which tensors changed between two revisions, and by how much (lazy reads)."""

from __future__ import annotations

import json
import math
from dataclasses import asdict
from pathlib import Path

import typer

from ..cards import human_size
from ._options import HubOpt, RootOpt, TokenOpt
from .revisions import print_table, reader_for, split_ref


def _finite(row: dict) -> dict:
    """JSON has no NaN/inf: None instead (NaN norms: a tensor in an identical file, not read)."""
    return {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in row.items()}


def diff(
    a: str = typer.Argument(..., help="namespace/name@revision"),
    b: str = typer.Argument(..., help="namespace/name@revision (or @revision: the same repo)"),
    top: int = typer.Option(20, "--top", help="Changed tensors to list, most changed first (0: all)."),
    as_json: bool = typer.Option(False, "--json", help="Print every tensor's figures as JSON."),
    hub: str | None = HubOpt,
    root: Path | None = RootOpt,
    token: str | None = TokenOpt,
) -> None:
    """Compare two revisions tensor by tensor: norm of the difference, relative change, max |Δ|."""
    from ..load.compare import compare_revisions
    from ..load.lazy import LazyRevision
    from ..load.loaders import Revision
    from ..load.resolve import RepoRevisions

    repo_a, rev_a = split_ref(a)
    repo_b, rev_b = split_ref(b if not b.startswith("@") else repo_a + b)
    opened, repos = [], {}
    for repo, revision in ((repo_a, rev_a), (repo_b, rev_b)):
        if repo not in repos:
            repos[repo] = RepoRevisions(reader_for(repo, hub, root, token))
        revs = repos[repo]
        opened.append(LazyRevision(Revision(repo, info=revs.resolve(revision), revisions=revs, lazy=True)))
    result = compare_revisions(*opened)
    if as_json:
        doc = {
            "a": result.a,
            "b": result.b,
            "only_a": result.only_a,
            "only_b": result.only_b,
            "reshaped": result.reshaped,
            "bytes_received": result.bytes_received,
            "tensors": [_finite({**asdict(t), "relative": t.relative}) for t in result.tensors],
        }
        typer.echo(json.dumps(doc, indent=2, sort_keys=True, allow_nan=False))
        return
    changed = result.changed
    typer.echo(
        f"{result.a} -> {result.b}: {len(changed)} of {len(result.tensors)} shared tensors changed"
        + (f", {result.same_files} weight file(s) identical (not read)" if result.same_files else "")
    )
    shown = changed if top <= 0 else changed[:top]
    if shown:
        print_table(
            ["tensor", "shape", "||B-A||", "relative", "max |B-A|", "||A||", "||B||"],
            [
                [
                    t.name,
                    "x".join(map(str, t.shape)) or "scalar",
                    f"{t.diff_norm:.4g}",
                    f"{t.relative:.3%}" if math.isfinite(t.relative) else "inf",
                    f"{t.max_abs:.4g}",
                    f"{t.norm_a:.4g}",
                    f"{t.norm_b:.4g}",
                ]
                for t in shown
            ],
        )
        if len(shown) < len(changed):
            typer.echo(f"... {len(changed) - len(shown)} more changed (--top 0 lists all)")
    for label, names in (("only in A", result.only_a), ("only in B", result.only_b)):
        if names:
            typer.echo(f"{label}: {', '.join(names)}")
    for name, was, now in result.reshaped:
        typer.echo(f"changed shape/dtype: {name}: {was} -> {now}")
    typer.echo(f"Read {human_size(result.bytes_received)} from the hub (headers and the tensors compared).")
