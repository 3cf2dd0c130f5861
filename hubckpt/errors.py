"""Every exception hubckpt raises, in one place.

Hierarchy::

    HubckptError                      base of everything below; catch this to catch all of hubckpt
    ├── InvalidNameError (ValueError)         a repo id, branch/tag name or file path that the Hub and git refuse
    ├── HubConfigError (ValueError)           a `hub=` / `--hub` value or server setting that cannot work
    ├── HubUnavailableError (ConnectionError) the hub could not be reached or the local hub did not start
    ├── AuthError (PermissionError)           user/org/token management errors (unknown user, duplicate token...)
    │   └── ReadOnlyTokenError                    a write (create a repo, commit) was refused: the token is a read token
    ├── StorageError (RuntimeError)           the local hub's data folder is unusable (corrupt DB, missing object)
    │   └── StorageBusyError                      the local hub's database stayed locked past the busy timeout; retry
    ├── HubStateError                         a local hub storage call refused by the repo's state (server side)
    │   ├── StaleParentError                      `parent_commit` is no longer the branch head
    │   ├── NoSuchRevisionError (LookupError)     no such branch / tag / commit
    │   ├── NoSuchEntryError (LookupError)        no such file or folder at that revision
    │   ├── RepoExistsError (FileExistsError)     a repo of that name exists already
    │   └── ObjectMismatchError (ValueError)      uploaded bytes do not match the announced sha256 / size
    ├── CheckpointError                       a checkpoint on disk (attribute `path`)
    │   ├── UnsupportedCheckpointError (ValueError)  not a format hubckpt reads (or one it refuses, e.g. legacy tar)
    │   ├── CorruptCheckpointError (ValueError)      truncated, malformed or inconsistent
    │   ├── UnsafeCheckpointError (ValueError)       a pickle needing globals outside the allowlist (`globals`)
    │   └── VerificationError (RuntimeError)         written output does not read back bit-identical
    ├── DestinationExistsError (FileExistsError)  output exists and overwriting was not asked for
    ├── DiskFullError (OSError)               no space (or file size limit) while writing; nothing left behind
    ├── RevisionCollisionError (FileExistsError)  a revision name already published with other content
    ├── MirrorConflictError (FileExistsError)     a mirror's target holds other content under the same branch
    ├── MirrorIncompleteError (RuntimeError)      a mirror stopped midway (429s past the retries...); rerun it
    ├── PublishError (RuntimeError)           a background publish job could not complete
    │   └── PublishFailedError                    raised by wait()/close(): which revisions failed, and why
    ├── SpoolBusyError (RuntimeError)         another process owns the publisher's spool (attribute `pid`)
    ├── RankMismatchError (RuntimeError)      torch.distributed ranks made different Checkpointer calls (steps)
    ├── RevisionLookupError (LookupError)     no revision at that step / tokens / `best`...; names the nearest
    ├── AmbiguousRevisionError (ValueError)   a name that is both a branch and a tag (at different commits)
    ├── IntegrityError (OSError)              a downloaded file does not match its sha256 (removed from the cache)
    ├── HubContentError (ValueError)          a file or answer from a hub failed hubckpt's checks; refused, unused
    ├── UnknownRevisionError (huggingface_hub RevisionNotFoundError)   no branch, tag or commit of that name
    ├── NoSafetensorsError (huggingface_hub NotASafetensorsRepoError)  a revision without safetensors weights
    ├── AnalysisError (ValueError)            analysis inputs that cannot work (probe file, layers, revisions)
    ├── RestoreError (ValueError)             a revision's training state cannot go into these objects; nothing changed
    │   ├── StateMismatchError                names / shapes / dtypes / param groups differ (`mismatches`)
    │   └── TrainingStateMissingError (LookupError)  the revision was published without training_state/
    └── MissingExtraError (ImportError)       a feature needs an optional dependency; names the extra to install

Errors raised by `huggingface_hub` itself (RepositoryNotFoundError, RevisionNotFoundError, ...) are
propagated unchanged: the local hub sends the same `X-Error-Code` headers as huggingface.co, so users
get exactly the exceptions they already know.

The `HubStateError` family and `StorageBusyError` are raised by the local hub's storage layer and
mapped to HTTP statuses in one place (`hubckpt.server.http_errors`).

`HubHTTPError` is the server side's way to answer a request with a Hub-shaped error
(status, `X-Error-Code`, `X-Error-Message`, JSON body); it never escapes the server.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any


class HubckptError(Exception):
    """Base class of all hubckpt errors.

    Every class below also inherits the matching builtin (`ValueError`, `LookupError`, `OSError`...), so
    `except HubckptError` catches all of hubckpt and `except LookupError` still works where it reads better.

    What to do:
        Read the message: each hubckpt error says what was wrong and, where there is one, what to change.
        On the command line, `hubckpt --debug ...` (or `HUBCKPT_DEBUG=1`) shows the full traceback.
    """


class InvalidNameError(HubckptError, ValueError):
    """A repo id, ref name or path in repo is not valid on the Hub / in git.

    Attributes:
        kind: what was being validated ("repo id", "branch name", "tag name", "path").
        value: the offending value.
        reason: why it was refused.

    What to do:
        Use a name the Hub accepts: a repo id is `namespace/name` (letters, digits, `-`, `_`, `.`; no `--` or
        `..`); branch and tag names follow `git check-ref-format --branch`; a revision name template must
        render to such a name for every step.
    """

    def __init__(self, kind: str, value: str, reason: str) -> None:
        self.kind = kind
        self.value = value
        self.reason = reason
        super().__init__(f"Invalid {kind} {value!r}: {reason}")


class HubConfigError(HubckptError, ValueError):
    """A hub selection or server setting that cannot work as given.

    What to do:
        Pass `hub="local"`, `hub="hf"` or a full `http(s)://` URL (also `--hub`, `HUBCKPT_HUB`, `HF_ENDPOINT`);
        a local hub listening beyond loopback needs token authentication first (`hubckpt token create`).
    """


class HubUnavailableError(HubckptError, ConnectionError):
    """The hub could not be reached, or the local hub could not be started.

    What to do:
        Check the URL and the network. For the local hub, read `server.log` in its data folder
        (`~/.cache/hubckpt/hub` by default); `hubckpt stop` then any command starts a fresh one. A publisher
        keeps jobs whose hub was unreachable and resumes them at its next start (or `hubckpt resume`).
    """


class AuthError(HubckptError, PermissionError):
    """User, organisation or token management failed (unknown user, duplicate token...).

    What to do:
        Create the user or organisation first (`hubckpt user add NAME`, `hubckpt org add NAME`), pick another
        token name, and check `hubckpt token list`.
    """


class ReadOnlyTokenError(AuthError):
    """The hub refused a write (create a repo, commit, branch, tag) because the token is a read token.

    Attributes:
        role: the token's role as the hub reported it (`read`).

    What to do:
        Publish with a write token. On a hubckpt local hub: `hubckpt token create --user NAME --role write`
        (printed once); on huggingface.co: https://huggingface.co/settings/tokens. Pass it with `--token` /
        `token=`, or `HUBCKPT_TOKEN` (`HF_TOKEN` for huggingface.co). A publisher keeps the failed jobs:
        `hubckpt jobs REPO --retry N` publishes them once the token is right.
    """

    def __init__(self, message: str, *, role: str | None = None) -> None:
        super().__init__(message)
        self.role = role


class StorageError(HubckptError, RuntimeError):
    """The local hub's data folder is unusable.

    What to do:
        Check the disk and the permissions of the data folder; `server.log` there names the file. A folder
        from another tool or a damaged `hub.sqlite3` cannot be served: point `--root` / `HUBCKPT_HUB_ROOT`
        at a fresh folder and publish again.
    """


class HubHTTPError(HubckptError):
    """An HTTP error answer of the local hub, shaped like the Hub's (server-internal).

    Args:
        status: HTTP status code.
        message: human message, sent as `X-Error-Message` and `{"error": message}`.
        code: optional `X-Error-Code` (`RepoNotFound`, `RevisionNotFound`, `EntryNotFound`, ...).
        headers: extra response headers (e.g. `X-Repo-Commit` on EntryNotFound).
        extra: extra fields of the JSON body.

    What to do:
        Nothing: it never leaves the server. Clients see the HTTP answer, which `huggingface_hub` turns into
        its own errors (`RepositoryNotFoundError`, `RevisionNotFoundError`...).
    """

    def __init__(
        self,
        status: int,
        message: str,
        code: str | None = None,
        headers: dict[str, str] | None = None,
        extra: dict[str, Any] | None = None,
    ) -> None:
        self.status = status
        self.message = message
        self.code = code
        self.headers = dict(headers or {})
        self.extra = dict(extra or {})
        super().__init__(f"{status} {code or ''} {message}".strip())


# -- checkpoints and conversion -------------------------------------------------------------------


class CheckpointError(HubckptError):
    """Base of the errors about a checkpoint on disk. `path` names the offending file or folder.

    Args:
        message: what is wrong.
        path: the offending file or folder, if known.

    What to do:
        See the subclass; the message and `path` name the file to look at.
    """

    def __init__(self, message: str, path: str | None = None) -> None:
        self.path = path
        super().__init__(message)


class UnsupportedCheckpointError(CheckpointError, ValueError):
    """The input is not a checkpoint format hubckpt recognises (e.g. a legacy tar torch file).

    What to do:
        Pass a Trainer `checkpoint-N/` folder, a `torch.save` state dict (or nanoGPT / Lightning file),
        safetensors, a torch.distributed.checkpoint folder, or a run folder of these. Re-save legacy tar
        files with a recent torch (`torch.save(torch.load(f), g)`) in a trusted environment.
    """


class CorruptCheckpointError(CheckpointError, ValueError):
    """The input looks like a known format but is truncated, malformed or inconsistent.

    What to do:
        The named file is damaged (often: copied or written while training still wrote it). Take it again
        from a complete save; `hubckpt watch` only publishes checkpoints once they are fully written.
    """


class UnsafeCheckpointError(CheckpointError, ValueError):
    """A pickle needs globals outside the weights-only allowlist; nothing from it was run.

    Args:
        message: what was refused.
        path: the pickle file.
        globals: the offending `module.Name` strings.

    What to do:
        If you trust the file, allow the named globals: `--allow-global module.Name` on the command line,
        `allow_globals=["module.Name"]` in Python. There is no unsafe fallback.
    """

    def __init__(self, message: str, path: str | None = None, globals: list[str] | None = None) -> None:
        self.globals = list(globals or [])
        super().__init__(message, path)


class VerificationError(CheckpointError, RuntimeError):
    """What was written does not read back bit-identical to the input.

    What to do:
        Nothing was kept. Suspect the disk or memory; run the conversion again, and report it if it repeats.
    """


class DestinationExistsError(HubckptError, FileExistsError):
    """The output path already exists and overwriting was not asked for.

    What to do:
        Choose another destination, or pass `--overwrite` / `overwrite=True` (`--force` for `hubckpt pull`).
    """


class DiskFullError(HubckptError, OSError):
    """The disk filled up (or a file size limit was hit) while writing; nothing partial was left behind.

    What to do:
        Free space where the message says (the output folder, the spool `~/.cache/hubckpt/spool`, the local
        hub's data folder), then run the same command again.
    """


# -- publishing -----------------------------------------------------------------------------------


class RevisionCollisionError(HubckptError, FileExistsError):
    """A revision of that name already exists on the hub with different content.

    What to do:
        Publish under another name: another revision template (`revision_template=` / `--template`) or
        name (`revision=` / `--revision`). If the new content should win, pass `replace=True` to
        `Publisher.publish`, or delete that branch first (e.g. `HfApi().delete_branch`). The same content
        again is simply `skipped`; a final save of a published step marks it final without new content.
    """

    @classmethod
    def of(cls, repo_id: str, name: str, where: str | None = None) -> RevisionCollisionError:
        """The one message for a collision of revision `name` in `repo_id` (on the hub `where`)."""
        on = f" on {where}" if where else ""
        return cls(
            f"{repo_id}{on} already has a revision {name!r} with different content. Publish it under another "
            "revision template or name (--template / --revision; revision_template= / revision=), pass "
            "replace=True to Publisher.publish to replace it, or delete that branch first."
        )


class MirrorConflictError(HubckptError, FileExistsError):
    """The mirror's target repo holds other content under branch names the source has; nothing was changed.

    Attributes:
        conflicts: one line per branch in the way (its name and why).

    Args:
        message: the conflicts and what to do.
        conflicts: one line per branch in the way.

    What to do:
        Mirror to another repo (`--to-repo NAME` / `dst_repo_id=`), delete those branches on the target, or
        pass `--force` (`force=True`) to overwrite what differs.
    """

    def __init__(self, message: str, conflicts: list[str] | None = None) -> None:
        self.conflicts = list(conflicts or [])
        super().__init__(message)


class MirrorIncompleteError(HubckptError, RuntimeError):
    """A mirror stopped before it copied everything: the target kept refusing (e.g. 429s past the retries),
    failed, or the deadline passed. What was copied is complete on the target.

    Attributes:
        mirrored: revision branches the target holds (copied now or before).
        pending: revision branches not mirrored yet.

    Args:
        message: the cause, what was mirrored and what was not.
        mirrored: revision branches the target holds.
        pending: revision branches not mirrored yet.

    What to do:
        Run the same mirror again once the target accepts commits (after its rate-limit window, or with a
        longer `--deadline`): it continues where this one stopped, each revision copied exactly once.
    """

    def __init__(self, message: str, mirrored: list[str] | None = None, pending: list[str] | None = None) -> None:
        self.mirrored = list(mirrored or [])
        self.pending = list(pending or [])
        super().__init__(message)


class PublishError(HubckptError, RuntimeError):
    """A background publish job could not complete (the message says which revision and why).

    What to do:
        Fix the cause named in the message, then `hubckpt jobs REPO --retry N` (the failed job stays in the
        spool) or `--drop N` to forget it. Later jobs are not blocked by it.
    """


class PublishFailedError(PublishError):
    """Checkpoints saved or queued for publishing were not published; raised by `wait()` / `close()` / a
    `with` block's end of `Publisher` and `Checkpointer`, whatever failed in the background.

    Attributes:
        failures: one dict per revision that was not published: `revision`, `step`, `error` (the cause's
            class name) and `message` (the cause's message). The first cause is also `__cause__`, in
            both background modes (from the publishing process: the same hubckpt error class with its
            message, or a `PublishError` naming another class).

    What to do:
        Read each cause: a read-only token needs a token with write access (`--token`, `HF_TOKEN`); a
        `RevisionCollisionError` needs another revision name (`--template` / `--revision`) or
        `replace=True` (`Publisher.publish`); an unreachable hub needs
        the hub running (`hubckpt serve`) or the right `hub=` / `--hub`; a full disk needs space for the
        spool. The jobs stay in the spool: `hubckpt jobs REPO` lists them, `--retry N` publishes one again
        once the cause is fixed, `--drop N` forgets it.
    """

    def __init__(self, failures: list[dict[str, Any]], repo_id: str | None = None) -> None:
        self.failures = failures
        self.repo_id = repo_id
        listed = "; ".join(
            f"{f.get('revision')} (step {f.get('step')}): {f.get('error')}: {f.get('message')}" for f in failures
        )
        super().__init__(
            f"{len(failures)} checkpoint(s) not published: {listed}. They stay in the spool: "
            f"`hubckpt jobs {repo_id or 'REPO'}` lists them; fix the cause, then `--retry` or `--drop` each."
        )


class SpoolBusyError(HubckptError, RuntimeError):
    """Another process owns the publisher's spool (its journal and staged files). `pid`: the owner, if known.

    Args:
        message: which spool, and who holds it.
        pid: the owner's process id, if known.

    What to do:
        Wait for that process (a Checkpointer's publishing child finishes its last uploads first) or stop it;
        only one publisher per spool. To publish the same repo from two processes, give each its own `spool=`.
    """

    def __init__(self, message: str, pid: int | None = None) -> None:
        self.pid = pid
        super().__init__(message)


class RankMismatchError(HubckptError, RuntimeError):
    """The ranks of a torch.distributed job did not make the same collective `Checkpointer` call.

    Raised on every rank: ranks called `save()` with different steps, one called `close()` while another
    saved, they hold different parameters, a rank did not arrive within `rank_timeout` seconds (it
    skipped a save, ended early or died), or a rank's background work did not answer within
    `background_timeout` seconds (stuck, or its process gone). Nothing of that call was published. After a
    mismatch the process group stays usable; after a rank did not arrive, that `Checkpointer` is out of
    step and raises this at once on every later collective call (`save()`).

    What to do:
        Call `save(step)`, `wait()`, `close()` and `restore()` on every rank, in the same order, with the
        same step (save on every rank, not only on rank 0), and build the same model on every rank. After
        a timeout, close the Checkpointer and make a new one on every rank, or restart the job.
    """


# -- local hub storage (server side; mapped to HTTP by hubckpt.server.http_errors) ------------------


class StorageBusyError(StorageError):
    """The local hub's database stayed locked (another process writing?) past the busy timeout; retry later.

    What to do:
        Clients see it as 503 with `Retry-After` and retry by themselves; if it persists, look for another
        process holding `hub.sqlite3` of that data folder.
    """


class HubStateError(HubckptError):
    """A local hub storage operation was refused because of the current state of a repo.

    What to do:
        Nothing: raised inside the local hub and answered as the Hub would (404, 409, 412...); clients get
        `huggingface_hub`'s errors.
    """


class StaleParentError(HubStateError):
    """A commit named a `parent_commit` that is no longer the head of its branch; nothing was written.

    What to do:
        Server side (412 to the client). hubckpt re-reads the branch and retries by itself.
    """


class NoSuchRevisionError(HubStateError, LookupError):
    """No branch, tag or commit of that name (attribute `revision`).

    Args:
        revision: the name asked for.

    What to do:
        Server side (a `RevisionNotFoundError` for the client): check the name with `hubckpt ls REPO --all`.
    """

    def __init__(self, revision: str) -> None:
        self.revision = revision
        super().__init__(f"Invalid rev id: {revision}")


class NoSuchEntryError(HubStateError, LookupError):
    """No file or folder at that path in the revision (attribute `path`).

    Args:
        path: the path asked for.

    What to do:
        Server side (an `EntryNotFoundError` for the client): check the path with `hubckpt show REPO@REV`.
    """

    def __init__(self, path: str) -> None:
        self.path = path
        super().__init__(f"A file with this name doesn't exist: {path}")


class RepoExistsError(HubStateError, FileExistsError):
    """A repo of that name exists already (attribute `repo_id`).

    Args:
        repo_id: the repo.

    What to do:
        Server side (409 for the client): pass `exist_ok=True` to `create_repo`, or choose another name.
    """

    def __init__(self, repo_id: str) -> None:
        self.repo_id = repo_id
        super().__init__(f"A model repository called {repo_id} already exists")


class ObjectMismatchError(HubStateError, ValueError):
    """Uploaded bytes do not match the sha256 or size they were announced with; nothing was stored.

    What to do:
        Server side (400 for the client): the file changed while it was uploaded; upload it again.
    """


class AnalysisError(HubckptError, ValueError):
    """Analysis inputs that cannot work: an unreadable probe, a text probe without a tokenizer, unknown
    layers, too few revisions.

    What to do:
        Give a probe as a text file (one example a line) for revisions published with a tokenizer (pass
        `companions=` with its files), or a safetensors file with an `input_ids` tensor `[n, seq]`; pick
        layers the model has (`--layers 0,-1`) and at least two revisions.
    """


# -- loading --------------------------------------------------------------------------------------


class RevisionLookupError(HubckptError, LookupError):
    """No revision matches what was asked (a step, a token count, `best` in a repo without one...).

    Attributes:
        repo_id: the repo searched.
        wanted: what was asked, e.g. "step 1234".
        nearest: names of the nearest revisions that do exist (may be empty).

    Args:
        message: what was asked and what exists.
        repo_id: the repo searched.
        wanted: what was asked, e.g. "step 1234".
        nearest: names of the nearest revisions that do exist.

    What to do:
        Ask for one of the `nearest` revisions, pass `match="nearest"` or `match="at_or_before"`
        (`--match` on the command line), or list what exists with `hubckpt ls REPO`. A repo without a
        monitored metric has no `best`: publish with `monitor=`.
    """

    def __init__(self, message: str, *, repo_id: str, wanted: str, nearest: list[str] | None = None) -> None:
        self.repo_id = repo_id
        self.wanted = wanted
        self.nearest = list(nearest or [])
        super().__init__(message)


class AmbiguousRevisionError(HubckptError, ValueError):
    """A revision name is both a branch and a tag of the repo: pass the commit instead.

    What to do:
        Pass the commit sha (from `hubckpt ls REPO --all`), or delete or rename the tag that shadows the branch.
    """


class IntegrityError(HubckptError, OSError):
    """A downloaded or remotely read file does not match what its revision records (sha256, size, header).

    The bad copy has been removed from the cache. Attributes: `path` (repo@revision/file).

    Args:
        message: which file and what differs.
        path: repo@revision/file.

    What to do:
        Load again: the file is downloaded afresh. If it fails again, the file on the hub differs from what
        its `checkpoint.json` records; publish that revision again with `replace=True`.
    """

    def __init__(self, message: str, path: str | None = None) -> None:
        self.path = path
        super().__init__(message)


class HubContentError(HubckptError, ValueError):
    """A file or an answer from a hub failed hubckpt's checks: it was refused before it was used.

    Everything read from a hub is untrusted input (`revisions.json`, `checkpoint.json`, `training_state/`,
    safetensors headers, commit ids, file names, listings): a file that is not what its format says, too
    large, too deeply nested, or that names a path, commit or tensor layout that cannot be right, is
    refused whole. Nothing was written outside the cache and nothing was loaded.

    Attributes: `repo_id`, `revision`, `path` (the file, or what was asked), each None where not known.

    What to do:
        The repo (or the hub) holds something hubckpt did not publish or that was tampered with. If it is
        your repo, publish the revision again (or run `hubckpt reindex REPO` for `revisions.json`); if it
        is someone else's, tell its owner, and do not load from it.
    """

    def __init__(
        self, message: str, *, repo_id: str | None = None, revision: str | None = None, path: str | None = None
    ) -> None:
        self.repo_id = repo_id
        self.revision = revision
        self.path = path
        super().__init__(message)


# Two errors are also huggingface_hub's own, so code that catches the client's errors catches ours. They
# are built on first use (PEP 562), because importing huggingface_hub here would make `import hubckpt` heavy.
# Type checkers and the docs (griffe) read the declarations under TYPE_CHECKING; `_build` makes the same
# classes at run time and gives them these docstrings (tests/test_docs.py checks they match).

_LAZY_DOCS = {
    "UnknownRevisionError": """The repo has no branch, tag or commit of that name (also huggingface_hub's
    RevisionNotFoundError).

    Raised with the hub's own 404 response (`response`), and a message that says what to do.

    What to do:
        List what exists with `hubckpt ls REPO --all` (or `hubckpt.list_revisions`), check the repo id and
        the hub (`--hub`), or ask by step (`step=`, `--step`) instead of by name.
    """,
    "NoSafetensorsError": """The revision has no safetensors weights (also huggingface_hub's NotASafetensorsRepoError).

    What to do:
        Publish the checkpoint through hubckpt (`hubckpt publish`, `Publisher`), which converts it to
        safetensors, or convert it yourself (`hubckpt convert`) and upload the result.
    """,
}

if TYPE_CHECKING:
    from huggingface_hub.errors import NotASafetensorsRepoError, RevisionNotFoundError

    class UnknownRevisionError(HubckptError, RevisionNotFoundError):
        """The repo has no branch, tag or commit of that name (also huggingface_hub's
        RevisionNotFoundError).

        Raised with the hub's own 404 response (`response`), and a message that says what to do.

        What to do:
            List what exists with `hubckpt ls REPO --all` (or `hubckpt.list_revisions`), check the repo id and
            the hub (`--hub`), or ask by step (`step=`, `--step`) instead of by name.
        """

    class NoSafetensorsError(HubckptError, NotASafetensorsRepoError):
        """The revision has no safetensors weights (also huggingface_hub's NotASafetensorsRepoError).

        What to do:
            Publish the checkpoint through hubckpt (`hubckpt publish`, `Publisher`), which converts it to
            safetensors, or convert it yourself (`hubckpt convert`) and upload the result.
        """


_BUILT: dict[str, type] = {}


def _build(name: str) -> type:
    import huggingface_hub.errors as hf_errors

    if name == "UnknownRevisionError":

        class UnknownRevisionError(HubckptError, hf_errors.RevisionNotFoundError):
            def __str__(self) -> str:
                return str(self.args[0]) if self.args else super().__str__()

        return UnknownRevisionError

    class NoSafetensorsError(HubckptError, hf_errors.NotASafetensorsRepoError):
        pass

    return NoSafetensorsError


def __getattr__(name: str) -> type:
    if name in _LAZY_DOCS:
        if name not in _BUILT:
            cls = _build(name)
            cls.__module__, cls.__qualname__, cls.__doc__ = __name__, name, _LAZY_DOCS[name]
            _BUILT[name] = cls
        return _BUILT[name]
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


# -- installation ---------------------------------------------------------------------------------


class MissingExtraError(HubckptError, ImportError):
    """A feature needs an optional dependency that is not installed; the message names the extra.

    Attributes:
        extra: the extra that installs it (`pip install "hubckpt[<extra>]"`).
        feature: what needed it, in words ("plots").
        module: the module that could not be imported (also `name`, as for ImportError).

    What to do:
        Install the extra the message names: `pip install "hubckpt[analysis]"` (matplotlib, for plots) or
        `pip install "hubckpt[trainer]"` (accelerate, for the transformers Trainer); or skip the feature
        (`analyze(..., plots=False)`).
    """

    def __init__(self, extra: str, feature: str, module: str) -> None:
        self.extra = extra
        self.feature = feature
        self.module = module
        message = f'{module} is needed for {feature} but is not installed: pip install "hubckpt[{extra}]"'
        super().__init__(message, name=module)


# -- restoring ------------------------------------------------------------------------------------


class RestoreError(HubckptError, ValueError):
    """A revision's training state cannot be restored into the given objects; nothing was changed.

    What to do:
        See the subclass; build the model, optimizer and scheduler as the run that published the revision did.
    """


class StateMismatchError(RestoreError):
    """What the revision holds does not fit the model / optimizer given.

    Attributes:
        mismatches: one line per difference ("missing in the revision: ...", "shape ...").

    Args:
        message: a summary.
        mismatches: one line per difference.

    What to do:
        Build the objects as the publishing run did (same architecture, optimizer type and param groups,
        scheduler type); `strict=False` loads what fits and lists the rest in `Restored.mismatches`.
    """

    def __init__(self, message: str, mismatches: list[str] | None = None) -> None:
        self.mismatches = list(mismatches or [])
        super().__init__(message)


class TrainingStateMissingError(RestoreError, LookupError):
    """The revision has no `training_state/` (it was published from weights alone).

    What to do:
        Publish with training state: `hubckpt.Checkpointer(..., optimizer=...)`, the Trainer callback, or
        `Publisher.publish(..., training_state={...})`; or load the weights alone with `load_state_dict`.
    """
