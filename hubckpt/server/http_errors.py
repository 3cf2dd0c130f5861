"""The one place where the local hub's domain errors become HTTP answers.

Storage (`storage.py`, `blobs.py`) raises the errors of `hubckpt.errors`; the API (`app.py`) and the
data plane (`dataplane.py`) both answer with `to_http(error)`, so a status code is chosen once.
"""

from __future__ import annotations

from ..errors import (
    DiskFullError,
    HubHTTPError,
    InvalidNameError,
    NoSuchEntryError,
    NoSuchRevisionError,
    ObjectMismatchError,
    RepoExistsError,
    StaleParentError,
    StorageBusyError,
    StorageError,
)

# Seconds a client is told to wait before retrying a busy hub.
RETRY_AFTER_S = 1


def to_http(error: BaseException) -> HubHTTPError | None:
    """The Hub-shaped HTTP error for a domain error; None for anything that is not one (a bug: 500)."""
    if isinstance(error, HubHTTPError):
        return error
    if isinstance(error, StaleParentError):
        return HubHTTPError(412, str(error))
    if isinstance(error, NoSuchRevisionError):
        return HubHTTPError(404, str(error), "RevisionNotFound")
    if isinstance(error, NoSuchEntryError):
        return HubHTTPError(404, str(error), "EntryNotFound")
    if isinstance(error, RepoExistsError):
        return HubHTTPError(409, str(error))
    if isinstance(error, ObjectMismatchError):
        return HubHTTPError(400, str(error))
    if isinstance(error, InvalidNameError):
        return HubHTTPError(400, str(error))
    if isinstance(error, DiskFullError):
        return HubHTTPError(507, str(error))
    if isinstance(error, StorageBusyError):
        return HubHTTPError(503, str(error), headers={"Retry-After": str(RETRY_AFTER_S)})
    if isinstance(error, StorageError):
        return HubHTTPError(500, str(error))
    return None


def server_busy(message: str) -> HubHTTPError:
    """503 with Retry-After: the hub is at its connection limit or its database is locked."""
    return HubHTTPError(503, message, headers={"Retry-After": str(RETRY_AFTER_S)})


def internal_error(request_id: str) -> HubHTTPError:
    """500 for an unexpected failure: the details are in the server log under `request_id`, not in the answer."""
    return HubHTTPError(
        500, f"Internal error of the hubckpt local hub (request {request_id}); the server log has the details."
    )
