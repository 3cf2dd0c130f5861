"""`hubckpt publish`, `hubckpt watch`, `hubckpt resume`: turn checkpoints on disk into Hub revisions."""

from __future__ import annotations

import time
from concurrent.futures import Future
from functools import partial
from pathlib import Path

import typer

from ..defaults import MAX_SHARD_SIZE, REVISION_TEMPLATE
from ..errors import PublishFailedError
from ._options import HubOpt, RootOpt, TokenOpt

TemplateOpt = typer.Option(
    REVISION_TEMPLATE, "--template", help="Revision name template (fields: step, epoch, tokens, tokens_b, tokens_m)."
)
MonitorOpt = typer.Option(
    None, "--monitor", help="Metric deciding the `best` tag (default: the Trainer's best metric)."
)
ModeOpt = typer.Option("min", "--mode", help="min or max, for --monitor.")
KeepLastOpt = typer.Option(
    None, "--keep-last", help="Retention: keep the last K revisions (best, final and tagged ones always)."
)
KeepEveryOpt = typer.Option(None, "--keep-every", help="Retention: keep the revisions whose step is a multiple of N.")
KeepBestOpt = typer.Option(None, "--keep-best", help="Retention: keep the best M revisions by --monitor.")
RepoOpt = typer.Option(..., "--repo", help="Target repo, namespace/name (created if missing).")
SpoolOpt = typer.Option(
    None, "--spool", help="Spool folder (staged files + journal) (default: ~/.cache/hubckpt/spool/<repo>)."
)


def _publisher(
    repo: str,
    hub,
    root,
    token,
    private=False,
    template=REVISION_TEMPLATE,
    monitor=None,
    mode="min",
    keep_last=None,
    keep_every=None,
    keep_best=None,
    spool=None,
    max_shard_size=MAX_SHARD_SIZE,
    allow_global=(),
    options=None,
):
    from ..publishing import Publisher

    overrides = dict(hub=hub, root=root, token=token, spool_dir=spool)
    if options is None:  # (given: the options recorded in the journal, as they were)
        overrides.update(
            private=private,
            revision_template=template,
            monitor=monitor,
            mode=mode,
            keep_last=keep_last,
            keep_every=keep_every,
            keep_best=keep_best,
            max_shard_size=max_shard_size,
            allow_globals=allow_global,
        )
    pub = Publisher(repo, options=options, **overrides)
    for t in pub.targets:
        typer.echo(f"Publishing to {t.describe()}", err=True)
        t.reader.check_reachable()  # a hub that refuses connections fails now, not after reading the checkpoints
    return pub


def _already_published(pub, candidates: list[tuple[int, Path]]) -> set[int]:
    """Steps every hub already holds (checked on the hubs, not only in the journal)."""
    return pub.already_published(candidates)


def _parse_metrics(value: str | None) -> dict[str, float]:
    """`--metrics`: a JSON object of name → number, inline or in a file.

    NaN / Infinity are allowed, as Python writes them.
    """
    import json

    if not value:
        return {}
    text = Path(value).read_text() if not value.lstrip().startswith("{") and Path(value).is_file() else value
    try:
        data = json.loads(text)
    except ValueError as e:
        raise typer.BadParameter(f"not a JSON object: {e}", param_hint="--metrics") from e
    if not isinstance(data, dict) or not all(
        isinstance(v, (int, float)) and not isinstance(v, bool) for v in data.values()
    ):
        raise typer.BadParameter("give a JSON object of metric name → number", param_hint="--metrics")
    return {str(k): v for k, v in data.items()}


