"""The SQLite store against the backend conformance suite, plus what is
specific to SQLite (file permissions, damaged files, schema versions; the
upgrade from older schemas is in test_sqlite_schema.py, query plans and
costs in test_sqlite_plans.py)."""

from __future__ import annotations

import sqlite3
import stat
from pathlib import Path

import pytest

from queuectl_core.errors import StorageError
from queuectl_core.storage import Storage
from queuectl_core.testing import StorageConformance
from queuectl_sqlite.options import SqliteOptions
from queuectl_sqlite.schema import SCHEMA_VERSION
from queuectl_sqlite.store import SqliteStorage


class TestSqliteConformance(StorageConformance):
    def open_storage(self, home: Path) -> Storage:
        return SqliteStorage(home / "queue.db")


class TestSqliteNormalSyncConformance(StorageConformance):
    def open_storage(self, home: Path) -> Storage:
        return SqliteStorage(home / "queue.db", synchronous="normal")


def test_database_file_is_private(tmp_path: Path) -> None:
    SqliteStorage(tmp_path / "q.db").close()
    assert stat.S_IMODE((tmp_path / "q.db").stat().st_mode) == 0o600


def test_damaged_file_is_reported_and_left_alone(tmp_path: Path) -> None:
    path = tmp_path / "q.db"
    garbage = b"this is not a database" * 100
    path.write_bytes(garbage)
    with pytest.raises(StorageError, match=str(path)):
        SqliteStorage(path)
    assert path.read_bytes() == garbage


def test_newer_schema_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "q.db"
    SqliteStorage(path).close()
    conn = sqlite3.connect(path)
    conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    conn.close()
    with pytest.raises(StorageError, match="newer"):
        SqliteStorage(path)


def test_wal_and_full_sync_by_default(tmp_path: Path) -> None:
    store = SqliteStorage(tmp_path / "q.db")
    assert store.conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert store.conn.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL
    store.close()
    assert SqliteOptions().synchronous == "full"

