"""Publishing: checkpoints → Hub revisions (job store, ordered background worker, stages, retention)."""

from ..errors import PublishError, RevisionCollisionError
from .jobs import default_spool
from .options import PublishOptions
from .pipeline import PublishedRevision
from .policies import Retention
from .publisher import Publisher

__all__ = [
    "Publisher",
    "PublishOptions",
    "PublishedRevision",
    "PublishError",
    "RevisionCollisionError",
    "Retention",
    "default_spool",
]
