from __future__ import annotations

from pathlib import Path

from queuectl_core.storage import Storage
from queuectl_core.testing import StorageConformance
from queuectl_json.store import JsonStorage


class TestJsonConformance(StorageConformance):
    def open_storage(self, home: Path) -> Storage:
        return JsonStorage(home / "json")
