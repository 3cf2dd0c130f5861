"""`hubckpt pull REPO@REV DIR` / `hubckpt pull REPO DIR --step N`: a revision as a folder from_pretrained loads."""

from __future__ import annotations

import re
from pathlib import Path

import typer

from ..cards import human_size
from ._options import HubOpt, RootOpt, TokenOpt
from .revisions import reader_for, split_ref

StepOpt = typer.Option(None, "--step", help="Pull the revision at this step (see --match).")
TokensOpt = typer.Option(None, "--tokens", help="Pull the revision at this many tokens seen (see --match).")
MatchOpt = typer.Option("exact", "--match", help="For --step/--tokens: exact, nearest or at_or_before.")

_TRAINER_PICKLES = re.compile(r"^(optimizer\.pt|scheduler\.pt|scaler\.pt|rng_state.*\.pth|training_args\.bin)$")


def resolve_pull_revision(
    ref: str,
    step: int | None,
    tokens: int | None,
    match: str,
    hub: str | None,
    root: Path | None,
    token: str | None,
):
    """The pinned `Revision` a pull-like command means: REPO@REV, or REPO with --step / --tokens."""
    from ..errors import HubConfigError, RevisionLookupError
    from ..load.loaders import Revision
    from ..load.resolve import RepoRevisions

    repo, revision = split_ref(ref, need_revision=False)
    if revision is None and step is None and tokens is None:
        raise HubConfigError(
            f"Say which revision: {repo}@REVISION (a branch, tag, commit, best, latest, final) or --step N"
        )
    revs = RepoRevisions(reader_for(repo, hub, root, token))
    try:
        info = revs.resolve(revision, step=step, tokens=tokens, match=match)
    except RevisionLookupError as e:  # the library's hint is Python (match='nearest'); say it as options
        message = str(e).replace("match='nearest' or 'at_or_before'", "--match nearest or --match at_or_before")
        raise RevisionLookupError(message, repo_id=e.repo_id, wanted=e.wanted, nearest=e.nearest) from None
    return Revision(repo, info=info, revisions=revs)


def pull(
    ref: str = typer.Argument(..., help="namespace/name@revision, or namespace/name with --step"),
    dest: Path = typer.Argument(..., help="Folder to create (must be empty or absent; see --force)."),
    step: int | None = StepOpt,
    tokens: int | None = TokensOpt,
    match: str = MatchOpt,
    training_state: bool = typer.Option(False, "--training-state", help="Also copy training_state/."),
    trainer_checkpoint: bool = typer.Option(
        False,
        "--trainer-checkpoint",
        help="Write DEST as a Trainer checkpoint folder (optimizer.pt, scheduler.pt, "
        "rng_state.pth, trainer_state.json) for trainer.train(resume_from_checkpoint=DEST).",
    ),
    force: bool = typer.Option(False, "--force", help="Replace DEST if it is not empty."),
    hub: str | None = HubOpt,
    root: Path | None = RootOpt,
    token: str | None = TokenOpt,
) -> None:
    """Copy a revision (weights, config, tokenizer, card, checkpoint.json) into DEST, verified, pinned to its commit."""
    from ..errors import DestinationExistsError
    from ..load.loaders import pull_revision

    if not force and dest.exists() and (not dest.is_dir() or any(dest.iterdir())):
        raise DestinationExistsError(f"{dest} exists and is not empty: choose another folder, or pass --force")
    rev = resolve_pull_revision(ref, step, tokens, match, hub, root, token)
    if training_state and not trainer_checkpoint:
        from ..errors import TrainingStateMissingError
        from ..formats.manifest import TRAINING_STATE_DIR

        if not any(str(p).startswith(f"{TRAINING_STATE_DIR}/") for p in rev.files.files):
            raise TrainingStateMissingError(
                f"{rev.repo_id}@{rev.info.name} has no {TRAINING_STATE_DIR}/ to pull: it was published with weights "
                "only. Pull without --training-state, or publish with training_state= (hubckpt.Checkpointer, "
                "HubckptCallback, or checkpoint folders holding optimizer.pt)."
            )
    if trainer_checkpoint:
        from ..integrations.trainer_resume import require_training_state

        require_training_state(rev.files.files, f"{rev.repo_id}@{rev.info.name}")
    result = pull_revision(
        rev.repo_id, dest, rev=rev, training_state=training_state or trainer_checkpoint, overwrite=force
    )
    report_pull(result)  # first what was pulled, then what was made of it
    if trainer_checkpoint:
        from ..integrations.trainer_resume import write_trainer_checkpoint

        # The Trainer's pickles are written here from the pickle-free training_state/; ones the repo itself
        # holds (anyone's pickles) are never left in DEST, where trainer.train would torch.load them.
        for name in result.files:
            if _TRAINER_PICKLES.match(name):
                (result.folder / name).unlink(missing_ok=True)
        write_trainer_checkpoint(result.folder, result.folder, overwrite=True)
        typer.echo(f"Wrote a Trainer checkpoint: trainer.train(resume_from_checkpoint={str(result.folder)!r})")


def report_pull(result) -> None:
    info = result.info
    step = f"step {info.step}, " if info.step is not None else ""
    typer.echo(
        f"Pulled {info.name} ({step}commit {info.commit[:12]}) into {result.folder}: "
        f"{len(result.files)} files, {human_size(result.bytes)} (sha256 verified)"
    )
    if (result.folder / "config.json").exists():
        typer.echo(f"Load it: AutoModel.from_pretrained({str(result.folder)!r})")
