"""The SQLite backend's hook implementation (the ``queuectl`` entry point).

Kept light: the store module is imported only when a store is opened, so
listing plugins costs nothing. It is not the package's ``__init__`` so that
the CLI's fast path can import ``queuectl_sqlite.fast`` without pluggy.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

from queuectl_core import hookimpl
from queuectl_core.registry import BackendSpec, PluginContext

from .fast import DEFAULT_PATH

if TYPE_CHECKING:
    from queuectl_core.storage import Storage

    from .options import SqliteOptions


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
            fast_path="queuectl_sqlite.fast:open_fast",
            description="SQLite file under QUEUECTL_HOME (WAL, one machine, many workers)",
        )
    ]

