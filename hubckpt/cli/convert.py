"""`hubckpt convert SRC DEST`: any common checkpoint → verified safetensors + pickle-free training state."""

from __future__ import annotations

from pathlib import Path

import typer

from hubckpt import environment

from ..cards import human_size


def convert(
    src: Path = typer.Argument(..., help="A checkpoint file or folder, or a run folder holding many."),
    dest: Path = typer.Argument(..., help="Output folder (a run folder gives DEST/step-NNNNNNN/ per checkpoint)."),
    max_shard_size: str = typer.Option("5GB", "--max-shard-size", help="Shard above this size, e.g. 5GB, 500MB."),
    dtype: str = typer.Option("keep", "--dtype", help="keep, bf16 or fp16 (floating tensors only)."),
    allow_global: list[str] = typer.Option(
        [],
        "--allow-global",
        help="Trust this pickle global (module.Name); repeatable. Only for files from a source you trust.",
    ),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace DEST if it exists."),
) -> None:
    """Convert a checkpoint to safetensors, verified bit for bit, with checkpoint.json and training_state/."""
    from huggingface_hub.utils import tqdm

    from ..conversion import convert as run_convert
    from ..readers import kind_of

    if dtype not in ("keep", "bf16", "fp16"):
        raise typer.BadParameter("use keep, bf16 or fp16", param_hint="--dtype")
    bars = environment.progress_bars()
    disable = None if bars is None else not bars  # None: tqdm's default, a bar only in a terminal
    total = None
    if kind_of(src) != "run":
        total = sum(p.stat().st_size for p in ([src] if src.is_file() else src.rglob("*")) if p.is_file())
    with tqdm(total=total, unit="B", unit_scale=True, desc="Converting", disable=disable) as bar:
        results = run_convert(
            src,
            dest,
            max_shard_size=max_shard_size,
            dtype=dtype,
            allow_globals=allow_global,
            overwrite=overwrite,
            progress=bar.update,
        )
    if kind_of(src) == "run" and not results:
        typer.echo(f"{src}: no checkpoints found")
    for result in results:
        w = result.weights
        ckpt = result.checkpoint
        shards = f"{w.shards} shard{'s' if w.shards != 1 else ''}"
        typer.echo(f"{ckpt.source} ({ckpt.source_format}) -> {result.dest}")
        typer.echo(
            f"  step {ckpt.step if ckpt.step is not None else '?'}; {w.tensors} tensors, {w.parameters:,} parameters, "
            f"{human_size(w.bytes)} in {shards}; dtypes {', '.join(f'{k}×{v}' for k, v in w.dtypes.items())}"
        )
        if w.tied:
            typer.echo(f"  tied weights written once: {', '.join(f'{a} = {k}' for a, k in w.tied.items())}")
        if ckpt.training_state:
            typer.echo(f"  training_state/: {', '.join(sorted(ckpt.training_state))}")
        if ckpt.companions:
            typer.echo(f"  copied: {', '.join(p.name for p in ckpt.companions)}")
        for name, reason in ckpt.skipped:
            typer.echo(f"  skipped {name}: {reason}")
        typer.echo("  verified: every tensor reads back bit-identical")
