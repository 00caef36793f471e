"""The PostgreSQL backend's hook implementation (the ``queuectl`` entry point).

Kept light: psycopg and the store module are imported only when a store is
opened, so listing plugins costs nothing. It is not the package's
``__init__`` so that the CLI's fast path can import ``queuectl_postgres.fast``
without pluggy.
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
            fast_path="queuectl_postgres.fast:open_fast",
            description="PostgreSQL database (many machines share one queue; "
                        f"dsn option or {DSN_ENV})",
        )
    ]
