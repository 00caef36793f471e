"""queuectl's JSON file storage backend.

Kept light: the implementation module is imported only when a store is
opened, so listing plugins costs nothing.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

from pydantic import BaseModel, ConfigDict, Field

from queuectl_core import hookimpl
from queuectl_core.registry import BackendSpec, PluginContext

if TYPE_CHECKING:
    from queuectl_core.storage import Storage


class JsonOptions(BaseModel):
    """``backends: {json: {...}}`` in queuectl.yaml."""

    model_config = ConfigDict(extra="forbid")

    #: Store directory; relative paths are taken from QUEUECTL_HOME.
    path: str = "json"
    #: ``true`` (default): every acknowledged change survives power loss
    #: (fsync of the journal, of each job file and of the directories).
    #: ``false``: still safe against a crashed or killed process, but the
    #: last changes may be lost on power loss; much faster.
    fsync: bool = True
    #: Fold the journal into a new snapshot once it is larger than this many
    #: bytes (or than the snapshot itself, whichever is larger).
    compact_bytes: int = Field(default=1_048_576, ge=4096, le=1 << 30)
    #: How long an operation waits for the store's lock before giving up, in ms.
    lock_timeout_ms: int = Field(default=30_000, ge=100, le=600_000)


def _open(options: JsonOptions | None, context: PluginContext) -> Storage:
    from .store import JsonStorage

    opts = options or JsonOptions()
    return JsonStorage(
        context.home / opts.path,
        fsync=opts.fsync,
        compact_bytes=opts.compact_bytes,
        lock_timeout_ms=opts.lock_timeout_ms,
    )


@hookimpl
def queuectl_storage_backends() -> Iterable[BackendSpec]:
    return [
        BackendSpec(
            name="json",
            factory=_open,
            options_model=JsonOptions,
            description="JSON files under QUEUECTL_HOME (journal + snapshot, one machine, "
                        "many workers)",
        )
    ]
