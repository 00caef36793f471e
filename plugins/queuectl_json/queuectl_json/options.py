"""Options of the queuectl_json plugin (``queuectl.yaml``), a pydantic model
imported only when the YAML gives options."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from queuectl_core.durations import Milliseconds

from . import DEFAULT_PATH


class JsonOptions(BaseModel):
    """``backends: {json: {...}}`` in queuectl.yaml."""

    model_config = ConfigDict(extra="forbid")

    #: Store directory; relative paths are taken from QUEUECTL_HOME.
    path: str = DEFAULT_PATH
    #: ``true`` (default): every acknowledged change survives power loss
    #: (fsync of the journal, of each job file and of the directories).
    #: ``false``: still safe against a crashed or killed process, but the
    #: last changes may be lost on power loss; much faster.
    fsync: bool = True
    #: Fold the journal into a new snapshot once it is larger than this many
    #: bytes (or than the snapshot itself, whichever is larger).
    compact_bytes: int = Field(default=1_048_576, ge=4096, le=1 << 30)
    #: How long an operation waits for the store's lock before giving up, in ms.
    lock_timeout_ms: Milliseconds = Field(default=30_000, ge=100, le=600_000)
