"""The PostgreSQL store against the backend conformance suite. Each test
gets a schema of its own (derived from its ``home``), dropped afterwards."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from queuectl_core.storage import Storage
from queuectl_core.testing import StorageConformance
from queuectl_postgres.store import PostgresStorage


def schema_for(home: Path) -> str:
    """Stable for one test (its reopenings and child processes see the same
    data), different between tests."""
    return "qt_" + hashlib.sha256(os.fsencode(home)).hexdigest()[:20]


class TestPostgresConformance(StorageConformance):
    dsn = ""

    @pytest.fixture
    def home(self, tmp_path: Path, pg_dsn: str,
             pg_admin: psycopg.Connection[tuple[object, ...]]) -> Iterator[Path]:
        self.dsn = pg_dsn
        yield tmp_path
        # The store fixture (which needs home) is closed before this runs.
        pg_admin.execute(f'DROP SCHEMA IF EXISTS "{schema_for(tmp_path)}" CASCADE')

    def open_storage(self, home: Path) -> Storage:
        return PostgresStorage(self.dsn, schema=schema_for(home))
