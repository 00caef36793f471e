"""The PostgreSQL store against the backend conformance suite."""

from __future__ import annotations

from pathlib import Path

import psycopg
import pytest

from queuectl_core.storage import Storage
from queuectl_core.testing import StorageConformance
from queuectl_postgres.store import PostgresStorage


class TestPostgresConformance(StorageConformance):
    """Each test works in a schema named after ``self.namespace`` (unique to
    the test and the run), dropped by ``drop_storage``."""

    dsn = ""

    @pytest.fixture(autouse=True)
    def _server(self, pg_dsn: str, pg_admin: psycopg.Connection[tuple[object, ...]]) -> None:
        self.dsn = pg_dsn
        self.admin = pg_admin

    def __getstate__(self) -> dict[str, object]:
        """What a spawned child process gets (the kit passes the test to
        it): not the admin connection, which only this process may use."""
        return {k: v for k, v in self.__dict__.items() if k != "admin"}

    def open_storage(self, home: Path) -> Storage:
        return PostgresStorage(self.dsn, schema=self.namespace)

    def drop_storage(self, home: Path) -> None:
        self.admin.execute(f'DROP SCHEMA IF EXISTS "{self.namespace}" CASCADE')