def _report(jobs: list[tuple[int | None, Path, Future]]) -> int:
    """One line per checkpoint (published, unchanged, failed and why, not finished); return how many failed."""
    failures = 0
    for step, path, future in jobs:
        label = f"step {step}" if step is not None else str(path)
        if not future.done():
            failures += 1
            typer.echo(f"  not finished {label} ({path}): still queued; `hubckpt resume` finishes it", err=True)
            continue
        error = future.exception()
        if error is None:
            result = future.result()
            verb = "unchanged" if result.skipped else "published"  # the run's plan above listed what would go
            note = " (already published)" if result.skipped else ""
            typer.echo(f"  {verb} {result.revision:<20} step {result.step}{note}")
        else:
            failures += 1
            reason = " ".join(str(error).split())
            where = "" if str(path) in reason else f" ({path})"  # (the checkpoint named once)
            typer.echo(f"  failed    {label}{where}: {type(error).__name__}: {reason}", err=True)
    if failures:
        typer.echo(
            f"{failures} of {len(jobs)} checkpoint(s) not published (listed above); the others were. "
            "Fix or remove those, then run the same command again: what is published is skipped.",
            err=True,
        )
    return failures


def _refuse_unreadable(src: Path, allow_global: list[str]) -> None:
    """Raise the reader's own error for a torch pickle it refuses (unsafe globals, corrupt); else return."""
    from .. import safe_pickle
    from ..readers.detect import sniff_file

    if src.is_file() and sniff_file(src) in ("torch-zip", "torch-legacy", "legacy-tar"):
        safe_pickle.load(src, allow_globals=allow_global, mmap=True)


def _failure_lines(failures: list[dict], listed: set) -> int:
    """A line per failure of a `PublishFailedError` whose step is not in `listed` (said already); how many."""
    extra = [f for f in failures if f.get("step") not in listed]
    for f in extra:
        reason = " ".join(str(f.get("message")).split())
        typer.echo(f"  failed    {f.get('revision')} (step {f.get('step')}): {f.get('error')}: {reason}", err=True)
    return len(extra)


def _wait_and_report(pub, jobs: list[tuple[int | None, Path, Future]]) -> int:
    """Wait for every job, then report each one, failures included, once; return how many failed."""
    try:
        pub.wait()
    except PublishFailedError as e:
        # The jobs' failures are reported per checkpoint below (the exit code says so); a job resumed from
        # the journal that failed is not one of them: said here.
        mine = {s for s, _, f in jobs if f.done() and f.exception() is not None}
        return _failure_lines(e.failures, mine) + _report(jobs)
    except Exception:
        _report(jobs)
        raise  # not a job's failure (the worker died...): the error boundary prints it
    return _report(jobs)


