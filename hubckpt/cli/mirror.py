"""`hubckpt mirror REPO --from HUB_A --to HUB_B`: a published run copied to another hub."""

from __future__ import annotations

import sys
import time

import typer

from .. import environment

SAY_EVERY_S = 30.0  # how often a run waiting for the target's commit budget says how long the rest will take


def mirror(
    repo_id: str = typer.Argument(..., help="The source repo, namespace/name."),
    src: str = typer.Option(..., "--from", help="The hub to copy from: local, hf, or a hub URL."),
    dst: str = typer.Option(..., "--to", help="The hub to copy to: local, hf, or a hub URL."),
    to_repo: str | None = typer.Option(None, "--to-repo", help="The target repo's id (default: REPO)."),
    force: bool = typer.Option(False, "--force", help="Overwrite target branches that hold other content."),
    src_token: str | None = typer.Option(None, "--from-token", help="Token for the source hub (default: its own)."),
    dst_token: str | None = typer.Option(None, "--to-token", help="Token for the target hub (default: its own)."),
    deadline: float | None = typer.Option(
        None, "--deadline", help="Seconds the mirror may take; past them it stops and says what is left."
    ),
) -> None:
    """Copy every revision, tag, the index and main of a run to another hub; run again to copy what is new."""
    from huggingface_hub.utils import tqdm

    from ..cards import human_size
    from ..publishing.mirror import MirrorProgress, mirror as run_mirror

    bars = environment.progress_bars()
    disable = None if bars is None else not bars  # None: tqdm's default, a bar only in a terminal
    target = to_repo or repo_id
    typer.echo(f"Mirroring {repo_id} on {src} to {target} on {dst}", err=True)
    with tqdm(total=0, unit="B", unit_scale=True, desc="Mirroring", disable=disable) as bar:
        said = {"at": float("-inf")}

        def progress(p: MirrorProgress) -> None:
            bar.total = p.bytes_total
            bar.n = p.bytes_done
            bar.set_postfix_str(f"revisions {p.revisions_done}/{p.revisions_total}, {p.pace}", refresh=False)
            bar.refresh()
            # Waiting for the target's commit budget: said in a line too (no bar outside a terminal), at
            # most every SAY_EVERY_S seconds.
            if p.waiting_s > 0 and time.monotonic() - said["at"] >= SAY_EVERY_S:
                said["at"] = time.monotonic()
                bar.write(f"waiting {p.waiting_s:.0f} s for the target's commit budget: {p.pace}", file=sys.stderr)

        result = run_mirror(
            repo_id,
            src_hub=src,
            dst_hub=dst,
            dst_repo_id=to_repo,
            force=force,
            src_token=src_token,
            dst_token=dst_token,
            deadline=deadline,
            progress=progress,
        )
    for name in result.copied:
        typer.echo(f"mirrored {name}")
    typer.echo(
        f"{target}: {len(result.copied)} revisions mirrored, {len(result.unchanged)} already there; "
        f"{result.commits} commits, {human_size(result.bytes_downloaded)} copied"
        + (f", tags moved: {', '.join(result.tags_moved)}" if result.tags_moved else "")
        + (f", tags deleted (as at the source): {', '.join(result.tags_deleted)}" if result.tags_deleted else "")
        + (f", pruned (as at the source): {', '.join(result.pruned)}" if result.pruned else "")
        + ("" if result.main_updated else ", main unchanged")
    )
