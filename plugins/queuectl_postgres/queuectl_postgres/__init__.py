"""queuectl's PostgreSQL storage backend: one queue shared by workers on
many machines.

The package imports nothing heavy (only ``dsn``: the standard library and
the core's errors). The hook implementation is in ``plugin`` (the entry
point); the store, with psycopg, is imported only when a store is opened:
``store`` (``PostgresStorage``), over ``connection`` (connections, errors,
LISTEN), ``schema`` (versioned migrations) and ``sql`` (the statements).
"""

from __future__ import annotations

from .dsn import DSN_ENV

TYPE_CHECKING = False
if TYPE_CHECKING:
    from .options import PostgresOptions

__all__ = ["DSN_ENV", "PostgresOptions"]


def __getattr__(name: str) -> object:
    # ``from queuectl_postgres import PostgresOptions`` still works, without importing pydantic
    # for plugin discovery.
    if name == "PostgresOptions":
        from .options import PostgresOptions

        return PostgresOptions
    raise AttributeError(name)
