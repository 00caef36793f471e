"""What is specific to the PostgreSQL store: options and the DSN, secrets in
messages, schema versions and concurrent starters, the claim's plan,
LISTEN/NOTIFY wake-ups, lost connections and fork safety."""

from __future__ import annotations

import os
import select
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg.conninfo import conninfo_to_dict, make_conninfo

import queuectl_postgres.store as store_module
from queuectl_core.errors import ConfigError, StorageError, TransientStorageError
from queuectl_core.models import Attempt, ExecResult, Job, JobState, NewJob, Outcome
from queuectl_core.plugins import build_plugins
from queuectl_core.registry import PluginContext
from queuectl_core.testing import MemoryStorage
from queuectl_postgres import DSN_ENV
from queuectl_postgres.dsn import mask_secrets, resolve_dsn
from queuectl_postgres.fast import channel_for
from queuectl_postgres.options import PostgresOptions
from queuectl_postgres.plugin import queuectl_storage_backends
from queuectl_postgres.store import (
    NEXT_DUE_IN_QUEUE_SQL,
    NEXT_DUE_SQL,
    PostgresStorage,
    schema_version,
)

T0 = 1_800_000_000_000
LEASE = 10_000
OK = ExecResult(exit_code=0)
BOOM = ExecResult(exit_code=3, error="boom")
SECRET = "hunter2-Secret"

Admin = psycopg.Connection[tuple[object, ...]]


def new_job(job_id: str, **kw: Any) -> NewJob:
    fields: dict[str, Any] = {"command": f"echo {job_id}", "max_retries": 3, "run_at": T0,
                              "created_at": T0}
    fields.update(kw)
    return NewJob(id=job_id, **fields)


@pytest.fixture
def schema(new_schema: Callable[[], str]) -> str:
    return new_schema()


@pytest.fixture
def open_store(pg_dsn: str, schema: str) -> Iterator[Callable[..., PostgresStorage]]:
    """Open stores on the test's schema; all are closed afterwards."""
    stores: list[PostgresStorage] = []

    def opener(**kw: Any) -> PostgresStorage:
        store = PostgresStorage(kw.pop("dsn", pg_dsn), schema=kw.pop("schema", schema), **kw)
        stores.append(store)
        return store

    yield opener
    for store in stores:
        store.close()


def backend_pid(store: PostgresStorage) -> int:
    assert store._conn is not None
    return store._conn.info.backend_pid


def terminate(admin: Admin, pid: int) -> None:
    row = admin.execute("SELECT pg_terminate_backend(%s)", (pid,)).fetchone()
    assert row == (True,)
    # Wait until the backend is really gone.
    for _ in range(100):
        if admin.execute("SELECT 1 FROM pg_stat_activity WHERE pid = %s",
                         (pid,)).fetchone() is None:
            return
        time.sleep(0.02)


def readable(fd: int, timeout: float) -> bool:
    return bool(select.select([fd], [], [], timeout)[0])


# ---------------------------------------------------------------- options, DSN, secrets

def test_options_defaults_and_validation() -> None:
    opts = PostgresOptions()
    assert (opts.dsn, opts.schema_name, opts.connect_timeout_s) == (None, "queuectl", 5)
    assert PostgresOptions.model_validate({"schema": "q_2"}).schema_name == "q_2"
    for bad in ("Queue", "1abc", "a-b", 'x"; DROP TABLE jobs; --', "pg_queue", "a" * 64, ""):
        with pytest.raises(ValueError):
            PostgresOptions.model_validate({"schema": bad})
    with pytest.raises(ValueError):
        PostgresOptions.model_validate({"database": "x"})


def test_dsn_falls_back_to_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    assert resolve_dsn("postgresql://a/b", {DSN_ENV: "postgresql://c/d"}) == "postgresql://a/b"
    assert resolve_dsn(None, {DSN_ENV: "postgresql://c/d"}) == "postgresql://c/d"
    with pytest.raises(ConfigError, match=r"backends\.postgres\.dsn.*QUEUECTL_POSTGRES_DSN"):
        resolve_dsn(None, {})
    monkeypatch.delenv(DSN_ENV, raising=False)
    [spec] = queuectl_storage_backends()
    assert spec.factory is not None
    with pytest.raises(ConfigError, match="QUEUECTL_POSTGRES_DSN"):
        spec.factory(PostgresOptions(), PluginContext(home=Path("/nonexistent")))


