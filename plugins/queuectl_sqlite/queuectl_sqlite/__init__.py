"""queuectl's SQLite storage backend (the default).

Kept light: the implementation module is imported only when a store is
opened, so listing plugins costs nothing.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Literal

from pydantic import BaseModel, ConfigDict, Field

from queuectl_core import hookimpl
from queuectl_core.registry import BackendSpec, PluginContext

if TYPE_CHECKING:
    from queuectl_core.storage import Storage


class SqliteOptions(BaseModel):
    """``backends: {sqlite: {...}}`` in queuectl.yaml."""

    model_config = ConfigDict(extra="forbid")

    #: Database file; relative paths are taken from QUEUECTL_HOME.
    path: str = "queue.db"
    #: ``full`` (default) survives power loss after every acknowledged write;
    #: ``normal`` may lose the last transactions on power loss (never on a
    #: process crash) and is faster.
    synchronous: Literal["full", "normal"] = "full"
    #: How long a writer waits for the lock before giving up, in ms.
    busy_timeout_ms: int = Field(default=30_000, ge=100, le=600_000)


def _open(options: SqliteOptions | None, context: PluginContext) -> Storage:
    from .store import SqliteStorage

    opts = options or SqliteOptions()
    return SqliteStorage(
        context.home / opts.path,
        synchronous=opts.synchronous,
        busy_timeout_ms=opts.busy_timeout_ms,
    )


@hookimpl
def queuectl_storage_backends() -> Iterable[BackendSpec]:
    return [
        BackendSpec(
            name="sqlite",
            factory=_open,
            options_model=SqliteOptions,
            description="SQLite file under QUEUECTL_HOME (WAL, one machine, many workers)",
        )
    ]
