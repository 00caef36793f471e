"""The PostgreSQL backend's hook implementation (the ``queuectl`` entry point).

Kept light: the factory is named by its import path
(``queuectl_postgres.store:open_store``), so psycopg and the store module are
imported only when a store is opened, and listing plugins costs nothing.
"""

from __future__ import annotations

from collections.abc import Iterable

from queuectl_core import hookimpl
from queuectl_core.registry import BackendSpec

from .dsn import DSN_ENV


@hookimpl
def queuectl_storage_backends() -> Iterable[BackendSpec]:
    return [
        BackendSpec(
            name="postgres",
            factory="queuectl_postgres.store:open_store",
            options_model="queuectl_postgres.options:PostgresOptions",
            snapshot_options=True,  # open_store reads options.<field> only
            # The DSN may carry a password: never in a job's environment
            # (where `env` would show it) nor in a cache.
            secret_env=(DSN_ENV,),
            secret_options=("dsn",),
            description="PostgreSQL database (many machines share one queue; "
                        f"dsn option or {DSN_ENV})",
        )
    ]