def test_factory_reads_the_environment(monkeypatch: pytest.MonkeyPatch, pg_dsn: str,
                                       schema: str) -> None:
    monkeypatch.setenv(DSN_ENV, pg_dsn)
    [spec] = queuectl_storage_backends()
    assert spec.factory is not None and spec.name == "postgres"
    store = spec.factory(PostgresOptions.model_validate({"schema": schema}),
                         PluginContext(home=Path("/nonexistent")))
    try:
        assert store.describe().endswith(f"(schema {schema})")
        assert store.counts()[JobState.PENDING] == 0
    finally:
        store.close()


def test_plugin_is_discovered_and_import_stays_cheap() -> None:
    spec = build_plugins().backend("postgres")
    assert spec.distribution == "queuectl-postgres"
    code = "import sys, queuectl_postgres; assert 'psycopg' not in sys.modules, 'psycopg loaded'"
    subprocess.run([sys.executable, "-c", code], check=True)


@pytest.mark.parametrize("text", [
    f"postgresql://alice:{SECRET}@db.example:5432/q",
    f"postgres://alice:{SECRET}@db.example/q?sslmode=require",
    f"host=db.example user=alice password={SECRET} dbname=q",
    f"host=db.example password = '{SECRET} with space' dbname=q",
    f"postgresql://alice@db.example/q?password={SECRET}&sslmode=require",
    f"error: PGPASSWORD={SECRET} was rejected",
])
def test_mask_secrets_hides_passwords(text: str) -> None:
    masked = mask_secrets(text)
    assert "hunter2" not in masked and "***" in masked
    assert "db.example" in masked or "PGPASSWORD" in masked


def test_mask_secrets_keeps_harmless_text() -> None:
    text = 'connection to server at "127.0.0.1", port 5432 failed: postgresql://h:5432/db'
    assert mask_secrets(text) == text
    assert mask_secrets("it said hunter2-Secret", [SECRET]) == "it said ***"


def _with_password(dsn: str, **extra: str) -> str:
    params = conninfo_to_dict(dsn)
    params["password"] = SECRET
    params.update(extra)
    return make_conninfo("", **params)


def test_describe_never_shows_the_password(open_store: Callable[..., PostgresStorage],
                                           pg_dsn: str, pg_admin: Admin) -> None:
    user = str(pg_admin.execute("SELECT current_user").fetchone()[0])  # type: ignore[index]
    params = conninfo_to_dict(pg_dsn)
    host, port, db = params.get("host"), params.get("port"), params.get("dbname")
    url = f"postgresql://{user}:{SECRET}@{host}:{port}/{db}"
    keyvalue = _with_password(pg_dsn, user=user)
    for dsn in (url, keyvalue):
        store = open_store(dsn=dsn)  # trust auth ignores the password
        assert SECRET not in store.describe()
        assert store.describe().startswith(f"postgres postgresql://{user}@{host}")
        if port:
            assert f":{port}/{db} (schema " in store.describe()


@pytest.mark.parametrize("form", ["url", "keyvalue"])
def test_unreachable_server_is_transient_quick_and_masked(form: str) -> None:
    dsn = (f"postgresql://alice:{SECRET}@127.0.0.1:1/test" if form == "url"
           else f"host=127.0.0.1 port=1 dbname=test user=alice password={SECRET}")
    start = time.monotonic()
    with pytest.raises(TransientStorageError) as info:
        PostgresStorage(dsn, schema="qt_unreachable", connect_timeout_s=2)
    assert time.monotonic() - start < 5
    assert "hunter2" not in str(info.value)
    assert "127.0.0.1" in str(info.value)


def test_permanent_connection_problem_is_not_transient(pg_dsn: str) -> None:
    dsn = _with_password(pg_dsn, dbname="queuectl_no_such_database")
    with pytest.raises(StorageError) as info:
        PostgresStorage(dsn, schema="qt_nodb")
    assert not isinstance(info.value, TransientStorageError)
    assert "does not exist" in str(info.value) and "hunter2" not in str(info.value)


def test_invalid_dsn_is_a_config_error_without_the_password() -> None:
    with pytest.raises(ConfigError) as info:
        PostgresStorage(f"host=h password={SECRET} oops", schema="q")
    assert "hunter2" not in str(info.value)
    with pytest.raises(ConfigError, match="not a valid connection string"):
        PostgresStorage("postgresql://h:notaport:/x y", schema="q")


