"""queuectl's JSON file storage backend.

The package imports nothing: the hook implementation is in ``plugin`` (the
entry point), and the store (``store:open_store``, the factory) is imported
only when a store is opened, so listing plugins costs nothing.
"""

from __future__ import annotations

#: Store directory, relative to QUEUECTL_HOME (the ``path`` option's default).
DEFAULT_PATH = "json"


def __getattr__(name: str) -> object:
    # ``from queuectl_json import JsonOptions`` still works, without importing pydantic
    # for plugin discovery.
    if name == "JsonOptions":
        from .options import JsonOptions

        return JsonOptions
    raise AttributeError(name)
