"""queuectl's JSON file storage backend.

Kept light: the factory is named by its import path
(``queuectl_json.store:open_store``), so the store module is imported only
when a store is opened, and listing plugins costs nothing.
"""

from __future__ import annotations

from collections.abc import Iterable

from queuectl_core import hookimpl
from queuectl_core.registry import BackendSpec

#: Store directory, relative to QUEUECTL_HOME (the ``path`` option's default).
DEFAULT_PATH = "json"


@hookimpl
def queuectl_storage_backends() -> Iterable[BackendSpec]:
    return [
        BackendSpec(
            name="json",
            factory="queuectl_json.store:open_store",
            options_model="queuectl_json.options:JsonOptions",
            description="JSON files under QUEUECTL_HOME (journal + snapshot, one machine, "
                        "many workers)",
        )
    ]


def __getattr__(name: str) -> object:
    # ``from queuectl_json import JsonOptions`` still works, without importing pydantic
    # for plugin discovery.
    if name == "JsonOptions":
        from .options import JsonOptions

        return JsonOptions
    raise AttributeError(name)
