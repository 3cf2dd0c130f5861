"""hubckpt: publish every training checkpoint as a documented, loadable Hugging Face Hub revision.

`import hubckpt` stays light: heavy parts (the server, torch, transformers) load on first use.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .errors import (
    AnalysisError,
    AuthError,
    CheckpointError,
    CorruptCheckpointError,
    DestinationExistsError,
    DiskFullError,
    HubckptError,
    HubConfigError,
    HubUnavailableError,
    InvalidNameError,
    PublishError,
    RestoreError,
    RevisionCollisionError,
    SpoolBusyError,
    StateMismatchError,
    StorageError,
    TrainingStateMissingError,
    UnsafeCheckpointError,
    UnsupportedCheckpointError,
    VerificationError,
)
from .version import __version__

_LAZY = {
    "LocalHubServer": ("hubckpt.server", "LocalHubServer"),
    "resolve_hub": ("hubckpt.hubs", "resolve_hub"),
    "ensure_local_hub": ("hubckpt.hubs", "ensure_local_hub"),
    "hub_api": ("hubckpt.hubs", "hub_api"),
    "Hub": ("hubckpt.hubs", "Hub"),
    "point_hf_clients_at": ("hubckpt.hubs", "point_hf_clients_at"),
    "convert": ("hubckpt.conversion", "convert"),
    "ConvertResult": ("hubckpt.conversion", "ConvertResult"),
    "read_checkpoint": ("hubckpt.readers", "read_checkpoint"),
    "discover": ("hubckpt.readers", "discover"),
    "Checkpoint": ("hubckpt.checkpoint", "Checkpoint"),
    "load_training_state": ("hubckpt.conversion.training_state", "load_training_state"),
    "capture_rng": ("hubckpt.conversion.training_state", "capture_rng"),
    "restore_rng": ("hubckpt.conversion.training_state", "restore_rng"),
    "commit_folder": ("hubckpt.commits", "commit_folder"),
    "Publisher": ("hubckpt.publishing", "Publisher"),
    "PublishedRevision": ("hubckpt.publishing", "PublishedRevision"),
    "Retention": ("hubckpt.publishing", "Retention"),
    "CardOptions": ("hubckpt.cards", "CardOptions"),
    "Checkpointer": ("hubckpt.integrations.checkpointer", "Checkpointer"),
    "restore": ("hubckpt.load.restore", "restore"),
    "Restored": ("hubckpt.load.restore", "Restored"),
    "RevisionIndex": ("hubckpt.formats.index", "RevisionIndex"),
    "RevisionInfo": ("hubckpt.formats.index", "RevisionInfo"),
    "render_revision_name": ("hubckpt.revisions", "render_revision_name"),
    "list_revisions": ("hubckpt.load", "list_revisions"),
    "resolve_revision": ("hubckpt.load", "resolve_revision"),
    "load_state_dict": ("hubckpt.load", "load_state_dict"),
    "load_model": ("hubckpt.load", "load_model"),
    "open_revision": ("hubckpt.load", "open_revision"),
    "iter_revisions": ("hubckpt.load", "iter_revisions"),
    "pull_revision": ("hubckpt.load", "pull_revision"),
    "LazyRevision": ("hubckpt.load", "LazyRevision"),
    "HubReader": ("hubckpt.hub_reader", "HubReader"),
    "RevisionLookupError": ("hubckpt.errors", "RevisionLookupError"),
    "AmbiguousRevisionError": ("hubckpt.errors", "AmbiguousRevisionError"),
    "IntegrityError": ("hubckpt.errors", "IntegrityError"),
    "UnknownRevisionError": ("hubckpt.errors", "UnknownRevisionError"),
    "NoSafetensorsError": ("hubckpt.errors", "NoSafetensorsError"),
    "analyze": ("hubckpt.analysis.pipeline", "analyze"),
}

if TYPE_CHECKING:
    from .cards import CardOptions
    from .checkpoint import Checkpoint
    from .commits import commit_folder
    from .conversion import ConvertResult, convert
    from .conversion.training_state import capture_rng, load_training_state, restore_rng
    from .formats.index import RevisionIndex, RevisionInfo
    from .hubs import Hub, ensure_local_hub, hub_api, point_hf_clients_at, resolve_hub
    from .integrations.checkpointer import Checkpointer
    from .load.restore import Restored, restore
    from .publishing import PublishedRevision, Publisher, Retention
    from .readers import discover, read_checkpoint
    from .revisions import render_revision_name
    from .server import LocalHubServer
    from .errors import (AmbiguousRevisionError, IntegrityError, NoSafetensorsError, RevisionLookupError,
                         UnknownRevisionError)
    from .hub_reader import HubReader
    from .load import (LazyRevision, iter_revisions, list_revisions, load_model, load_state_dict, open_revision, pull_revision,
                       resolve_revision)


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        module, attr = _LAZY[name]
        return getattr(importlib.import_module(module), attr)
    raise AttributeError(f"module 'hubckpt' has no attribute {name!r}")


def __dir__() -> list[str]:
    """The public names, lazily loaded ones included (tab completion, `dir(hubckpt)`)."""
    return sorted(set(globals()) | set(_LAZY))


__all__ = [
    "__version__", "HubckptError", "InvalidNameError", "HubConfigError", "HubUnavailableError", "AuthError",
    "StorageError", "CheckpointError", "CorruptCheckpointError", "UnsupportedCheckpointError", "UnsafeCheckpointError",
    "VerificationError", "AnalysisError", "DestinationExistsError", "DiskFullError", "RevisionCollisionError", "SpoolBusyError", "PublishError", "RestoreError", "StateMismatchError", "TrainingStateMissingError",
    *_LAZY,
]
