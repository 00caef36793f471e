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
from queuectl_core.models import ExecResult, JobState, NewJob
from queuectl_core.plugins import build_plugins
from queuectl_core.registry import PluginContext
from queuectl_core.testing import MemoryStorage
from queuectl_postgres import DSN_ENV, queuectl_storage_backends
from queuectl_postgres.dsn import mask_secrets, resolve_dsn
from queuectl_postgres.options import PostgresOptions
from queuectl_postgres.store import (
    NEXT_DUE_SQL,
    PostgresStorage,
    channel_for,
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
    sql = NEXT_DUE_SQL.replace("{s}", f'"{schema}"')
    plan = "\n".join(str(r[0]) for r in pg_admin.execute(f"EXPLAIN {sql}", {"now": T0}))
    assert "jobs_ready" in plan and "Sort" not in plan and "Seq Scan" not in plan, plan
    claim = store.claim("w", T0, LEASE)
    assert claim is not None and claim.job.id == "p2"


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
