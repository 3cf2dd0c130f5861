"""Every exception hubckpt raises, in one place.

Hierarchy::

    HubckptError                      base of everything below; catch this to catch all of hubckpt
    ├── InvalidNameError (ValueError)         a repo id, branch/tag name or file path that the Hub and git refuse
    ├── HubConfigError (ValueError)           a `hub=` / `--hub` value or server setting that cannot work
    ├── HubUnavailableError (ConnectionError) the hub could not be reached or the local hub did not start
    ├── AuthError (PermissionError)           user/org/token management errors (unknown user, duplicate token...)
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
    ├── PublishError (RuntimeError)           a background publish job could not complete
    ├── SpoolBusyError (RuntimeError)         another process owns the publisher's spool (attribute `pid`)
    ├── RevisionLookupError (LookupError)     no revision at that step / tokens / `best`...; names the nearest
    ├── AmbiguousRevisionError (ValueError)   a name that is both a branch and a tag (at different commits)
    ├── IntegrityError (OSError)              a downloaded file does not match its sha256 (removed from the cache)
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
    """Base class of all hubckpt errors."""


class InvalidNameError(HubckptError, ValueError):
    """A repo id, ref name or path in repo is not valid on the Hub / in git.

    Attributes:
        kind: what was being validated ("repo id", "branch name", "tag name", "path").
        value: the offending value.
    """

    def __init__(self, kind: str, value: str, reason: str) -> None:
        self.kind = kind
        self.value = value
        self.reason = reason
        super().__init__(f"Invalid {kind} {value!r}: {reason}")


class HubConfigError(HubckptError, ValueError):
    """A hub selection or server setting that cannot work as given."""


class HubUnavailableError(HubckptError, ConnectionError):
    """The hub could not be reached, or the local hub could not be started."""


class AuthError(HubckptError, PermissionError):
    """User, organisation or token management failed (unknown user, duplicate token...)."""


class StorageError(HubckptError, RuntimeError):
    """The local hub's data folder is unusable."""


class HubHTTPError(HubckptError):
    """An HTTP error answer of the local hub, shaped like the Hub's (server-internal).

    Args:
        status: HTTP status code.
        message: human message, sent as `X-Error-Message` and `{"error": message}`.
        code: optional `X-Error-Code` (`RepoNotFound`, `RevisionNotFound`, `EntryNotFound`, ...).
        headers: extra response headers (e.g. `X-Repo-Commit` on EntryNotFound).
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
    """Base of the errors about a checkpoint on disk. `path` names the offending file or folder."""

    def __init__(self, message: str, path: str | None = None) -> None:
        self.path = path
        super().__init__(message)


class UnsupportedCheckpointError(CheckpointError, ValueError):
    """The input is not a checkpoint format hubckpt recognises (e.g. a legacy tar torch file)."""


class CorruptCheckpointError(CheckpointError, ValueError):
    """The input looks like a known format but is truncated, malformed or inconsistent."""


class UnsafeCheckpointError(CheckpointError, ValueError):
    """A pickle needs globals outside the weights-only allowlist; nothing from it was run.

    Attributes:
        globals: the offending `module.Name` strings.
    """

    def __init__(self, message: str, path: str | None = None, globals: list[str] | None = None) -> None:
        self.globals = list(globals or [])
        super().__init__(message, path)


class VerificationError(CheckpointError, RuntimeError):
    """What was written does not read back bit-identical to the input."""


class DestinationExistsError(HubckptError, FileExistsError):
    """The output path already exists and overwriting was not asked for."""


class DiskFullError(HubckptError, OSError):
    """The disk filled up (or a file size limit was hit) while writing; nothing partial was left behind."""


# -- publishing -----------------------------------------------------------------------------------


class RevisionCollisionError(HubckptError, FileExistsError):
    """A revision of that name already exists on the hub with different content."""


class PublishError(HubckptError, RuntimeError):
    """A background publish job could not complete (the message says which revision and why)."""


class SpoolBusyError(HubckptError, RuntimeError):
    """Another process owns the publisher's spool (its journal and staged files). `pid`: the owner, if known."""

    def __init__(self, message: str, pid: int | None = None) -> None:
        self.pid = pid
        super().__init__(message)


# -- local hub storage (server side; mapped to HTTP by hubckpt.server.http_errors) ------------------


class StorageBusyError(StorageError):
    """The local hub's database stayed locked (another process writing?) past the busy timeout; retry later."""


class HubStateError(HubckptError):
    """A local hub storage operation was refused because of the current state of a repo."""


