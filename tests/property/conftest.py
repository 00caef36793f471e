"""Fixtures for the property-based tests.

PostgreSQL: the same rules as ``plugins/queuectl_postgres/tests/conftest.py``.
The server is ``QUEUECTL_TEST_POSTGRES_DSN`` (default
``postgresql://127.0.0.1:5432/test``). When it does not answer, the PostgreSQL
cases are skipped, unless ``QUEUECTL_REQUIRE_POSTGRES=1`` (CI), which makes
that a failure. Every schema a test creates is dropped afterwards. A test
holds the shared PostgreSQL test lock (``tests/postgres_lock.py``) while it
uses the server.

CLI: ``cli_home`` points ``QUEUECTL_HOME`` at a private directory for the
test and removes every other ``QUEUECTL_*`` variable that could change what
the in-process CLI does.
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.postgres_lock import postgres_shared

DEFAULT_TEST_DSN = "postgresql://127.0.0.1:5432/test"
_counter = itertools.count()

#: Variables that would make the in-process CLI use another queue or config,
#: turn an internal error into a traceback, or turn off (or report on) the
#: start-up cache of the console script.
_CLI_ENV = ("QUEUECTL_BACKEND", "QUEUECTL_CONFIG", "QUEUECTL_POSTGRES_DSN",
            "QUEUECTL_DISABLE_PLUGINS", "QUEUECTL_DEBUG", "QUEUECTL_STARTUP_CACHE")


def configured_dsn() -> str:
    return os.environ.get("QUEUECTL_TEST_POSTGRES_DSN") or DEFAULT_TEST_DSN


def _unavailable(message: str) -> None:
    if os.environ.get("QUEUECTL_REQUIRE_POSTGRES") == "1":
        pytest.fail(message, pytrace=False)
    pytest.skip(message)


@pytest.fixture(scope="session")
def pg_server() -> str:
    """The DSN of a reachable server, or skip (fail under
    QUEUECTL_REQUIRE_POSTGRES=1)."""
    dsn = configured_dsn()
    try:
        import psycopg

        from queuectl_postgres.dsn import mask_secrets
    except ImportError as exc:
        _unavailable(f"queuectl-postgres or psycopg is not installed: {exc}")
        raise AssertionError("unreachable") from None
    try:
        with postgres_shared(dsn):
            psycopg.connect(dsn, connect_timeout=5).close()
    except psycopg.Error as exc:
        _unavailable(mask_secrets(
            f"PostgreSQL is not reachable at {dsn}: {' '.join(str(exc).split())}. "
            "Start PostgreSQL (database 'test', trust auth on 127.0.0.1:5432) or set "
            "QUEUECTL_TEST_POSTGRES_DSN. CI sets QUEUECTL_REQUIRE_POSTGRES=1, which turns "
            "this skip into a failure."
        ))
    return dsn


@pytest.fixture
def pg_dsn(pg_server: str) -> Iterator[str]:
    """The server's DSN, for one test: no other test restarts the server
    while it runs (``tests/postgres_lock.py``)."""
    with postgres_shared(pg_server):
        yield pg_server


@pytest.fixture
def pg_admin(pg_dsn: str) -> Iterator[Any]:
    """An autocommit connection for creating and dropping schemas (one per
    test: a session-wide one would not survive a restart of the server)."""
    import psycopg

    conn = psycopg.connect(pg_dsn, autocommit=True)
    yield conn
    conn.close()


def drop_schema(admin: Any, name: str) -> None:
    admin.execute(f'DROP SCHEMA IF EXISTS "{name}" CASCADE')


@pytest.fixture
def pg_schemas(pg_admin: Any) -> Iterator[Callable[[], str]]:
    """Make unique schema names; every schema named is dropped afterwards
    (also those a test already dropped itself)."""
    names: list[str] = []

    def make() -> str:
        name = f"qprop_{os.getpid()}_{next(_counter)}"
        names.append(name)
        drop_schema(pg_admin, name)
        return name

    yield make
    for name in names:
        drop_schema(pg_admin, name)


@pytest.fixture
def cli_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A private QUEUECTL_HOME for this test (shared by its examples)."""
    home = tmp_path / "home"
    home.mkdir(mode=0o700)
    for name in _CLI_ENV:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("QUEUECTL_HOME", str(home))
    return home
