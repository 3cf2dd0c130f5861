"""Publishing: checkpoints → Hub revisions (journal, spool, ordered background worker, retention)."""

from .policies import Retention
from .publisher import PublishedRevision, Publisher, PublishError, RevisionCollisionError, default_spool

__all__ = ["Publisher", "PublishedRevision", "PublishError", "RevisionCollisionError", "Retention", "default_spool"]