def publish(
    src: Path = typer.Argument(..., help="One checkpoint (file or folder), or a run folder holding many."),
    repo: str = RepoOpt,
    hub: str | None = HubOpt,
    root: Path | None = RootOpt,
    token: str | None = TokenOpt,
    step: int | None = typer.Option(None, "--step", help="Step of a single checkpoint whose step is not recorded."),
    revision: str | None = typer.Option(None, "--revision", help="Revision name for a single checkpoint."),
    final: bool = typer.Option(False, "--final", help="This (or the run's last) checkpoint is the final one."),
    private: bool = typer.Option(False, "--private", help="Create the repo private."),
    template: str = TemplateOpt,
    monitor: str | None = MonitorOpt,
    mode: str = ModeOpt,
    keep_last: int | None = KeepLastOpt,
    keep_every: int | None = KeepEveryOpt,
    keep_best: int | None = KeepBestOpt,
    spool: Path | None = SpoolOpt,
    max_shard_size: str = typer.Option(
        MAX_SHARD_SIZE, "--max-shard-size", help="Shard above this size, e.g. 5GB, 500MB."
    ),
    allow_global: list[str] = typer.Option([], "--allow-global", help="Trust this pickle global (module.Name)."),
    metrics: str | None = typer.Option(
        None,
        "--metrics",
        help="Metrics of a single checkpoint: a JSON object ('{\"eval_loss\": 0.41}') or a JSON file holding one.",
    ),
    companion: list[Path] = typer.Option(
        [],
        "--companion",
        help="A file to publish next to the weights of every checkpoint (config, tokenizer...); repeatable.",
    ),
) -> None:
    """Publish a checkpoint, or every not-yet-published checkpoint of a run folder in step order."""
    from ..readers import discover, kind_of

    parsed_metrics = _parse_metrics(metrics)
    for c in companion:
        if not c.is_file():
            raise typer.BadParameter(f"{c} is not a file", param_hint="--companion")

    pub = _publisher(
        repo,
        hub,
        root,
        token,
        private,
        template,
        monitor,
        mode,
        keep_last,
        keep_every,
        keep_best,
        spool,
        max_shard_size,
        allow_global,
    )
    with pub:
        if kind_of(src) == "run":
            if step is not None or revision is not None or parsed_metrics:
                raise typer.BadParameter("--step/--revision/--metrics apply to a single checkpoint, not a run folder")
            candidates = discover(src)
            done = _already_published(pub, candidates)
            todo = [(s, p) for s, p in candidates if s not in done]
            typer.echo(f"{src}: {len(candidates)} checkpoints, {len(done)} already published, {len(todo)} to publish")
            jobs: list[tuple[int | None, Path, Future]] = [
                (s, p, pub.publish(p, step=s, final=final and (s, p) == candidates[-1], companions=companion))
                for s, p in todo
            ]
            if final and candidates and candidates[-1][0] in done:  # published already: mark it final now
                s, p = candidates[-1]
                jobs.append((s, p, pub.publish(p, step=s, final=True, companions=companion)))
        else:
            from ..readers import peek_step

            if step is None:  # (read with --allow-global: the step may be inside a pickle needing it)
                step = peek_step(src, allow_globals=allow_global)[0]
            if step is None:
                _refuse_unreadable(src, allow_global)  # a refused or corrupt pickle says so, not "pass --step"
                raise typer.BadParameter(
                    f"cannot tell the training step of {src}: it records none and its name carries none; pass --step N",
                    param_hint="--step",
                )
            future = pub.publish(
                src, step=step, revision=revision, final=final, metrics=parsed_metrics, companions=companion
            )
            jobs = [(step, src, future)]
        failures = _wait_and_report(pub, jobs)
    if failures:
        raise typer.Exit(1)


def resume(
    repo: str = typer.Option(..., "--repo", help="The repo whose unfinished jobs to finish, namespace/name."),
    hub: str | None = HubOpt,
    root: Path | None = RootOpt,
    token: str | None = TokenOpt,
    spool: Path | None = SpoolOpt,
) -> None:
    """Finish what an interrupted publisher left in its journal (with the options its jobs were captured with)."""
    pub = _publisher(repo, hub, root, token, spool=spool, options=_journal_options(repo, spool))
    pending = pub.pending()
    typer.echo(
        f"Resuming {len(pending)} unfinished job(s): {', '.join(pending)}"
        if pending
        else "Nothing to resume: the journal has no unfinished job."
    )
    error: PublishFailedError | None = None
    try:
        pub.close()
    except PublishFailedError as e:
        error = e
        _failure_lines(e.failures, set())
    failed = [j.revision for j in pub.jobs() if j.failed is not None and not j.retryable and not j.dropped]
    if failed:
        typer.echo(
            f"{len(failed)} failed job(s) kept ({', '.join(failed)}): `hubckpt jobs {repo}` to retry or drop them",
            err=True,
        )
    if error is not None:
        typer.echo(f"{len(error.failures)} job(s) not published (listed above).", err=True)
        raise typer.Exit(1)
    typer.echo("Done.")


def _journal_options(repo: str, spool: Path | None):
    """The options the latest unfinished job of the spool was captured with (None: the defaults)."""
    from ..publishing.jobs import JobStore, default_spool
    from .jobs import recorded_options

    folder = spool or default_spool(repo)
    if not (folder / "journal.jsonl").is_file():
        return None
    records = [r for r in JobStore(folder, lock=False).records() if r.captured and r.captured.get("options")]
    open_ = [r for r in records if r.failed is None or r.retryable]
    latest = (open_ or records)[-1] if (open_ or records) else None
    return recorded_options(latest)


