"""queuectl's PostgreSQL storage backend: one queue shared by workers on
many machines.

The package imports nothing heavy (only ``dsn``: the standard library and
the core's errors). The hook implementation is in ``plugin`` (the entry
point), the store in ``store`` (with psycopg, imported only when a store is
opened), and ``fast`` is the light module the CLI's fast path uses, which
must stay importable without pluggy, pydantic or the core's models.
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
