"""Fixtures of the crash suite.

The ``queue`` fixture and the backend parametrization (sqlite, json,
postgres; one PostgreSQL schema per test; QUEUECTL_REQUIRE_POSTGRES) are the
integration suite's, imported from ``tests.integration.conftest``. This file
adds ``row``: the result row that each scenario appends, pass or fail, to the
JSON-lines file ``$QUEUECTL_RELIABILITY_OUT`` (default
``tests/crash/.last-run.jsonl``). ``scripts/reliability_report.py`` turns
that file into the table in ``docs/reliability.md``.
"""

from __future__ import annotations

import contextlib
import json
import os
import platform
import random
import sqlite3
import sys
import time
from collections.abc import Generator, Iterator
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

# `python -m pytest` puts the checkout on sys.path, a bare `pytest` does not.
_ROOT = Path(__file__).resolve().parents[2]
if str(_ROOT) not in sys.path:
    sys.path.insert(0, str(_ROOT))

from tests.integration.conftest import (  # noqa: E402
    postgres_dsn,
    postgres_problem,
    pytest_generate_tests,
    queue,
)
from tests.postgres_lock import postgres_shared  # noqa: E402

__all__ = ["Row", "pytest_generate_tests", "queue", "row"]

#: Default results file (in .gitignore).
DEFAULT_OUT = Path(__file__).resolve().parent / ".last-run.jsonl"


def _run_id() -> str:
    """One id for every row written by this pytest session. Under
    pytest-xdist each worker is a process of its own: they share the
    session's ``testrunuid`` (and its controller, their parent process)."""
    uid = os.environ.get("PYTEST_XDIST_TESTRUNUID")
    if uid and os.environ.get("PYTEST_XDIST_WORKER"):
        return f"xdist-{uid[:12]}-{os.getppid()}"
    return f"{datetime.now(UTC):%Y%m%dT%H%M%SZ}-{os.getpid()}"


RUN_ID = _run_id()


def results_path() -> Path:
    """Where result rows go: $QUEUECTL_RELIABILITY_OUT, else the default."""
    out = os.environ.get("QUEUECTL_RELIABILITY_OUT")
    return Path(out) if out else DEFAULT_OUT


def nproc() -> int:
    """CPUs this process may run on (what `nproc` prints)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


_PG_VERSION: list[str | None] = []


def postgres_version() -> str | None:
    """The test server's version, or None when it is not reachable."""
    if not _PG_VERSION:
        version = None
        if postgres_problem() is None:
            with contextlib.suppress(Exception), postgres_shared(postgres_dsn()):
                import psycopg

                with psycopg.connect(postgres_dsn(), connect_timeout=3) as conn:
                    found = conn.execute("SHOW server_version").fetchone()
                    version = str(found[0]) if found else None
        _PG_VERSION.append(version)
    return _PG_VERSION[0]


def machine() -> dict[str, Any]:
    return {
        "nproc": nproc(),
        "python": platform.python_version(),
        "sqlite": sqlite3.sqlite_version,
        "postgres": postgres_version(),
        "platform": platform.platform(),
    }


@dataclass
class Row:
    """One scenario on one backend. ``lost``: jobs that did not reach their
    expected final state (or vanished); ``run_twice``: jobs whose command ran
    more than the scenario allows; ``stuck``: jobs left ``processing``."""

    scenario: str
    backend: str
    seed: int
    jobs: int = 0
    kills: int = 0
    lost: int | None = None
    run_twice: int | None = None
    stuck: int | None = None
    longest_recovery_s: float | None = None
    notes: list[str] = field(default_factory=list)

    def note(self, text: str) -> None:
        self.notes.append(text)


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item: pytest.Item,
                              call: pytest.CallInfo[None]) -> Generator[None, Any, Any]:
    """Keep each phase's report on the item, so ``row`` knows the outcome."""
    report = yield
    setattr(item, f"crash_report_{report.when}", report)
    return report


@pytest.fixture
def row(request: pytest.FixtureRequest, backend: str) -> Iterator[Row]:
    """The scenario's result row; written when the test body has finished
    (before the queue's own cleanup), whether it passed or not."""
    seed_text = os.environ.get("QUEUECTL_CRASH_SEED")
    seed = int(seed_text) if seed_text else random.SystemRandom().randrange(10**9)
    result = Row(scenario=request.node.originalname, backend=backend, seed=seed)
    started = time.monotonic()
    started_at = datetime.now(UTC)
    yield result
    duration = time.monotonic() - started
    report = getattr(request.node, "crash_report_call", None)
    outcome = report.outcome if report is not None else "error"
    data = asdict(result)
    data.update(
        test=request.node.nodeid, outcome=outcome, duration_s=round(duration, 1),
        started_at=started_at.isoformat(timespec="seconds").replace("+00:00", "Z"),
        run_id=RUN_ID, machine=machine(),
    )
    if report is not None and report.failed:
        crash = getattr(report.longrepr, "reprcrash", None)
        message = getattr(crash, "message", None) or str(report.longrepr)
        data["error"] = message.strip().splitlines()[0][:500]
    path = results_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    # One write(2) with O_APPEND: rows of parallel workers never interleave.
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, (json.dumps(data) + "\n").encode())
    finally:
        os.close(fd)
