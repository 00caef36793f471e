"""Options of the queuectl_sqlite plugin (``queuectl.yaml``), a pydantic model
imported only when the YAML gives options."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from queuectl_core.durations import Milliseconds

DEFAULT_PATH = "queue.db"


class SqliteOptions(BaseModel):
    """``backends: {sqlite: {...}}`` in queuectl.yaml."""

    model_config = ConfigDict(extra="forbid")

    #: Database file; relative paths are taken from QUEUECTL_HOME.
    path: str = DEFAULT_PATH
    #: ``full`` (default) survives power loss after every acknowledged write;
    #: ``normal`` may lose the last transactions on power loss (never on a
    #: process crash) and is faster.
    synchronous: Literal["full", "normal"] = "full"
    #: How long a writer waits for the lock before giving up, in ms.
    busy_timeout_ms: Milliseconds = Field(default=30_000, ge=100, le=600_000)
