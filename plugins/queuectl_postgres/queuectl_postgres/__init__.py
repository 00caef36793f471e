"""queuectl's PostgreSQL storage backend: one queue shared by workers on
many machines.

Kept light: psycopg and the implementation module are imported only when
a store is opened, so listing plugins costs nothing.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

from queuectl_core import hookimpl
from queuectl_core.registry import BackendSpec, PluginContext

from .dsn import DSN_ENV, resolve_dsn

if TYPE_CHECKING:
    from queuectl_core.storage import Storage

    from .options import PostgresOptions

__all__ = ["DSN_ENV", "PostgresOptions"]



def _open(options: PostgresOptions | None, context: PluginContext) -> Storage:
    from .options import PostgresOptions
    from .store import PostgresStorage

    opts = options or PostgresOptions()
    return PostgresStorage(
        resolve_dsn(opts.dsn),
        schema=opts.schema_name,
        connect_timeout_s=opts.connect_timeout_s,
    )


@hookimpl
def queuectl_storage_backends() -> Iterable[BackendSpec]:
    return [
        BackendSpec(
            name="postgres",
            factory=_open,
            options_model="queuectl_postgres.options:PostgresOptions",
            description="PostgreSQL database (many machines share one queue; "
                        f"dsn option or {DSN_ENV})",
        )
    ]


def __getattr__(name: str) -> object:
    # ``from queuectl_postgres import PostgresOptions`` still works, without importing pydantic
    # for plugin discovery.
    if name == "PostgresOptions":
        from .options import PostgresOptions

        return PostgresOptions
    raise AttributeError(name)
