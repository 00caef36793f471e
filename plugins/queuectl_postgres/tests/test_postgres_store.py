"""What is specific to the PostgreSQL store, part one: options and the DSN,
secrets in messages, schema versions and concurrent starters, lost
connections and fork safety. (Claims and changes:
``test_postgres_changes.py``; wake-ups: ``test_postgres_notify.py``.)"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg.conninfo import conninfo_to_dict, make_conninfo

import queuectl_postgres.schema as schema_module
import queuectl_postgres.views as views_module
from queuectl_core import transitions as rules
from queuectl_core.errors import ConfigError, StorageError, TransientStorageError
from queuectl_core.ledger import Ledger
from queuectl_core.models import ExecResult, JobState
from queuectl_core.plugins import build_plugins
from queuectl_core.registry import PluginContext
from queuectl_core.testing.conformance import LEASE, T0, new_job
from queuectl_postgres import DSN_ENV
from queuectl_postgres.connection import (
    DEFAULT_CALL_TIMEOUT_S,
    Session,
    connection_params,
    describe,
    display,
)
from queuectl_postgres.dsn import mask_secrets, resolve_dsn
from queuectl_postgres.options import PostgresOptions
from queuectl_postgres.plugin import queuectl_storage_backends
from queuectl_postgres.schema import schema_version
from queuectl_postgres.store import PostgresStorage

SECRET = "hunter2-Secret"

Admin = psycopg.Connection[tuple[object, ...]]
Opener = Callable[..., PostgresStorage]


def backend_pid(store: PostgresStorage) -> int:
    assert store.session.conn is not None
    return store.session.conn.info.backend_pid


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
    with pytest.raises(ConfigError, match="QUEUECTL_POSTGRES_DSN"):
        spec.resolve_factory()(PostgresOptions(), PluginContext(home=Path("/nonexistent")))


def test_factory_reads_the_environment(monkeypatch: pytest.MonkeyPatch, pg_dsn: str,
                                       schema: str) -> None:
    monkeypatch.setenv(DSN_ENV, pg_dsn)
    [spec] = queuectl_storage_backends()
    assert spec.name == "postgres"
    store = spec.resolve_factory()(PostgresOptions.model_validate({"schema": schema}),
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


@pytest.mark.parametrize("dsn", [
    "postgresql://127.0.0.1:5432/test",
    f"postgresql://alice:{SECRET}@db.example:6543/jobs?sslmode=require",
    "postgresql://b%40b@[::1]/d",
    f"host=/var/run/postgresql user=x password={SECRET} dbname=q",
    "hostaddr=10.0.0.1 port=5433",
    "host=h1,h2 port=5432,5433 dbname=q application_name=mine connect_timeout=99",
    "",
])
def test_connection_parameters_and_description(dsn: str,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    """Without a server: the store connects with the DSN's parameters plus
    queuectl's timeout (which wins), application name and keepalives (which
    do not), and shows them without the password."""
    params = connection_params(dsn, 7)
    assert params["connect_timeout"] == "7"
    given = conninfo_to_dict(dsn)
    assert params["application_name"] == given.get("application_name", "queuectl")
    assert params["keepalives"] == "1"
    assert params["tcp_user_timeout"] == str(int(DEFAULT_CALL_TIMEOUT_S * 1000))
    assert SECRET not in display(params)
    monkeypatch.setattr(Session, "connect", lambda self: None)
    store = PostgresStorage(dsn, schema="s", connect_timeout_s=7)
    assert conninfo_to_dict(store.session.conninfo) == params
    assert store.describe() == describe(params, "s")
    assert SECRET not in store.describe()


def test_describe_never_shows_the_password(open_store: Opener, pg_dsn: str,
                                           pg_admin: Admin) -> None:
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
    import time

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


def test_sql_errors_are_masked_storage_errors(open_store: Opener, pg_dsn: str, schema: str,
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


def test_schema_version_is_recorded(open_store: Opener, pg_admin: Admin, schema: str) -> None:
    open_store()
    assert _stored_version(pg_admin, schema) == schema_version() >= 1


def test_newer_schema_is_refused(open_store: Opener, pg_admin: Admin, schema: str) -> None:
    Ledger(open_store()).enqueue([new_job("a")])
    pg_admin.execute(f"UPDATE \"{schema}\".meta SET value = %s WHERE key = 'schema_version'",
                     (str(schema_version() + 1),))
    with pytest.raises(StorageError, match="newer than this queuectl") as info:
        open_store()
    assert not isinstance(info.value, TransientStorageError)
    assert _stored_version(pg_admin, schema) == schema_version() + 1, "left alone"


def test_older_schema_is_upgraded_step_by_step(open_store: Opener, pg_admin: Admin,
                                               schema: str,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    base = list(schema_module.MIGRATIONS)
    Ledger(open_store()).enqueue([new_job("kept")])
    latest = schema_version()
    # Two later versions; the second relies on the first having run.
    monkeypatch.setattr(schema_module, "MIGRATIONS", [
        *base,
        (latest + 1, "CREATE TABLE {s}.upgrade_log (step int PRIMARY KEY)"),
        (latest + 2, "INSERT INTO {s}.upgrade_log (step) VALUES (2);"
                     " ALTER TABLE {s}.jobs ADD COLUMN note text"),
    ])
    new = Ledger(open_store())
    assert _stored_version(pg_admin, schema) == latest + 2
    assert [r[0] for r in pg_admin.execute(
        f'SELECT step FROM "{schema}".upgrade_log ORDER BY step')] == [2]
    assert new.get("kept") is not None, "data survives the upgrade"
    new.enqueue([new_job("after")])
    assert [j.id for j in new.list_jobs()] == ["kept", "after"]
    # The old code (one version behind) now refuses the upgraded schema.
    monkeypatch.setattr(schema_module, "MIGRATIONS", base)
    with pytest.raises(StorageError, match="newer"):
        open_store()


def test_version_1_schema_is_upgraded_in_place(open_store: Opener, pg_admin: Admin,
                                               schema: str,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    """A queue written by the first release keeps its jobs and attempt
    history, and everything new works on it."""
    monkeypatch.setattr(schema_module, "MIGRATIONS", schema_module.MIGRATIONS[:1])
    monkeypatch.setattr(views_module, "ensure", lambda conn, schema: None)  # not in release 1
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

    store = Ledger(open_store())
    assert _stored_version(pg_admin, schema) == schema_version() == 3
    wait = store.get("old-wait")
    assert wait is not None and (wait.command, wait.priority, wait.state) == (
        "echo hi", 7, JobState.PENDING)
    assert (wait.queue, wait.timeout, wait.cwd, wait.env, wait.retry,
            wait.cancel_requested_at) == ("default", None, None, None, None, None)
    assert (wait.after, wait.after_mode, wait.concurrency_key, wait.unique_key,
            wait.waiting_on, wait.dependents) == (None, None, None, None, 0, 0)
    assert [(a.number, a.outcome, a.stdout_tail) for a in store.attempts("old-dead")] == [
        (1, "failed", None), (1, "failed", None)]
    assert store.cancel("old-wait", T0 + 1).state is JobState.CANCELLED
    [lost] = store.recover_expired(T0 + 11)
    assert lost.id == "old-run" and lost.state is JobState.FAILED
    assert [a.outcome for a in store.attempts("old-run")] == ["lost"], "the token held"
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
    # Version 3: a job that runs after an old one waits for it.
    store.enqueue([new_job("next", after=["old-run"], unique_key="once")])
    assert [j.id for j in store.store.dependents("old-run")] == ["next"]
    assert store.counts()[JobState.WAITING] == 1
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


# ---------------------------------------------------------------- lost connections

def test_terminated_backend_is_transient_then_reconnects(
        open_store: Opener, terminate: Callable[[int], None]) -> None:
    store = open_store()
    Ledger(store).enqueue([new_job("a")])
    old_pid = backend_pid(store)
    terminate(old_pid)
    with pytest.raises(TransientStorageError):
        store.get("a")
    job = store.get("a")
    assert job is not None and job.id == "a"
    assert backend_pid(store) != old_pid


def test_connection_lost_mid_transaction_changes_nothing(
        open_store: Opener, terminate: Callable[[int], None],
        monkeypatch: pytest.MonkeyPatch) -> None:
    store = open_store()
    ledger = Ledger(store)
    ledger.enqueue([new_job("before")])
    real_notify = PostgresStorage._notify

    def die_before_commit(self: PostgresStorage, cur: psycopg.Cursor[Any]) -> None:
        terminate(backend_pid(self))
        real_notify(self, cur)

    monkeypatch.setattr(PostgresStorage, "_notify", die_before_commit)
    with pytest.raises(TransientStorageError):
        ledger.enqueue([new_job("x1"), new_job("x2"), new_job("x3")])
    monkeypatch.undo()
    assert [j.id for j in store.list_jobs()] == ["before"], "the batch was rolled back whole"
    ledger.enqueue([new_job("x1")])
    assert store.counts()[JobState.PENDING] == 2


def test_server_down_then_back(open_store: Opener, terminate: Callable[[int], None]) -> None:
    """Every method raises TransientStorageError while the connection is
    gone and the server refuses new ones; here the refusal is simulated by
    pointing the store at a closed port."""
    store = open_store()
    ledger = Ledger(store)
    real = store.session.conninfo
    terminate(backend_pid(store))
    store.session.conninfo = make_conninfo(real, host="127.0.0.1", port="1")
    for call in (lambda: store.get("a"), lambda: ledger.claim("w", T0, LEASE),
                 lambda: ledger.enqueue([new_job("a")]), store.get_settings,
                 lambda: store.due(T0), lambda: store.finished([JobState.COMPLETED])):
        with pytest.raises(TransientStorageError):
            call()
    store.session.conninfo = real
    assert store.get_settings() == {}


def test_a_rolled_back_transaction_is_transient_and_keeps_the_connection(
        open_store: Opener, monkeypatch: pytest.MonkeyPatch) -> None:
    """A deadlock or serialization failure: nothing changed, try again; the
    connection itself is fine and stays."""
    store = open_store()
    Ledger(store).enqueue([new_job("a"), new_job("b")])
    pid = backend_pid(store)
    changes = []
    for job_id in ("a", "b"):
        job = store.get(job_id)
        assert job is not None
        change = rules.cancelled(job, now=T0)
        assert change is not None
        changes.append(change)

    def deadlock(*args: object) -> None:
        raise psycopg.errors.DeadlockDetected("deadlock detected")

    monkeypatch.setattr(PostgresStorage, "_run", deadlock)
    with pytest.raises(TransientStorageError, match="rolled the transaction back"):
        store.apply(changes)
    monkeypatch.undo()
    assert backend_pid(store) == pid
    assert [j.state if j else None for j in store.apply(changes)] == [JobState.CANCELLED] * 2


# ---------------------------------------------------------------- fork safety

def test_a_forked_child_never_uses_the_parents_connection(open_store: Opener) -> None:
    store = open_store()
    ledger = Ledger(store)
    ledger.enqueue([new_job(f"j{i}") for i in range(4)])
    parent_pid = backend_pid(store)
    assert store.wakeup_fileno() is not None
    read_end, write_end = os.pipe()
    child = os.fork()
    if child == 0:  # pragma: no cover - runs in the child
        code = 1
        try:
            claim = ledger.claim("child", T0, LEASE)
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
    assert ledger.claim("parent", T0, LEASE) is not None
