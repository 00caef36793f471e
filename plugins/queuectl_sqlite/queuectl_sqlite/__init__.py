"""queuectl's SQLite storage backend (the default).

The package imports nothing: the hook implementation is in ``plugin`` (the
entry point), the store in ``store``, and ``fast`` is the light module the
CLI's fast path uses, which must stay importable without pluggy or the
core's models.
"""

from __future__ import annotations


def __getattr__(name: str) -> object:
    # ``from queuectl_sqlite import SqliteOptions`` still works, without importing pydantic
    # for plugin discovery.
    if name == "SqliteOptions":
        from .options import SqliteOptions

        return SqliteOptions
    if name == "DEFAULT_PATH":
        from .fast import DEFAULT_PATH

        return DEFAULT_PATH
    raise AttributeError(name)