def test_sql_errors_are_masked_storage_errors(open_store: Callable[..., PostgresStorage],
                                              pg_dsn: str, schema: str,
                                              pg_admin: Admin) -> None:
    store = open_store(dsn=_with_password(pg_dsn))
    pg_admin.execute(f'DROP TABLE "{schema}".workers')
    with pytest.raises(StorageError) as info:
        store.list_workers()
    assert not isinstance(info.value, TransientStorageError)
    assert "workers" in str(info.value) and "hunter2" not in str(info.value)


# ---------------------------------------------------------------- schema versions

def _stored_version(admin: Admin, schema: str) -> int:
    row = admin.execute(f"SELECT value FROM \"{schema}\".meta WHERE key = 'schema_version'"
                        ).fetchone()
    assert row is not None
    return int(str(row[0]))


def test_schema_version_is_recorded(open_store: Callable[..., PostgresStorage],
                                    pg_admin: Admin, schema: str) -> None:
    open_store()
    assert _stored_version(pg_admin, schema) == schema_version() >= 1


def test_newer_schema_is_refused(open_store: Callable[..., PostgresStorage],
                                 pg_admin: Admin, schema: str) -> None:
    open_store().enqueue([new_job("a")])
    pg_admin.execute(f"UPDATE \"{schema}\".meta SET value = %s WHERE key = 'schema_version'",
                     (str(schema_version() + 1),))
    with pytest.raises(StorageError, match="newer than this queuectl") as info:
        open_store()
    assert not isinstance(info.value, TransientStorageError)
    assert _stored_version(pg_admin, schema) == schema_version() + 1, "left alone"


