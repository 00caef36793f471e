"""The in-memory reference store passes the same conformance suite."""

from __future__ import annotations

from pathlib import Path

from queuectl_core.storage import Storage
from queuectl_core.testing import MemoryStorage, StorageConformance


class TestMemoryConformance(StorageConformance):
    supports_processes = False
    persistent = False

    def open_storage(self, home: Path) -> Storage:
        return MemoryStorage()
