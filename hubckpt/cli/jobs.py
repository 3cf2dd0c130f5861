"""`hubckpt jobs REPO`: the publish jobs a spool knows — list them, retry a failed one, drop one."""

from __future__ import annotations

from pathlib import Path

import typer

from ._options import HubOpt, RootOpt, TokenOpt


def _state(record) -> str:
    if record.dropped:
        return "dropped"
    if record.failed is not None and record.indexed:
        # Its revision is on the hub (committed and listed); what failed came after (marking it final, tags,
        # retention): not a failed publish.
        return f"published; then failed ({'will retry' if record.retryable else '--retry to finish'}): {record.failed}"
    if record.failed is not None:
        return f"{'waiting to retry' if record.retryable else 'FAILED'}: {record.failed}"
    targets = record.captured.get("targets") or []
    if targets and record.finished_for(targets):
        return "published"
    progress = "committed" if record.committed else "converted" if record.manifest_sha256 else "captured"
    return f"pending ({progress})"


def _pick(records, which: str):
    if which.isdigit() and 1 <= int(which) <= len(records):
        return records[int(which) - 1]
    for record in records:
        if which in (record.revision, record.job):
            return record
    raise typer.BadParameter(f"no job {which!r}: give its number in the list or its revision name")


def jobs(
    repo: str = typer.Argument(..., help="The repo whose publish jobs to show (namespace/name)."),
    spool: Path | None = typer.Option(None, "--spool", help="Spool folder (default: ~/.cache/hubckpt/spool/<repo>)."),
    retry: str | None = typer.Option(None, "--retry", help="Retry this job (number or revision) now."),
    drop: str | None = typer.Option(None, "--drop", help="Forget this job and delete its staged files."),
    hub: str | None = HubOpt,
    root: Path | None = RootOpt,
    token: str | None = TokenOpt,
) -> None:
    """List the publish jobs of REPO's spool (published, pending, failed); retry or drop one."""
    from ..names import split_repo_id
    from ..publishing.jobs import JobStore, default_spool

    split_repo_id(repo)
    folder = spool or default_spool(repo)
    if not (folder / "journal.jsonl").is_file():
        typer.echo(f"No publish jobs for {repo} in {folder}.")
        return
    if retry is None and drop is None:
        records = [r for r in JobStore(folder, lock=False).records() if r.captured]
        typer.echo(f"{len(records)} job(s) in {folder}:")
        for number, record in enumerate(records, start=1):
            typer.echo(f"  {number:>3}  {record.revision:<22} step {record.step!s:<8} {_state(record)}")
        return
    store = JobStore(folder)  # the lock: no publisher may be running on this spool meanwhile
    try:
        records = [r for r in store.records() if r.captured]
        if drop is not None:
            record = _pick(records, drop)
            store.drop(record.job)
            typer.echo(f"Dropped {record.revision}; its staged files are deleted.")
        if retry is not None:
            record = _pick(records, retry)
            store.retry(record.job)
    finally:
        store.release()
    if retry is not None:
        from ..publishing import Publisher

        pub = Publisher(repo, hub=hub, root=root, token=token, spool_dir=folder)
        typer.echo(f"Retrying {record.revision} on {', '.join(t.describe() for t in pub.targets)}")
        pub.close()
        typer.echo("Done.")
