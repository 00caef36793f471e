"""Fixtures of the web plugin's tests: a real queue (SQLite in a temporary
QUEUECTL_HOME, or a PostgreSQL schema of its own) served by the dashboard's
ASGI app through Starlette's TestClient."""

from __future__ import annotations

import getpass
import itertools
import os
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from fastapi.testclient import TestClient
from web_helpers import PG_PASSWORD, Client, queue_app

from queuectl_core.app import App
from queuectl_web.reader import Reader
from queuectl_web.server import create_app
from tests.postgres_lock import postgres_shared

_schemas = itertools.count()


@pytest.fixture
def app(tmp_path: Path) -> Iterator[App]:
    queue = queue_app(tmp_path / "home")
    yield queue
    queue.close()


@pytest.fixture
def client(app: App) -> Iterator[Client]:
    """``client(token=None, allow_actions=False)``: a TestClient of the
    dashboard over ``app``."""
    made: list[TestClient] = []

    def make(*, token: str | None = None, allow_actions: bool = False) -> TestClient:
        test_client = TestClient(create_app(Reader(app), token=token,
                                            allow_actions=allow_actions))
        made.append(test_client)
        return test_client

    yield make
    for test_client in made:
        test_client.close()


@pytest.fixture
def pg_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A home whose queue is a PostgreSQL schema of its own, reached by a
    DSN that holds a password (trust auth accepts it)."""
    dsn = os.environ.get("QUEUECTL_TEST_POSTGRES_DSN") or "postgresql://127.0.0.1:5432/test"
    try:
        with postgres_shared(dsn):
            psycopg.connect(dsn, connect_timeout=5).close()
    except psycopg.Error as exc:
        message = f"PostgreSQL is not reachable at {dsn} ({exc}); start it to run this test"
        if os.environ.get("QUEUECTL_REQUIRE_POSTGRES") == "1":
            pytest.fail(message, pytrace=False)
        pytest.skip(message)
    schema = f"qweb_{os.getpid()}_{next(_schemas)}"
    home = tmp_path / "pg-home"
    home.mkdir()
    (home / "queuectl.yaml").write_text(
        f"backend: postgres\nbackends:\n  postgres:\n    schema: {schema}\n")
    with_password = dsn.replace("postgresql://", f"postgresql://{getpass.getuser()}:{PG_PASSWORD}@",
                                1) if "@" not in dsn else dsn
    monkeypatch.setenv("QUEUECTL_POSTGRES_DSN", with_password)
    with postgres_shared(dsn):
        try:
            yield home
        finally:
            with psycopg.connect(dsn, autocommit=True) as conn:
                conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
