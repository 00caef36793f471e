"""The SQLite backend's hook implementation (the ``queuectl`` entry point).

Kept light: the store module is named by its factory's import path only, so
listing plugins imports neither the store nor pydantic.
"""

from __future__ import annotations

from collections.abc import Iterable

from queuectl_core import hookimpl
from queuectl_core.registry import BackendSpec


@hookimpl
def queuectl_storage_backends() -> Iterable[BackendSpec]:
    return [
        BackendSpec(
            name="sqlite",
            factory="queuectl_sqlite.store:open_store",
            options_model="queuectl_sqlite.options:SqliteOptions",
            snapshot_options=True,  # open_store reads options.<field> only
            description="SQLite file under QUEUECTL_HOME (WAL, one machine, many workers)",
        )
    ]
