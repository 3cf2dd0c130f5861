"""The public API of hubckpt, listed once.

`__init__.py` loads each name from this list on first use (lazy_loader.attach_stub), so
`import hubckpt` stays light; type checkers and IDEs read the same list.
"""

from .analysis.pipeline import (
    analyze as analyze,
)
from .cards import (
    CardOptions as CardOptions,
)
from .checkpoint import (
    Checkpoint as Checkpoint,
)
from .conversion import (
    ConvertResult as ConvertResult,
    convert as convert,
)
from .conversion.training_state import (
    capture_rng as capture_rng,
    load_training_state as load_training_state,
    restore_rng as restore_rng,
)
from .errors import (
    AmbiguousRevisionError as AmbiguousRevisionError,
    AnalysisError as AnalysisError,
    AuthError as AuthError,
    CheckpointError as CheckpointError,
    CorruptCheckpointError as CorruptCheckpointError,
    DestinationExistsError as DestinationExistsError,
    DiskFullError as DiskFullError,
    HubckptError as HubckptError,
    HubConfigError as HubConfigError,
    HubContentError as HubContentError,
    HubUnavailableError as HubUnavailableError,
    IntegrityError as IntegrityError,
    InvalidNameError as InvalidNameError,
    MirrorConflictError as MirrorConflictError,
    MirrorIncompleteError as MirrorIncompleteError,
    MissingExtraError as MissingExtraError,
    NoSafetensorsError as NoSafetensorsError,
    PublishError as PublishError,
    PublishFailedError as PublishFailedError,
    RankMismatchError as RankMismatchError,
    ReadOnlyTokenError as ReadOnlyTokenError,
    RestoreError as RestoreError,
    RevisionCollisionError as RevisionCollisionError,
    RevisionLookupError as RevisionLookupError,
    SpoolBusyError as SpoolBusyError,
    StateMismatchError as StateMismatchError,
    StorageError as StorageError,
    TrainingStateMissingError as TrainingStateMissingError,
    UnknownRevisionError as UnknownRevisionError,
    UnsafeCheckpointError as UnsafeCheckpointError,
    UnsupportedCheckpointError as UnsupportedCheckpointError,
    VerificationError as VerificationError,
)
from .formats.index import (
    RevisionIndex as RevisionIndex,
    RevisionInfo as RevisionInfo,
)
from .hub.commits import (
    commit_folder as commit_folder,
)
from .hub.local import (
    ensure_local_hub as ensure_local_hub,
)
from .hub.reader import (
    HubReader as HubReader,
)
from .hub.select import (
    Hub as Hub,
    hub_api as hub_api,
    point_hf_clients_at as point_hf_clients_at,
    resolve_hub as resolve_hub,
)
from .load import (
    LazyRevision as LazyRevision,
    iter_revisions as iter_revisions,
    list_revisions as list_revisions,
    load_model as load_model,
    load_state_dict as load_state_dict,
    open_revision as open_revision,
    pull_revision as pull_revision,
    resolve_revision as resolve_revision,
)
from .load.restore import (
    Restored as Restored,
    restore as restore,
)
from .publishing import (
    PublishedRevision as PublishedRevision,
    Publisher as Publisher,
    PublishOptions as PublishOptions,
    Retention as Retention,
)
from .publishing.checkpointer import (
    Checkpointer as Checkpointer,
)
from .publishing.mirror import (
    MirrorProgress as MirrorProgress,
    MirrorResult as MirrorResult,
    mirror as mirror,
)
from .readers import (
    discover as discover,
    read_checkpoint as read_checkpoint,
)
from .revisions import (
    render_revision_name as render_revision_name,
)
from .server import (
    LocalHubServer as LocalHubServer,
)
from .version import (
    __version__ as __version__,
)
