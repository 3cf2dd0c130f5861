"""Publishing: checkpoints → Hub revisions (job store, ordered background worker, stages, retention)."""

from .jobs import default_spool
from .options import PublishOptions
from .policies import Retention
from .publisher import PublishedRevision, Publisher, PublishError, RevisionCollisionError

__all__ = [
    "Publisher",
    "PublishOptions",
    "PublishedRevision",
    "PublishError",
    "RevisionCollisionError",
    "Retention",
    "default_spool",
]
