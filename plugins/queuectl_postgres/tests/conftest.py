"""Finding the PostgreSQL server the tests use.

DSN: ``QUEUECTL_TEST_POSTGRES_DSN``, default ``postgresql://127.0.0.1:5432/test``.
Every test works in schemas of its own and drops them afterwards, so the
database stays clean, and holds the shared PostgreSQL test lock while it
uses the server (``tests/postgres_lock.py`` in the checkout). No server:
the tests are skipped, unless ``QUEUECTL_REQUIRE_POSTGRES=1`` (set by CI),
which makes that a failure.
"""

from __future__ import annotations

import itertools
import os
import time
from collections.abc import Callable, Iterator
from typing import Any

import psycopg
import pytest

from queuectl_postgres.dsn import mask_secrets
from queuectl_postgres.store import PostgresStorage
from tests.postgres_lock import postgres_shared

DEFAULT_TEST_DSN = "postgresql://127.0.0.1:5432/test"
_counter = itertools.count()


def configured_dsn() -> str:
    return os.environ.get("QUEUECTL_TEST_POSTGRES_DSN") or DEFAULT_TEST_DSN


def drop_schemas(conn: psycopg.Connection[tuple[object, ...]], *names: str) -> None:
    for name in names:
        conn.execute(f'DROP SCHEMA IF EXISTS "{name}" CASCADE')


@pytest.fixture(scope="session")
def pg_server() -> str:
    """The DSN of a reachable server, or skip (fail under
    QUEUECTL_REQUIRE_POSTGRES=1)."""
    dsn = configured_dsn()
    try:
        with postgres_shared(dsn):
            psycopg.connect(dsn, connect_timeout=5).close()
    except psycopg.Error as exc:
        message = mask_secrets(
            f"PostgreSQL is not reachable at {dsn}: {' '.join(str(exc).split())}. "
            "To run these tests, start PostgreSQL (database 'test', trust auth on "
            "127.0.0.1:5432) or set QUEUECTL_TEST_POSTGRES_DSN to a database the tests may "
            "create schemas in. CI sets QUEUECTL_REQUIRE_POSTGRES=1, which turns this skip "
            "into a failure."
        )
        if os.environ.get("QUEUECTL_REQUIRE_POSTGRES") == "1":
            pytest.fail(message, pytrace=False)
        pytest.skip(message)
    return dsn


@pytest.fixture
def pg_dsn(pg_server: str) -> Iterator[str]:
    """The server's DSN, for one test: no other test restarts the server
    while it runs (``tests/postgres_lock.py``)."""
    with postgres_shared(pg_server):
        yield pg_server


@pytest.fixture
def pg_admin(pg_dsn: str) -> Iterator[psycopg.Connection[tuple[object, ...]]]:
    """An autocommit connection for the tests' own look-ups and sabotage
    (one per test: a session-wide one would not survive a restart of the
    server by another test)."""
    conn = psycopg.connect(pg_dsn, autocommit=True)
    yield conn
    conn.close()


@pytest.fixture
def new_schema(pg_admin: psycopg.Connection[tuple[object, ...]]) -> Iterator[Callable[[], str]]:
    """Make unique schema names; every schema named is dropped afterwards."""
    names: list[str] = []

    def make() -> str:
        name = f"qt_{os.getpid()}_{next(_counter)}"
        names.append(name)
        drop_schemas(pg_admin, name)
        return name

    yield make
    drop_schemas(pg_admin, *names)


@pytest.fixture
def schema(new_schema: Callable[[], str]) -> str:
    """A schema of the test's own (dropped afterwards)."""
    return new_schema()


@pytest.fixture
def open_store(pg_dsn: str, schema: str) -> Iterator[Callable[..., PostgresStorage]]:
    """Open stores on the test's schema (keyword arguments: those of
    PostgresStorage, and ``dsn``); all are closed afterwards."""
    stores: list[PostgresStorage] = []

    def opener(**kw: Any) -> PostgresStorage:
        store = PostgresStorage(kw.pop("dsn", pg_dsn), schema=kw.pop("schema", schema), **kw)
        stores.append(store)
        return store

    yield opener
    for store in stores:
        store.close()


@pytest.fixture
def terminate(pg_admin: psycopg.Connection[tuple[object, ...]]) -> Callable[[int], None]:
    """End a server process (``pg_terminate_backend``) and wait until it is gone."""

    def kill(pid: int) -> None:
        row = pg_admin.execute("SELECT pg_terminate_backend(%s)", (pid,)).fetchone()
        assert row == (True,)
        for _ in range(100):
            if pg_admin.execute("SELECT 1 FROM pg_stat_activity WHERE pid = %s",
                                (pid,)).fetchone() is None:
                return
            time.sleep(0.02)

    return kill
