"""queuectl's JSON file storage backend.

Kept light: the implementation module is imported only when a store is
opened, so listing plugins costs nothing.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

from queuectl_core import hookimpl
from queuectl_core.registry import BackendSpec, PluginContext

if TYPE_CHECKING:
    from queuectl_core.storage import Storage

    from .options import JsonOptions

#: Store directory, relative to QUEUECTL_HOME (the ``path`` option's default).
DEFAULT_PATH = "json"


def _open(options: JsonOptions | None, context: PluginContext) -> Storage:
    from .store import JsonStorage

    if options is None:  # no options in the YAML: defaults, without pydantic
        return JsonStorage(context.home / DEFAULT_PATH)
    return JsonStorage(
        context.home / options.path,
        fsync=options.fsync,
        compact_bytes=options.compact_bytes,
        lock_timeout_ms=options.lock_timeout_ms,
    )


@hookimpl
def queuectl_storage_backends() -> Iterable[BackendSpec]:
    return [
        BackendSpec(
            name="json",
            factory=_open,
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
