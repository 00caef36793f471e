"""Test kit for backend authors (opt-in; nothing here registers itself with
pytest). See docs/writing-plugins.md.

    from queuectl_core.testing import StorageConformance

    class TestMyStore(StorageConformance):
        def open_storage(self, home):          # return a Storage in ``home``
            return MyStore(home / "data")
"""

from __future__ import annotations

from .conformance import StorageConformance
from .memory import MemoryStorage

__all__ = ["MemoryStorage", "StorageConformance"]
