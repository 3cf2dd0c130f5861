"""`hubckpt analyze`: representations (CKA per layer) and weight drift across a repo's revisions."""

from __future__ import annotations

from pathlib import Path

import typer

from ._options import HubOpt, RootOpt, TokenOpt


def _split(value: str | None) -> list[str] | None:
    return [v.strip() for v in value.split(",") if v.strip()] if value else None


def analyze(
    repo: str = typer.Argument(..., help="namespace/name"),
    probe: Path = typer.Option(
        ...,
        "--probe",
        help="Text file (one example a line, tokenised with the revision's "
        "tokenizer) or safetensors file with an `input_ids` tensor (n, seq).",
    ),
    out: Path = typer.Option(..., "--out", help="Output folder: results.json, weights.json, PNGs, activations/."),
    revisions: str | None = typer.Option(
        None, "--revisions", help="Comma-separated revisions (names, tags, commits, best/latest/final) (default: all)."
    ),
    every: int | None = typer.Option(None, "--every", help="The revisions whose step is a multiple of N."),
    layers: str | None = typer.Option(
        None,
        "--layers",
        help="Comma-separated module names or block indices (0, -1) (default: every transformer block).",
    ),
    measure: str = typer.Option(
        "linear_cka", "--measure", help="linear_cka, rbf_cka, minibatch_cka, svcca, pwcca or procrustes (a distance)."
    ),
    pool: str = typer.Option(
        "mean",
        "--pool",
        help="Token states to one row per example: mean, last, flatten, or tokens (every token a row).",
    ),
    batch_size: int = typer.Option(32, "--batch-size", min=1, help="Probe examples per forward pass."),
    max_length: int = typer.Option(128, "--max-length", min=1, help="Truncate text probe lines to this many tokens."),
    device: str = typer.Option("cpu", "--device", help="Where to run the models (cpu, cuda, ...)."),
    cache: str = typer.Option(
        "keep",
        "--cache",
        help="Downloaded checkpoints: keep, previous (delete each once analysed), or bounded (with --max-cache-mib).",
    ),
    max_cache_mib: int | None = typer.Option(None, "--max-cache-mib", min=1, help="Bound for --cache bounded."),
    hub: str | None = HubOpt,
    root: Path | None = RootOpt,
    token: str | None = TokenOpt,
) -> None:
    """Compare a repo's revisions: per-layer CKA between revisions and weight drift from the first one."""
    from ..analysis.pipeline import analyze as run
    from ..errors import AnalysisError
    from ..hub.select import resolve_hub
    from ..names import split_repo_id

    split_repo_id(repo)
    if revisions and every:
        raise AnalysisError("Pass either --revisions or --every, not both.")
    resolved = resolve_hub(hub, root=root, start=True)
    typer.echo(f"Using {resolved.describe()}, repo {repo}", err=True)
    import transformers

    transformers.logging.disable_progress_bar()  # a bar per loaded revision buried the per-revision report

    def progress(info, seconds: float) -> None:
        step = f"step {info.step}" if info.step is not None else "no step"
        typer.echo(f"  {info.name:<16} {step:<14} {info.commit[:12]}  {seconds:.1f}s")

    result = run(
        repo,
        probe=probe,
        out=out,
        revisions=_split(revisions),
        every=every,
        layers=_split(layers),
        hub=resolved,
        token=token,
        measure=measure,
        pool=pool,
        batch_size=batch_size,
        max_length=max_length,
        device=device,
        cache=cache,
        max_cache_bytes=max_cache_mib * 2**20 if max_cache_mib else None,
        on_revision=progress,
    )
    r = result.results
    typer.echo(f"Analysed {len(r['revisions'])} revisions x {len(r['layers'])} layers in {result.seconds:.1f}s.")
    last = len(r["revisions"]) - 1
    for layer in r["layers"]:
        value = r["cka"][layer][0][last]
        drift = r["drift"].get(layer, [None])[-1]
        shown = f"{drift:.3f}" if isinstance(drift, float) else "-"
        typer.echo(f"  {layer:<28} {measure} first vs last {value:.3f}   weight drift {shown}")
    typer.echo("Wrote " + ", ".join(str(p) for p in result.files))