def _settled(path: Path, seen: dict[Path, tuple], settle_s: float) -> bool:
    """A checkpoint is complete once nothing in it changed for `settle_s` (and a Trainer folder has its state)."""
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
    if path.is_dir() and path.name.startswith("checkpoint-") and not (path / "trainer_state.json").exists():
        return False  # the Trainer writes trainer_state.json last
    if any(p.name.endswith((".tmp", ".incomplete", ".partial")) for p in files):
        return False
    signature = tuple((str(p), p.stat().st_size, p.stat().st_mtime_ns) for p in files)
    now = time.monotonic()
    previous = seen.get(path)
    if previous is None or previous[0] != signature:
        seen[path] = (signature, now)
        return False
    return now - previous[1] >= settle_s


def watch(
    run_dir: Path = typer.Argument(..., help="The training run's output folder."),
    repo: str = RepoOpt,
    hub: str | None = HubOpt,
    root: Path | None = RootOpt,
    token: str | None = TokenOpt,
    private: bool = typer.Option(False, "--private", help="Create the repo private."),
    template: str = TemplateOpt,
    monitor: str | None = MonitorOpt,
    mode: str = ModeOpt,
    keep_last: int | None = KeepLastOpt,
    keep_every: int | None = KeepEveryOpt,
    keep_best: int | None = KeepBestOpt,
    spool: Path | None = SpoolOpt,
    interval: float = typer.Option(5.0, "--interval", help="Seconds between scans."),
    settle: float = typer.Option(
        3.0, "--settle", help="Seconds a checkpoint must stay unchanged before it is published."
    ),
    once: bool = typer.Option(False, "--once", help="Publish what is complete now, then exit."),
) -> None:
    """Sidecar: publish each new checkpoint of RUN_DIR once completely written. Ctrl-C stops cleanly."""
    import signal

    from ..readers import discover

    if not run_dir.is_dir():
        raise typer.BadParameter(f"{run_dir} is not a folder", param_hint="RUN_DIR")
    pub = _publisher(repo, hub, root, token, private, template, monitor, mode, keep_last, keep_every, keep_best, spool)
    stop = {"now": False}

    def request_stop(*_):
        stop["now"] = True

    signal.signal(signal.SIGINT, request_stop)
    signal.signal(signal.SIGTERM, request_stop)
    submitted = _already_published(pub, discover(run_dir))
    seen: dict[Path, tuple] = {}
    typer.echo(f"Watching {run_dir} ({len(submitted)} checkpoint(s) already published); Ctrl-C to stop.")
    scans = 0
    said: set[int] = set()  # steps whose failure is printed already

    def done(step: int, f: Future) -> None:
        if f.exception() is None:
            typer.echo(f"  published {f.result().revision}")
        else:
            said.add(step)
            typer.echo(f"  failed    step {step}: {type(f.exception()).__name__}: {f.exception()}", err=True)

    error = None
    try:
        while not stop["now"]:
            scans += 1
            for step, path in discover(run_dir):
                if step in submitted or not _settled(path, seen, 0 if once else settle):
                    continue
                pub.publish(path, step=step).add_done_callback(partial(done, step))
                submitted.add(step)
            if once and scans >= 2:  # the first scan only records what each checkpoint looks like
                break
            deadline = time.monotonic() + (0 if once else interval)
            while time.monotonic() < deadline and not stop["now"]:
                time.sleep(0.1)
    finally:
        typer.echo("Stopping: finishing queued checkpoints...")
        try:
            pub.close()
        except PublishFailedError as e:  # (not raised over an error of the loop's: that one propagates)
            error = e
    if error is not None:
        _failure_lines(error.failures, said)  # (jobs resumed from the journal; the others are said above)
        typer.echo(
            f"Stopped; {len(error.failures)} checkpoint(s) not published (listed above): `hubckpt jobs {repo}` "
            "lists them; fix the cause, then `--retry` or `--drop` each.",
            err=True,
        )
        raise typer.Exit(1)
    typer.echo("Stopped.")
