"""The JSON backend's hook implementation (the ``queuectl`` entry point).

Kept apart from the package's ``__init__`` so that opening a store (its
factory is ``queuectl_json.store:open_store``) imports neither pluggy nor
this module: the CLI's start-up cache stays light on a JSON store too.
"""

from __future__ import annotations

from collections.abc import Iterable

from queuectl_core import hookimpl
from queuectl_core.registry import BackendSpec


@hookimpl
def queuectl_storage_backends() -> Iterable[BackendSpec]:
    return [
        BackendSpec(
            name="json",
            factory="queuectl_json.store:open_store",
            options_model="queuectl_json.options:JsonOptions",
            snapshot_options=True,  # open_store reads options.<field> only
            description="JSON files under QUEUECTL_HOME (journal + snapshot, one machine, "
                        "many workers)",
        )
    ]
