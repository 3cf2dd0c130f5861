"""Every exception hubckpt raises, in one place.

Hierarchy::

    HubckptError                      base of everything below; catch this to catch all of hubckpt
    ├── InvalidNameError (ValueError)         a repo id, branch/tag name or file path that the Hub and git refuse
    ├── HubConfigError (ValueError)           a `hub=` / `--hub` value or server setting that cannot work
    ├── HubUnavailableError (ConnectionError) the hub could not be reached or the local hub did not start
    ├── AuthError (PermissionError)           user/org/token management errors (unknown user, duplicate token...)
    └── StorageError (RuntimeError)           the local hub's data folder is unusable (corrupt DB, missing object)

Errors raised by `huggingface_hub` itself (RepositoryNotFoundError, RevisionNotFoundError, ...) are
propagated unchanged: the local hub sends the same `X-Error-Code` headers as huggingface.co, so users
get exactly the exceptions they already know.

`HubHTTPError` is the server side's way to answer a request with a Hub-shaped error
(status, `X-Error-Code`, `X-Error-Message`, JSON body); it never escapes the server.
"""

from __future__ import annotations


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

    def __init__(self, status: int, message: str, code: str | None = None, headers: dict[str, str] | None = None,
                 extra: dict | None = None) -> None:
        self.status = status
        self.message = message
        self.code = code
        self.headers = dict(headers or {})
        self.extra = dict(extra or {})
        super().__init__(f"{status} {code or ''} {message}".strip())
