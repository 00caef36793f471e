"""queuectl's SQLite storage backend (the default).

Kept light: the implementation module is imported only when a store is
opened, so listing plugins costs nothing.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

from queuectl_core import hookimpl
from queuectl_core.registry import BackendSpec, PluginContext

if TYPE_CHECKING:
    from queuectl_core.storage import Storage

    from .options import SqliteOptions

#: Database file, relative to QUEUECTL_HOME (the ``path`` option's default).
DEFAULT_PATH = "queue.db"


def _open(options: SqliteOptions | None, context: PluginContext) -> Storage:
    from .store import SqliteStorage

    if options is None:  # no options in the YAML: defaults, without pydantic
        return SqliteStorage(context.home / DEFAULT_PATH)
    return SqliteStorage(
        context.home / options.path,
        synchronous=options.synchronous,
        busy_timeout_ms=options.busy_timeout_ms,
    )


@hookimpl
def queuectl_storage_backends() -> Iterable[BackendSpec]:
    return [
        BackendSpec(
            name="sqlite",
            factory=_open,
            options_model="queuectl_sqlite.options:SqliteOptions",
            description="SQLite file under QUEUECTL_HOME (WAL, one machine, many workers)",
        )
    ]


def __getattr__(name: str) -> object:
    # ``from queuectl_sqlite import SqliteOptions`` still works, without importing pydantic
    # for plugin discovery.
    if name == "SqliteOptions":
        from .options import SqliteOptions

        return SqliteOptions
    raise AttributeError(name)
