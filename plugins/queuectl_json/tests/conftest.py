"""Fixtures of the JSON store's tests."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from queuectl_core.ledger import Ledger
from queuectl_json.store import JsonStorage


@pytest.fixture
def root(tmp_path: Path) -> Path:
    return tmp_path / "store"


@pytest.fixture
def store(root: Path) -> Iterator[Ledger]:
    s = Ledger(JsonStorage(root, compact_bytes=1 << 30))  # compacts only when told
    yield s
    s.close()
