"""Every store answers the seam's view methods (counts, queue_counts,
oldest_due, finished_attempts, outcome_counts, browse_jobs) as their
defaults over the required methods do, after enqueues, claims, results,
deaths, cancels, DLQ retries and purges; SQLite's and PostgreSQL's
maintained counts are filled once when an older store is opened."""

from __future__ import annotations

import itertools
import os
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from queuectl_core.ledger import Ledger
from queuectl_core.models import ExecResult, Job, JobState
from queuectl_core.storage import Storage
from queuectl_core.testing.memory import MemoryStorage
from queuectl_json.store import JsonStorage
from queuectl_postgres.store import PostgresStorage
from queuectl_sqlite.store import SqliteStorage
from tests.postgres_lock import postgres_shared

T0 = 1_800_000_000_000
LEASE = 60_000
_schemas = itertools.count()
QUEUES_OF = ("default", "other")


def _dsn() -> str:
    return os.environ.get("QUEUECTL_TEST_POSTGRES_DSN") or "postgresql://127.0.0.1:5432/test"


@pytest.fixture(params=["memory", "sqlite", "json", "postgres"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Storage]:
    if request.param == "memory":
        yield MemoryStorage()
    elif request.param == "sqlite":
        sqlite = SqliteStorage(tmp_path / "q.db")
        yield sqlite
        sqlite.close()
    elif request.param == "json":
        json_store = JsonStorage(tmp_path / "json")
        yield json_store
        json_store.close()
    else:
        try:
            psycopg.connect(_dsn(), connect_timeout=5).close()
        except psycopg.Error as exc:
            if os.environ.get("QUEUECTL_REQUIRE_POSTGRES") == "1":
                pytest.fail(f"PostgreSQL is not reachable: {exc}")
            pytest.skip(f"PostgreSQL is not reachable: {exc}")
        schema = f"qviews_{os.getpid()}_{next(_schemas)}"
        with postgres_shared(_dsn()):
            pg = PostgresStorage(_dsn(), schema=schema)
            try:
                yield pg
            finally:
                pg.close()
                with psycopg.connect(_dsn(), autocommit=True) as conn:
                    conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


def job(job_id: str, queue: str = "default", run_at: int = T0, retries: int = 0) -> Job:
    return Job(id=job_id, command=f"run {job_id}", state=JobState.PENDING, max_retries=retries,
               run_at=run_at, created_at=T0, updated_at=T0, queue=queue)


def _life(ledger: Ledger) -> None:
    """Jobs in every state, in three queues, with attempts of each outcome."""
    ledger.enqueue([job(f"a{i}") for i in range(6)] + [job(f"b{i}", "b") for i in range(4)]
                   + [job("later", "c", run_at=T0 + 10**9), job("due-c", "c", run_at=T0 - 500)])
    for n, (outcome, code) in enumerate([("ok", 0), ("bad", 3), ("ok", 0), ("bad", 1)]):
        claim = ledger.claim("w1", T0 + 10 * n, LEASE, ["default"])
        assert claim is not None
        if outcome == "ok":
            ledger.complete(claim, ExecResult(exit_code=0), T0 + 10 * n + 5)
        else:
            ledger.fail(claim, ExecResult(exit_code=code, error="boom"), T0 + 10 * n + 7, None)
    running = ledger.claim("w2", T0 + 100, LEASE, ["b"])
    assert running is not None
    ledger.cancel("b3", T0 + 101)
    ledger.dlq_retry("a1", T0 + 102)
    ledger.set_queue_paused("c", True)
    ledger.purge(states=[JobState.COMPLETED], ids=["a0"])
    # Jobs that run after others: placed waiting and skipped at enqueue,
    # released and cascaded by changes of their parents.
    ledger.enqueue([job("p1", "g"), job("p2", "g"),
                    job("w1", "g").replace(after=["p1", "p2"], after_mode="success"),
                    job("s1", "g").replace(after=["a3"], after_mode="success")])
    parent = ledger.claim("w3", T0 + 200, LEASE, ["g"])
    assert parent is not None
    ledger.complete(parent, ExecResult(exit_code=0), T0 + 201)
    ledger.cancel("p2", T0 + 202)
    # A stream of plain jobs, stored by insert_new where a store has it.
    ledger.enqueue_stream(job(f"stream{i}", "stream") for i in range(3))


def _agree(store: Storage) -> None:
    now = T0 + 1000
    assert store.counts() == Storage.counts(store)
    for queue in ("default", "b", "c", "nope"):
        assert store.counts(queue) == Storage.counts(store, queue)
    assert store.queue_counts() == Storage.queue_counts(store)
    assert store.oldest_due(now) == Storage.oldest_due(store, now)
    windows: list[tuple[int, str | None]] = [(T0, None), (T0 + 15, None), (T0, "default"),
                                             (T0, "b")]
    for since, only in windows:
        assert store.finished_attempts(since, only) == Storage.finished_attempts(store, since,
                                                                                 only)
        assert store.outcome_counts(since, only) == Storage.outcome_counts(store, since, only)
    assert store.finished_attempts(T0, limit=1) == Storage.finished_attempts(store, T0, limit=1)
    for kwargs in ({}, {"state": JobState.PENDING}, {"queue": "b"}, {"text": "a"},
                   {"before": "b1"}, {"before": "b1", "queue": "default"},
                   {"before": "nope"}, {"limit": 2},
                   {"text": "run due", "state": JobState.PENDING}):
        assert store.browse_jobs(**kwargs) == Storage.browse_jobs(store, **kwargs), kwargs


def test_views_agree_with_the_defaults(store: Storage) -> None:
    _agree(store)
    _life(Ledger(store))
    _agree(store)
    counts = store.counts()
    assert counts[JobState.DEAD] == 1 and counts[JobState.CANCELLED] == 2
    assert counts[JobState.SKIPPED] == 2 and store.counts("stream")[JobState.PENDING] == 3
    assert counts[JobState.PROCESSING] == 1 and counts[JobState.COMPLETED] == 2
    assert store.oldest_due(T0 + 1000) == {"b": T0, "c": T0 - 500, "default": T0,
                                           "stream": T0}
    assert store.outcome_counts(T0)["default"] == {"completed": 1, "failed": 2, "dead": 1}


def test_an_older_sqlite_store_gets_its_counts_filled_once(tmp_path: Path) -> None:
    path = tmp_path / "q.db"
    first = SqliteStorage(path)
    _life(Ledger(first))
    for name in ("job_counts_delete", "job_counts_update"):
        first.conn.execute(f"DROP TRIGGER {name}")
    first.conn.execute("DROP TABLE job_counts")
    first.conn.execute("DROP INDEX attempts_finished")
    first.counted = False  # as a release without counts wrote
    Ledger(first).enqueue([job("while-old", "d")])
    first.close()
    again = SqliteStorage(path)
    try:
        _agree(again)
        assert again.counts("d")[JobState.PENDING] == 1
    finally:
        again.close()


def test_a_sqlite_store_that_could_not_get_its_counts_counts_its_jobs(tmp_path: Path) -> None:
    """A store opened read-only before its counts existed reads the jobs
    themselves (``counted`` is False)."""
    store = SqliteStorage(tmp_path / "q.db")
    try:
        _life(Ledger(store))
        store.counted = False
        _agree(store)
    finally:
        store.close()


def test_postgres_counts_stay_exact_under_concurrent_workers(store: Storage) -> None:
    """Four connections claim and complete jobs at once, their triggers
    appending deltas and folding them now and then: the counts still
    equal the jobs'."""
    if not isinstance(store, PostgresStorage):
        pytest.skip("PostgreSQL's delta counts")
    import threading

    Ledger(store).enqueue([job(f"c{i:03d}", QUEUES_OF[i % 2]) for i in range(240)])
    errors: list[BaseException] = []

    def work(name: str) -> None:
        mine = PostgresStorage(_dsn(), schema=store.schema)
        try:
            ledger = Ledger(mine)
            while (claim := ledger.claim(name, T0, LEASE)) is not None:
                ledger.complete(claim, ExecResult(exit_code=0), T0 + 1)
        except BaseException as exc:  # reported below
            errors.append(exc)
        finally:
            mine.close()

    threads = [threading.Thread(target=work, args=(f"w{i}",)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert store.counts()[JobState.COMPLETED] == 240
    assert store.queue_counts() == Storage.queue_counts(store)