class StaleParentError(HubStateError):
    """A commit named a `parent_commit` that is no longer the head of its branch; nothing was written."""


class NoSuchRevisionError(HubStateError, LookupError):
    """No branch, tag or commit of that name (attribute `revision`)."""

    def __init__(self, revision: str) -> None:
        self.revision = revision
        super().__init__(f"Invalid rev id: {revision}")


class NoSuchEntryError(HubStateError, LookupError):
    """No file or folder at that path in the revision (attribute `path`)."""

    def __init__(self, path: str) -> None:
        self.path = path
        super().__init__(f"A file with this name doesn't exist: {path}")


class RepoExistsError(HubStateError, FileExistsError):
    """A repo of that name exists already (attribute `repo_id`)."""

    def __init__(self, repo_id: str) -> None:
        self.repo_id = repo_id
        super().__init__(f"A model repository called {repo_id} already exists")


class ObjectMismatchError(HubStateError, ValueError):
    """Uploaded bytes do not match the sha256 or size they were announced with; nothing was stored."""


class AnalysisError(HubckptError, ValueError):
    """Analysis inputs that cannot work: an unreadable probe, a text probe without a tokenizer, unknown
    layers, too few revisions."""


# -- loading --------------------------------------------------------------------------------------


class RevisionLookupError(HubckptError, LookupError):
    """No revision matches what was asked (a step, a token count, `best` in a repo without one...).

    Attributes:
        repo_id: the repo searched.
        wanted: what was asked, e.g. "step 1234".
        nearest: names of the nearest revisions that do exist (may be empty).
    """

    def __init__(self, message: str, *, repo_id: str, wanted: str, nearest: list[str] | None = None) -> None:
        self.repo_id = repo_id
        self.wanted = wanted
        self.nearest = list(nearest or [])
        super().__init__(message)


class AmbiguousRevisionError(HubckptError, ValueError):
    """A revision name is both a branch and a tag of the repo: pass the commit instead."""


class IntegrityError(HubckptError, OSError):
    """A downloaded or remotely read file does not match what its revision records (sha256, size, header).

    The bad copy has been removed from the cache. Attributes: `path` (repo@revision/file).
    """

    def __init__(self, message: str, path: str | None = None) -> None:
        self.path = path
        super().__init__(message)


# Two errors are also huggingface_hub's own, so code that catches the client's errors catches ours. They
# are built on first use (PEP 562), because importing huggingface_hub here would make `import hubckpt` heavy:
#
#   UnknownRevisionError(HubckptError, RevisionNotFoundError)  no branch, tag or commit of that name
#   NoSafetensorsError(HubckptError, NotASafetensorsRepoError)  a revision without safetensors weights

if TYPE_CHECKING:  # what `_build` makes, spelled out for type checkers (they do not run __getattr__)
    from huggingface_hub.errors import NotASafetensorsRepoError, RevisionNotFoundError

    class UnknownRevisionError(HubckptError, RevisionNotFoundError): ...

    class NoSafetensorsError(HubckptError, NotASafetensorsRepoError): ...


_BUILT: dict[str, type] = {}


def _build(name: str) -> type:
    import huggingface_hub.errors as hf_errors

    if name == "UnknownRevisionError":

        class UnknownRevisionError(HubckptError, hf_errors.RevisionNotFoundError):
            """The repo has no branch, tag or commit of that name (also huggingface_hub's RevisionNotFoundError).

            Raised with the hub's own 404 response (`response`), and a message that says what to do.
            """

            def __str__(self) -> str:
                return str(self.args[0]) if self.args else super().__str__()

        return UnknownRevisionError

    class NoSafetensorsError(HubckptError, hf_errors.NotASafetensorsRepoError):
        """The revision has no safetensors weights (also huggingface_hub's NotASafetensorsRepoError)."""

    return NoSafetensorsError


def __getattr__(name: str) -> type:
    if name in ("UnknownRevisionError", "NoSafetensorsError"):
        if name not in _BUILT:
            cls = _build(name)
            cls.__module__, cls.__qualname__ = __name__, name
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
    """A revision's training state cannot be restored into the given objects; nothing was changed."""


class StateMismatchError(RestoreError):
    """What the revision holds does not fit the model / optimizer given.

    Attributes:
        mismatches: one line per difference ("missing in the revision: ...", "shape ...").
    """

    def __init__(self, message: str, mismatches: list[str] | None = None) -> None:
        self.mismatches = list(mismatches or [])
        super().__init__(message)


class TrainingStateMissingError(RestoreError, LookupError):
    """The revision has no `training_state/` (it was published from weights alone)."""
