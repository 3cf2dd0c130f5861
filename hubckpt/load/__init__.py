"""The consumer side: list and resolve revisions, load state dicts and models, lazy tensor reads, iteration.

Depends on the hub reader (`hubckpt.hub.reader`) and the formats (`checkpoint.json`, `revisions.json`),
never on `hubckpt.publishing`.
"""

from .download import Downloader, RevisionFiles, verify_cached
from .iterate import IteratedRevision, iter_revisions
from .lazy import LazyRevision, TensorMeta
from .loaders import PullResult, Revision, load_model, load_state_dict, open_revision, pull_revision
from .resolve import RepoRevisions, list_revisions, resolve_revision

__all__ = [
    "list_revisions",
    "resolve_revision",
    "load_state_dict",
    "load_model",
    "open_revision",
    "LazyRevision",
    "iter_revisions",
    "IteratedRevision",
    "TensorMeta",
    "pull_revision",
    "PullResult",
    "Revision",
    "RepoRevisions",
    "Downloader",
    "RevisionFiles",
    "verify_cached",
]