def test_older_schema_is_upgraded_step_by_step(open_store: Callable[..., PostgresStorage],
                                               pg_admin: Admin, schema: str,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    base = list(store_module.MIGRATIONS)
    old = open_store()
    old.enqueue([new_job("kept")])
    latest = schema_version()
    # Two later versions; the second relies on the first having run.
    monkeypatch.setattr(store_module, "MIGRATIONS", [
        *base,
        (latest + 1, "CREATE TABLE {s}.upgrade_log (step int PRIMARY KEY)"),
        (latest + 2, "INSERT INTO {s}.upgrade_log (step) VALUES (2);"
                     " ALTER TABLE {s}.jobs ADD COLUMN note text"),
    ])
    new = open_store()
    assert _stored_version(pg_admin, schema) == latest + 2
    assert [r[0] for r in pg_admin.execute(
        f'SELECT step FROM "{schema}".upgrade_log ORDER BY step')] == [2]
    assert new.get("kept") is not None, "data survives the upgrade"
    new.enqueue([new_job("after")])
    assert [j.id for j in new.list_jobs()] == ["kept", "after"]
    # The old code (one version behind) now refuses the upgraded schema.
    monkeypatch.setattr(store_module, "MIGRATIONS", base)
    with pytest.raises(StorageError, match="newer"):
        open_store()


def test_version_1_schema_is_upgraded_in_place(open_store: Callable[..., PostgresStorage],
                                               pg_admin: Admin, schema: str,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    """A queue written by the previous release keeps its jobs and attempt
    history, and everything new works on it."""
    monkeypatch.setattr(store_module, "MIGRATIONS", store_module.MIGRATIONS[:1])
    open_store().close()
    monkeypatch.undo()
    assert _stored_version(pg_admin, schema) == 1
    s = f'"{schema}"'
    # Rows as version 1 wrote them: a dead job whose attempt numbers restarted
    # after a DLQ retry (the old numbering), a completed one, a waiting one and
    # one running on a worker that is about to be declared lost.
    pg_admin.execute(
        f"INSERT INTO {s}.jobs (id, command, state, attempts, max_retries, priority, run_at,"
        " created_at, updated_at, finished_at, worker_id, claim_token, lease_expires_at,"
        " last_error, exit_code) VALUES"
        " ('old-dead', 'false', 'dead', 1, 0, 0, %(t)s, %(t)s, %(t)s, %(t)s, 'w', NULL, NULL,"
        "  'boom', 1),"
        " ('old-done', 'true', 'completed', 1, 3, 0, %(t)s, %(t)s, %(t)s, %(t)s, 'w', NULL,"
        "  NULL, NULL, 0),"
        " ('old-wait', 'echo hi', 'pending', 0, 3, 7, %(t)s, %(t)s, %(t)s, NULL, NULL, NULL,"
        "  NULL, NULL, NULL),"
        " ('old-run', 'sleep 9', 'processing', 1, 3, 0, %(t)s, %(t)s, %(t)s, NULL, 'w', 'tok',"
        "  %(lease)s, NULL, NULL)", {"t": T0, "lease": T0 + 10})
    pg_admin.execute(
        f"INSERT INTO {s}.attempts (job_id, number, claim_token, worker_id, started_at,"
        " finished_at, outcome, exit_code, error) VALUES"
        " ('old-dead', 1, 'a1', 'w', %(t)s, %(t)s, 'failed', 1, 'boom'),"
        " ('old-dead', 1, 'a2', 'w', %(t)s, %(t)s, 'failed', 1, 'boom'),"
        " ('old-done', 1, 'a3', 'w', %(t)s, %(t)s, 'completed', 0, NULL),"
        " ('old-run', 1, 'tok', 'w', %(t)s, NULL, 'running', NULL, NULL)", {"t": T0})

    store = open_store()
    assert _stored_version(pg_admin, schema) == schema_version() == 2
    wait = store.get("old-wait")
    assert wait is not None and (wait.command, wait.priority, wait.state) == (
        "echo hi", 7, JobState.PENDING)
    assert (wait.queue, wait.timeout, wait.cwd, wait.env, wait.retry,
            wait.cancel_requested_at) == ("default", None, None, None, None, None)
    assert [(a.number, a.outcome, a.stdout_tail) for a in store.attempts("old-dead")] == [
        (1, "failed", None), (1, "failed", None)]
    assert store.cancel("old-wait", T0 + 1).state is JobState.CANCELLED
    [lost] = store.recover_expired(T0 + 11)
    assert lost.id == "old-run" and lost.state is JobState.FAILED
    store.dlq_retry("old-dead", T0 + 20)
    # New attempts are numbered after the whole history, old rows included.
    first = store.claim("w2", T0 + 20, LEASE, queues=["default"])
    assert first is not None and (first.job.id, first.attempt) == ("old-run", 2)
    second = store.claim("w2", T0 + 20, LEASE)
    assert second is not None and (second.job.id, second.attempt) == ("old-dead", 3)
    assert second.job.attempts == 1
    assert [a.number for a in store.attempts("old-dead")] == [1, 1, 3]
    store.complete(second, ExecResult(exit_code=0, stdout_tail="ok\n"), T0 + 21)
    assert store.attempts("old-dead")[-1].stdout_tail == "ok\n"
    assert store.purge(states=[JobState.COMPLETED, JobState.CANCELLED]) == [
        "old-done", "old-wait", "old-dead"]
    assert store.attempts("old-done") == []
    assert store.counts() == {**dict.fromkeys(JobState, 0), JobState.PROCESSING: 1}
    with pytest.raises(psycopg.errors.CheckViolation):
        pg_admin.execute(f"UPDATE {s}.jobs SET state = 'bogus'")


def test_concurrent_starters_create_the_schema_once(pg_dsn: str, schema: str,
                                                    pg_admin: Admin) -> None:
    errors: list[BaseException] = []
    stores: list[PostgresStorage] = []
    barrier = threading.Barrier(8)

    def start() -> None:
        barrier.wait()
        try:
            stores.append(PostgresStorage(pg_dsn, schema=schema))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=start) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for store in stores:
        store.close()
    assert errors == []
    assert len(stores) == 8
    assert _stored_version(pg_admin, schema) == schema_version()


# ---------------------------------------------------------------- claims

def test_claim_walks_the_ready_index_without_sorting(open_store: Callable[..., PostgresStorage],
                                                     pg_admin: Admin, schema: str) -> None:
    store = open_store()
    # Many finished jobs and a few claimable ones, as in a long-lived queue.
    pg_admin.execute(
        f'INSERT INTO "{schema}".jobs (id, command, state, attempts, max_retries, run_at,'
        " created_at, updated_at, finished_at) SELECT 'done-' || g, 'true', 'completed', 1, 3,"
        " %s, %s, %s, %s FROM generate_series(1, 20000) AS g", (T0, T0, T0, T0))
    store.enqueue([new_job(f"p{i}", priority=i % 3) for i in range(50)])
    pg_admin.execute(f'ANALYZE "{schema}".jobs')
    # (All in one queue: the paused-queue filter must not make the planner
    # expect no row to pass and sort instead.)
    plan = _plan(pg_admin, NEXT_DUE_SQL, schema, {"now": T0})
    assert "Index Scan using jobs_ready on jobs" in plan, plan
    assert "Sort" not in plan and "Seq Scan on jobs" not in plan, plan
    claim = store.claim("w", T0, LEASE)
    assert claim is not None and claim.job.id == "p2"


def _plan(admin: Admin, template: str, schema: str, params: dict[str, Any]) -> str:
    sql = template.replace("{s}", f'"{schema}"')
    return "\n".join(str(r[0]) for r in admin.execute(f"EXPLAIN {sql}", params))


def test_queue_claims_and_sweeps_walk_their_indexes(
        open_store: Callable[..., PostgresStorage], pg_admin: Admin, schema: str) -> None:
    store = open_store()
    pg_admin.execute(
        f'INSERT INTO "{schema}".jobs (id, command, state, attempts, max_retries, run_at,'
        " created_at, updated_at, finished_at) SELECT 'done-' || g, 'true', 'completed', 1, 3,"
        " %s, %s, %s, %s + g FROM generate_series(1, 20000) AS g", (T0, T0, T0, T0))
    store.enqueue([new_job(f"d{i}", priority=i % 3) for i in range(2000)])
    store.enqueue([new_job(f"m{i}", queue="mail", priority=i % 3) for i in range(20)])
    store.set_queue_paused("other", True)
    pg_admin.execute(f'ANALYZE "{schema}".jobs')
    plan = _plan(pg_admin, NEXT_DUE_IN_QUEUE_SQL, schema, {"now": T0, "queue": "mail"})
    assert "Index Scan using jobs_ready_queue on jobs" in plan, plan
    assert "Sort" not in plan and "Seq Scan on jobs" not in plan, plan
    plan = _plan(pg_admin, NEXT_DUE_SQL, schema, {"now": T0})
    assert "Index Scan using jobs_ready on jobs" in plan and "Sort" not in plan, plan
    claim = store.claim("w", T0, LEASE, queues=["mail"])
    assert claim is not None and claim.job.id == "m2"
    for sql in (store_module.NEXT_RUN_IN_QUEUES_SQL, store_module.NEXT_RUN_SQL):
        plan = _plan(pg_admin, sql, schema, {"queues": ["mail"]})
        assert "using jobs_due_queue on jobs" in plan, plan
        assert "Sort" not in plan and "Seq Scan on jobs" not in plan, plan
    assert store.next_run_at() == T0
    assert store.next_run_at(["mail", "other"]) == T0 and store.next_run_at(["other"]) is None
    purge = store_module._PURGE_SQL.replace(
        "{where}", " AND COALESCE(finished_at, updated_at) < %(before)s")
    plan = _plan(pg_admin, purge, schema, {"states": ["completed"], "before": T0 + 500,
                                           "limit": 1000})
    # The oldest finished jobs come from the index, in order (how the rows
    # found are then deleted depends on the table's size).
    assert "Index Scan using jobs_finished on jobs" in plan, plan
    gone = store.purge(states=[JobState.COMPLETED], finished_before=T0 + 500, limit=100)
    assert gone == [f"done-{g}" for g in range(1, 101)]


def test_fencing_uses_the_claim_token(open_store: Callable[..., PostgresStorage]) -> None:
    store = open_store()
    store.enqueue([new_job("a")])
    claim = store.claim("w", T0, LEASE)
    assert claim is not None
    forged = claim.replace(**{"token": "0" * 32})
    assert not store.renew(forged, T0 + 1, LEASE)
    assert store.complete(forged, OK, T0 + 1) is None
    assert store.complete(claim, OK, T0 + 2) is not None


def test_nul_in_error_text_is_stored(open_store: Callable[..., PostgresStorage]) -> None:
    store = open_store()
    store.enqueue([new_job("a")])
    claim = store.claim("w", T0, LEASE)
    assert claim is not None
    failed = store.fail(claim, ExecResult(exit_code=1, error="bad\x00byte \udce9"), T0 + 1,
                        None)
    assert failed is not None and failed.last_error is not None
    assert failed.last_error.startswith("bad\\0byte")


def test_output_tails_keep_any_text_exactly(open_store: Callable[..., PostgresStorage]
                                           ) -> None:
    """Command output may hold NUL and undecodable bytes, which PostgreSQL
    text cannot: the tails are kept as bytes, exactly."""
    store = open_store()
    store.enqueue([new_job("a"), new_job("b")])
    odd = "bin\x00ary \udce9 ✓\n"
    claim = store.claim("w", T0, LEASE)
    assert claim is not None
    store.complete(claim, ExecResult(exit_code=0, stdout_tail=odd, stderr_tail="\x00"), T0 + 1)
    claim = store.claim("w", T0, LEASE)
    assert claim is not None
    store.fail(claim, ExecResult(exit_code=1, error="e", stdout_tail="", stderr_tail=odd),
               T0 + 1, T0 + 5)
    [a] = store.attempts("a")
    [b] = store.attempts("b")
    assert (a.stdout_tail, a.stderr_tail) == (odd, "\x00")
    assert (b.stdout_tail, b.stderr_tail) == ("", odd)


def test_import_round_trips_every_field(open_store: Callable[..., PostgresStorage]) -> None:
    store = open_store()
    env = {"Z": "1", "A": "två", "EMPTY": ""}  # key order is kept too
    retry = {"policy": "linear", "max_delay": 60.0, "backoff_base": 3, "jitter": 0.1}
    job = Job(id="imp", command="echo x", state=JobState.FAILED, max_retries=5, run_at=T0,
              created_at=T0 - 9, updated_at=T0 - 1, attempts=2, priority=-3,
              started_at=T0 - 5, finished_at=T0 - 1, worker_id="w0", last_error="bad",
              exit_code=4, queue="mail.out", timeout=0.25, cwd="/srv/jobs dir", env=env,
              retry=retry, cancel_requested_at=None)
    history = [
        Attempt(job_id="imp", number=1, worker_id="w0", started_at=T0 - 9,
                finished_at=T0 - 8, outcome="failed", exit_code=4, error="bad",
                stdout_tail="out\x00", stderr_tail=None),
        Attempt(job_id="imp", number=2, worker_id="w0", started_at=T0 - 5,
                finished_at=T0 - 1, outcome="interrupted", error="stopped", stdout_tail=None,
                stderr_tail="err"),
    ]
    cancelled = job.replace(id="gone", state=JobState.CANCELLED, cancel_requested_at=T0 - 2,
                            env=None, retry={}, timeout=None)
    store.import_jobs([(job, history), (cancelled, [])])
    got = store.get("imp")
    assert got == job and got is not None and list(got.env or {}) == ["Z", "A", "EMPTY"]
    assert store.get("gone") == cancelled
    assert store.attempts("imp") == history
    claim = store.claim("w", T0, LEASE, queues=["mail.out"])
    assert claim is not None and claim.attempt == 3 and claim.job.attempts == 3
    assert claim.job == job.replace(state=JobState.PROCESSING, attempts=3, worker_id="w",
                                    started_at=T0, finished_at=None, updated_at=T0,
                                    lease_expires_at=T0 + LEASE)


# ---------------------------------------------------------------- LISTEN/NOTIFY

def test_enqueue_elsewhere_wakes_a_listener(open_store: Callable[..., PostgresStorage]) -> None:
    listener, other = open_store(), open_store()
    fd = listener.wakeup_fileno()
    assert fd is not None
    assert not readable(fd, 0)
    other.enqueue([new_job("a")])
    # A hang detector, not a timing claim: pickup latency is a benchmark's job.
    assert readable(fd, 5.0), "NOTIFY reaches the listener"
    listener.drain_wakeups()
    assert not readable(fd, 0.05), "drained"
    assert listener.wakeup_fileno() == fd, "the same connection is kept"


def test_every_change_that_makes_work_due_notifies(
        open_store: Callable[..., PostgresStorage]) -> None:
    listener, store = open_store(), open_store()
    fd = listener.wakeup_fileno()
    assert fd is not None

    def wakes(action: Callable[[], object]) -> bool:
        listener.drain_wakeups()
        while readable(fd, 0.1):  # let earlier notifications arrive and go
            listener.drain_wakeups()
        action()
        woke = readable(fd, 0.5)
        listener.drain_wakeups()
        return woke

    store.enqueue([new_job("r", max_retries=5), new_job("d", max_retries=0), new_job("x")])
    r = store.claim("w", T0, LEASE)
    d = store.claim("w", T0, LEASE)
    x = store.claim("w", T0, 1)
    assert r is not None and d is not None and x is not None
    assert not wakes(lambda: store.renew(r, T0 + 1, LEASE)), "a renewal does not wake"
    assert wakes(lambda: store.fail(r, BOOM, T0 + 1, T0 + 100)), "fail with a retry time"
    assert not wakes(lambda: store.fail(d, BOOM, T0 + 1, None)), "dead: nothing due"
    assert wakes(lambda: store.dlq_retry("d", T0 + 2)), "dlq retry"
    assert wakes(lambda: store.recover_expired(T0 + 5)), "recovered jobs"
    assert not wakes(lambda: store.recover_expired(T0 + 6)), "nothing recovered"
    source = MemoryStorage()
    source.enqueue([new_job("imported")])
    assert wakes(lambda: store.import_jobs([(j, []) for j in source.list_jobs()])), "import"
    again = store.claim("w", T0 + 200, LEASE)
    assert again is not None
    assert not wakes(lambda: store.complete(again, OK, T0 + 201)), "completion: nothing due"
    assert not wakes(lambda: store.set_queue_paused("q", True)), "a pause"
    assert wakes(lambda: store.set_queue_paused("q", False)), "resuming a queue"
    assert not wakes(lambda: store.set_queue_paused("q", False)), "not paused: no change"
    store.enqueue([new_job("c1"), new_job("c2")])
    assert not wakes(lambda: store.cancel("c1", T0 + 300)), "a cancel: nothing due"
    c2 = store.claim("w", T0 + 300, LEASE)
    assert c2 is not None and c2.job.id == "c2"
    store.cancel("c2", T0 + 301)
    assert not wakes(lambda: store.fail(c2, BOOM, T0 + 302, T0 + 400)), "cancelled, no retry"


def test_claims_keep_the_wakeup_socket_drained(
        open_store: Callable[..., PostgresStorage]) -> None:
    """A worker that never idles still reads its LISTEN socket, so that
    unread notifications cannot pile up on the server."""
    busy, other = open_store(), open_store()
    fd = busy.wakeup_fileno()
    assert fd is not None
    for i in range(20):
        other.enqueue([new_job(f"j{i}")])
    assert readable(fd, 1.0)
    time.sleep(0.3)  # let every notification arrive
    assert busy.claim("w", T0, LEASE) is not None
    assert not readable(fd, 0.05)


def test_broken_listen_connection_is_closed_then_replaced(
        open_store: Callable[..., PostgresStorage], pg_admin: Admin,
        monkeypatch: pytest.MonkeyPatch) -> None:
    listener, other = open_store(), open_store()
    fd = listener.wakeup_fileno()
    assert fd is not None and listener._listen is not None
    terminate(pg_admin, listener._listen.info.backend_pid)
    assert readable(fd, 2.0), "a dead connection makes the socket readable"
    listener.drain_wakeups()
    assert listener._listen is None, "drain closed the dead connection"
    assert listener.wakeup_fileno() is None, "no busy reconnecting right after a failure"
    monkeypatch.setattr(store_module, "_LISTEN_RETRY_S", 0.0)
    listener._listen_retry_at = 0.0
    fd2 = listener.wakeup_fileno()
    assert fd2 is not None
    other.enqueue([new_job("a")])
    assert readable(fd2, 1.0)
    listener.drain_wakeups()
    assert not readable(fd2, 0.05)


def test_channel_names_fit_postgres_limits() -> None:
    assert channel_for("queuectl") == "queuectl_queuectl"
    long = channel_for("a" * 63)
    assert len(long) <= 63 and long != channel_for("b" * 63)


# ---------------------------------------------------------------- lost connections

def test_terminated_backend_is_transient_then_reconnects(
        open_store: Callable[..., PostgresStorage], pg_admin: Admin) -> None:
    store = open_store()
    store.enqueue([new_job("a")])
    old_pid = backend_pid(store)
    terminate(pg_admin, old_pid)
    with pytest.raises(TransientStorageError):
        store.get("a")
    job = store.get("a")
    assert job is not None and job.id == "a"
    assert backend_pid(store) != old_pid


def test_connection_lost_mid_transaction_changes_nothing(
        open_store: Callable[..., PostgresStorage], pg_admin: Admin,
        monkeypatch: pytest.MonkeyPatch) -> None:
    store = open_store()
    store.enqueue([new_job("before")])
    real_notify = PostgresStorage._notify

    def die_before_commit(self: PostgresStorage, cur: psycopg.Cursor[Any]) -> None:
        terminate(pg_admin, backend_pid(self))
        real_notify(self, cur)

    monkeypatch.setattr(PostgresStorage, "_notify", die_before_commit)
    with pytest.raises(TransientStorageError):
        store.enqueue([new_job("x1"), new_job("x2"), new_job("x3")])
    monkeypatch.undo()
    assert [j.id for j in store.list_jobs()] == ["before"], "the batch was rolled back whole"
    store.enqueue([new_job("x1")])
    assert store.counts()[JobState.PENDING] == 2


def test_server_down_then_back(open_store: Callable[..., PostgresStorage],
                               pg_admin: Admin) -> None:
    """Every method raises TransientStorageError while the connection is
    gone and the server refuses new ones; here the refusal is simulated by
    pointing the store at a closed port."""
    store = open_store()
    real = store._conninfo
    terminate(pg_admin, backend_pid(store))
    store._conninfo = make_conninfo(real, host="127.0.0.1", port="1")
    for call in (lambda: store.get("a"), lambda: store.claim("w", T0, LEASE),
                 lambda: store.enqueue([new_job("a")]), store.get_settings):
        with pytest.raises(TransientStorageError):
            call()
    store._conninfo = real
    assert store.get_settings() == {}


# ---------------------------------------------------------------- fork safety

def test_a_forked_child_never_uses_the_parents_connection(
        open_store: Callable[..., PostgresStorage]) -> None:
    store = open_store()
    store.enqueue([new_job(f"j{i}") for i in range(4)])
    parent_pid = backend_pid(store)
    assert store.wakeup_fileno() is not None
    read_end, write_end = os.pipe()
    child = os.fork()
    if child == 0:  # pragma: no cover - runs in the child
        code = 1
        try:
            claim = store.claim("child", T0, LEASE)
            ok = claim is not None and backend_pid(store) != parent_pid
            store.close()
            code = 0 if ok else 2
        finally:
            os.write(write_end, bytes([code]))
            os._exit(code)
    os.close(write_end)
    _, status = os.waitpid(child, 0)
    assert os.read(read_end, 1) == b"\x00"
    os.close(read_end)
    assert os.WEXITSTATUS(status) == 0
    # The parent's session survived the child using (and closing) the store.
    assert backend_pid(store) == parent_pid
    assert store.counts()[JobState.PROCESSING] == 1
    assert store.claim("parent", T0, LEASE) is not None


def test_record_and_claim_is_one_transaction_and_keeps_the_real_times(
        open_store: Callable[..., PostgresStorage]) -> None:
    store = open_store()
    store.enqueue([new_job(i) for i in "abcd"])
    a = store.claim("w", T0, 10_000)
    b = store.claim("w", T0, 10_000)
    assert a is not None and b is not None
    # A fenced-out claim fails nothing; a broken one rolls the whole batch back.
    bogus = Outcome(a.replace(token="not-a-token"), OK)
    dones, claims = store.record_and_claim(
        [Outcome(a, OK, finished_at=T0 + 3), bogus,
         Outcome(b, OK, started_at=T0 + 3, finished_at=T0 + 5)],
        T0 + 9, worker_id="w", lease_ms=10_000, limit=2)
    assert dones[1] is None
    assert [j.id for j in dones if j is not None] == ["a", "b"]
    assert [c.job.id for c in claims] == ["c", "d"]
    [first], [second] = store.attempts("a"), store.attempts("b")
    assert (first.started_at, first.finished_at) == (T0, T0 + 3)
    assert (second.started_at, second.finished_at) == (T0 + 3, T0 + 5)
    job = store.get("b")
    assert job is not None and (job.started_at, job.finished_at) == (T0 + 3, T0 + 5)
    with pytest.raises(StorageError):
        store.record_and_claim([Outcome(claims[0], OK, finished_at=T0 + 10),
                                Outcome(claims[1], BOOM, retry_at=2**63)],  # no bigint
                               T0 + 11, worker_id="w", lease_ms=10_000, limit=1)
    c = store.get("c")
    assert c is not None and c.state is JobState.PROCESSING, "all or nothing"
