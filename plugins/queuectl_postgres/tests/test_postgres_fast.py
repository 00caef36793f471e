"""The PostgreSQL backend's CLI fast path (``queuectl_postgres.fast``)
against its full CLI.

The end-to-end cases run the real ``queuectl`` in a temporary
``QUEUECTL_HOME`` on a schema of their own, once as users get it (fast path
on, in debug mode so that it says when it falls back, as in
``tests/integration/test_fast_path.py``) and once with
``QUEUECTL_FAST_PATH=0``. Output, exit codes and stored rows must be the
same; the cases meant for the fast path must not fall back. The unit cases
check the light module's copies of the store's rules against the store.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg.conninfo import conninfo_to_dict, make_conninfo

import queuectl_postgres.store as store_module
from queuectl_core.models import WorkerInfo
from queuectl_postgres import DSN_ENV, fast
from queuectl_postgres.fast import channel_for
from queuectl_postgres.options import PostgresOptions
from queuectl_postgres.store import PostgresStorage, schema_version

QUEUECTL = Path(sys.executable).parent / "queuectl"
DECLINED = "queuectl: fast path declined:"
OPENER = "queuectl_postgres.fast:open_fast"
SECRET = "hunter2-Secret"

Admin = psycopg.Connection[tuple[object, ...]]


@dataclass(frozen=True)
class Home:
    """A QUEUECTL_HOME configured for the postgres backend on ``schema``."""

    path: Path
    schema: str
    dsn: str

    def env(self, fast_path: bool) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("QUEUECTL_")}
        env.update(QUEUECTL_HOME=str(self.path), COLUMNS="80",
                   QUEUECTL_FAST_PATH="debug" if fast_path else "0")
        env[DSN_ENV] = self.dsn
        return env

    def run(self, *args: str, fast_path: bool = True, cwd: Path | None = None
            ) -> subprocess.CompletedProcess[str]:
        return subprocess.run([str(QUEUECTL), *args], capture_output=True, text=True,
                              env=self.env(fast_path), cwd=cwd or self.path, timeout=60)

    def ok(self, *args: str, fast_path: bool = False) -> str:
        """stdout of a call that must succeed (by default on the full path)."""
        result = self.run(*args, fast_path=fast_path)
        assert result.returncode == 0, result
        return result.stdout

    def show(self, job_id: str) -> dict[str, Any]:
        data: dict[str, Any] = json.loads(self.ok("show", job_id, "--json"))
        return data


def declined(result: subprocess.CompletedProcess[str]) -> bool:
    return DECLINED in result.stderr


def stderr_of(result: subprocess.CompletedProcess[str]) -> str:
    return "".join(line for line in result.stderr.splitlines(keepends=True)
                   if not line.startswith(DECLINED))


def make_home(path: Path, schema: str, dsn: str) -> Home:
    """A home whose first (full) call created the schema and the fast-path
    cache, which names this plugin's opener."""
    path.mkdir(mode=0o700, parents=True)
    (path / "queuectl.yaml").write_text(
        f"backend: postgres\nbackends:\n  postgres:\n    schema: {schema}\n")
    home = Home(path, schema, dsn)
    home.ok("status")
    cache = json.loads((path / "cache" / "fastpath.json").read_text())
    assert (cache["backend"], cache["fast_path"]) == ("postgres", OPENER)
    return home


@pytest.fixture
def home(tmp_path: Path, pg_dsn: str, new_schema: Callable[[], str]) -> Home:
    return make_home(tmp_path / "home", new_schema(), pg_dsn)


def stored_version(admin: Admin, schema: str) -> str | None:
    row = admin.execute(f"SELECT value FROM \"{schema}\".meta WHERE key = 'schema_version'"
                        ).fetchone()
    return None if row is None else str(row[0])


def raw_jobs(admin: Admin, schema: str) -> dict[str, dict[str, Any]]:
    """Every stored job by id, as the columns hold it (json as its text)."""
    cur = admin.execute(f'SELECT *, env::text AS env_text, retry::text AS retry_text'
                        f' FROM "{schema}".jobs ORDER BY seq')
    names = [d.name for d in cur.description or []]
    rows = [dict(zip(names, row, strict=True)) for row in cur.fetchall()]
    return {str(row["id"]): row for row in rows}


# ---------------------------------------------------------------- (a) taken

def test_the_fast_path_is_taken_after_one_full_call(home: Home) -> None:
    status = home.run("status")
    assert status.returncode == 0 and not declined(status), status.stderr
    enqueue = home.run("enqueue", '{"id": "j1", "command": "true"}')
    assert enqueue.returncode == 0 and not declined(enqueue), enqueue.stderr
    assert enqueue.stdout == "Job enqueued with ID: j1\n"
    assert home.show("j1")["state"] == "pending"


def test_no_heavy_imports_on_the_fast_path(home: Home) -> None:
    """What makes it fast: neither pluggy (the package's ``__init__``
    imports nothing heavy; the hook is in ``plugin``) nor the store module,
    pydantic or the core's models are loaded."""
    probe = (
        "import sys\n"
        "from queuectl_core.cli import fast\n"
        "code = fast.run(sys.argv[1:])\n"
        "heavy = {'click', 'pluggy', 'pydantic', 'yaml', 'queuectl_core.models',\n"
        "         'queuectl_core.registry', 'queuectl_postgres.store',\n"
        "         'queuectl_postgres.options', 'queuectl_postgres.plugin'}\n"
        "print(sorted(heavy & set(sys.modules)), 'queuectl_postgres.fast' in sys.modules)\n"
    )
    for args in (["status"], ["enqueue", '{"command": "true"}']):
        out = subprocess.run([sys.executable, "-c", probe, *args], capture_output=True,
                             text=True, env=home.env(True), check=True, timeout=60).stdout
        assert out.splitlines()[-1] == "[] True", out


# ---------------------------------------------------------------- (b) same job

JOB = {"command": "echo 'ü' \"$HOME\"", "max_retries": 5, "priority": -3, "queue": "q.1",
       "timeout": 2.5, "cwd": "sub", "run_at": "2030-01-02T03:04:05.678Z",
       "env": {"Z": "last", "A": "ü ✓", "LANG": "C"}}


def comparable(job: dict[str, Any]) -> dict[str, Any]:
    out = dict(job)
    for key in ("id", "created_at", "updated_at"):
        out.pop(key)
    if out["run_at"] == job["created_at"]:
        out["run_at"] = "now"
    return out


@pytest.mark.parametrize("spec", [
    JOB,
    {"command": "true"},  # every default: max_retries from the stored setting
    {"command": "x", "env": {}, "timeout": 1, "run_at": 1700000000000, "max_retries": 0},
], ids=["all-fields", "defaults", "edge-values"])
def test_enqueue_stores_the_same_job_as_the_full_path(home: Home, pg_admin: Admin,
                                                      spec: dict[str, Any]) -> None:
    (home.path / "sub").mkdir()
    home.ok("config", "set", "max-retries", "7")
    for job_id, fast_path in (("by-fast", True), ("by-full", False)):
        result = home.run("enqueue", json.dumps({"id": job_id, **spec}, ensure_ascii=False),
                          fast_path=fast_path)
        assert result.returncode == 0, result
        assert result.stdout == f"Job enqueued with ID: {job_id}\n"
        assert not declined(result), result.stderr
    assert comparable(home.show("by-fast")) == comparable(home.show("by-full"))
    rows = raw_jobs(pg_admin, home.schema)
    fast_row, full_row = (comparable(rows[i]) for i in ("by-fast", "by-full"))
    for row in (fast_row, full_row):
        row.pop("seq")
    assert fast_row == full_row  # the json columns' text included (key order, escapes)
    if spec.get("max_retries") is None:
        assert fast_row["max_retries"] == 7


def test_enqueue_json_output_and_generated_id(home: Home) -> None:
    fast_run = home.run("enqueue", '{"command": "true"}', "--json")
    full_run = home.run("enqueue", '{"command": "true"}', "--json", fast_path=False)
    assert not declined(fast_run) and fast_run.returncode == full_run.returncode == 0
    fast_out, full_out = json.loads(fast_run.stdout), json.loads(full_run.stdout)
    assert fast_out["enqueued"] == full_out["enqueued"] == 1
    fast_job, full_job = home.show(fast_out["ids"][0]), home.show(full_out["ids"][0])
    assert len(fast_job["id"]) == len(full_job["id"]) == 12
    assert comparable(fast_job) == comparable(full_job)


# ---------------------------------------------------------------- (c) duplicate id

def test_duplicate_id_fails_as_on_the_full_path(home: Home, pg_admin: Admin) -> None:
    home.ok("enqueue", '{"id": "dup", "command": "first"}')
    before = raw_jobs(pg_admin, home.schema)
    listener = psycopg.connect(home.dsn, autocommit=True)
    try:
        listener.execute(f'LISTEN "{channel_for(home.schema)}"')
        job = '{"id": "dup", "command": "second", "queue": "other"}'
        fast_run = home.run("enqueue", job)
        full_run = home.run("enqueue", job, fast_path=False)
        notified = list(listener.notifies(timeout=0.5, stop_after=1))
    finally:
        listener.close()
    assert declined(fast_run), "the fast path must leave the error to the full command"
    assert (fast_run.returncode, fast_run.stdout, stderr_of(fast_run)) == \
        (full_run.returncode, full_run.stdout, stderr_of(full_run))
    assert full_run.returncode == 1 and "already exists" in full_run.stderr
    assert raw_jobs(pg_admin, home.schema) == before
    assert notified == [], "a rejected job must not wake workers"


def test_fast_store_enqueue_of_a_taken_id_stores_nothing(home: Home, pg_admin: Admin) -> None:
    home.ok("enqueue", '{"id": "taken", "command": "true"}')
    before = raw_jobs(pg_admin, home.schema)
    store = fast.open_fast(_options(home.schema, home.dsn), str(home.path))
    assert store is not None
    try:
        job = {"id": "taken", "command": "other", "max_retries": 1, "priority": 0,
               "run_at": 1, "created_at": 1, "queue": "default", "timeout": None,
               "cwd": None, "env": None, "retry": None}
        assert store.enqueue(job) is False
        assert store.enqueue({**job, "id": "free"}) is True
    finally:
        store.close()
    after = raw_jobs(pg_admin, home.schema)
    assert after.pop("free")["command"] == "other"
    assert after == before


# ---------------------------------------------------------------- (d) status

def test_status_matches_the_full_path(home: Home, pg_dsn: str) -> None:
    for args in (["enqueue", "-c", "x", "--queue", "other"], ["enqueue", "-c", "y"],
                 ["enqueue", "-c", "z", "--id", "gone"], ["cancel", "gone"],
                 ["pause", "zzz"], ["pause", "other"], ["config", "set", "lease-seconds", "30"]):
        home.ok(*args)
    store = PostgresStorage(pg_dsn, schema=home.schema)
    try:
        now = time.time_ns() // 1_000_000
        # Active: a heartbeat within the lease (30 s); stale: older than that.
        store.register_worker(WorkerInfo(id="live", hostname="h", pid=1, started_at=now,
                                         heartbeat_at=now - 20_000))
        store.register_worker(WorkerInfo(id="stale", hostname="h", pid=2, started_at=now,
                                         heartbeat_at=now - 40_000))
    finally:
        store.close()
    for args in ([], ["--json"]):
        fast_run = home.run("status", *args)
        full_run = home.run("status", *args, fast_path=False)
        assert not declined(fast_run), fast_run.stderr
        assert (fast_run.returncode, fast_run.stdout) == (full_run.returncode, full_run.stdout)
    data = json.loads(home.ok("status", "--json", fast_path=True))
    assert (data["pending"], data["cancelled"], data["active_workers"],
            data["paused_queues"]) == (2, 1, 1, ["other", "zzz"])
    text = home.ok("status", fast_path=True)
    assert text.startswith(f"Queue status (postgres {fast.display(conninfo_to_dict(pg_dsn))}"
                           f" (schema {home.schema}))\n")


# ---------------------------------------------------------------- (e) wake-ups

def listening(admin: Admin, channel: str) -> bool:
    """Some session's last statement was a LISTEN on ``channel`` (the
    worker's wake-up connection is up)."""
    row = admin.execute("SELECT count(*) FROM pg_stat_activity WHERE query = %s",
                        (f'LISTEN "{channel}"',)).fetchone()
    return row is not None and row[0] == 1


def wait_for(predicate: Callable[[], Any], timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    interval = 0.02
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout:g}s waiting for {what}")
        time.sleep(min(interval, max(0.0, deadline - time.monotonic())))
        interval = min(interval * 1.5, 0.25)


@contextmanager
def foreground_worker(home: Home, log: Path) -> Iterator[subprocess.Popen[bytes]]:
    """``queuectl worker run`` in ``home`` (its own session), stopped
    afterwards: SIGTERM, then SIGKILL for its whole group if it lingers."""
    with log.open("wb") as out:
        proc = subprocess.Popen([str(QUEUECTL), "worker", "run"], stdin=subprocess.DEVNULL,
                                stdout=out, stderr=subprocess.STDOUT, env=home.env(False),
                                cwd=home.path, start_new_session=True)
    try:
        yield proc
    finally:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)


def test_a_fast_enqueue_wakes_an_idle_worker_elsewhere(home: Home, tmp_path: Path,
                                                        pg_admin: Admin) -> None:
    """The worker runs on "another machine": a second home on the same
    schema, so that only PostgreSQL's notification (not the local wake-up
    sockets of the enqueuing home) can tell it about the new job."""
    # Polls and housekeeping (every lease/3) far apart, set before the worker
    # starts: only a notification can make it claim the job within the deadline.
    home.ok("config", "set", "worker-idle-delay", "600000")
    home.ok("config", "set", "lease-seconds", "3600")
    other = Home(tmp_path / "worker-home", home.schema, home.dsn)
    other.path.mkdir(mode=0o700)
    (other.path / "queuectl.yaml").write_text((home.path / "queuectl.yaml").read_text())
    log = tmp_path / "worker.log"
    with foreground_worker(other, log) as proc:
        wait_for(lambda: json.loads(other.ok("status", "--json"))["active_workers"] == 1,
                 30, "the worker to register")
        wait_for(lambda: listening(pg_admin, channel_for(home.schema)), 30,
                 "the worker's LISTEN connection")
        started = time.monotonic()
        result = home.run("enqueue", '{"id": "woken", "command": "true"}')
        assert result.returncode == 0 and not declined(result), result.stderr

        def completed() -> dict[str, Any] | None:
            job = home.show("woken")
            return job if job["state"] == "completed" else None

        job = wait_for(completed, 30, "the job to complete (the worker was not woken)")
        elapsed = time.monotonic() - started
        assert proc.poll() is None, log.read_text()
    assert job["attempts"] == 1 and elapsed < 30, (job, elapsed)


# ---------------------------------------------------------------- (f) schema versions

def test_a_missing_schema_is_left_to_the_full_command(home: Home, pg_admin: Admin) -> None:
    pg_admin.execute(f'DROP SCHEMA "{home.schema}" CASCADE')
    enqueue = home.run("enqueue", '{"id": "after-drop", "command": "true"}')
    assert declined(enqueue) and enqueue.returncode == 0, enqueue
    assert enqueue.stdout == "Job enqueued with ID: after-drop\n"
    assert stored_version(pg_admin, home.schema) == str(schema_version())
    assert list(raw_jobs(pg_admin, home.schema)) == ["after-drop"]
    again = home.run("status")
    assert not declined(again) and again.returncode == 0, again.stderr


def test_an_older_schema_is_upgraded_by_the_full_command(
        home: Home, pg_admin: Admin, pg_dsn: str, monkeypatch: pytest.MonkeyPatch) -> None:
    pg_admin.execute(f'DROP SCHEMA "{home.schema}" CASCADE')
    monkeypatch.setattr(store_module, "MIGRATIONS", store_module.MIGRATIONS[:1])
    PostgresStorage(pg_dsn, schema=home.schema).close()  # as version 1 wrote it
    monkeypatch.undo()
    assert stored_version(pg_admin, home.schema) == "1"
    status = home.run("status", "--json")
    assert declined(status) and status.returncode == 0, status
    assert json.loads(status.stdout)["pending"] == 0
    assert stored_version(pg_admin, home.schema) == str(schema_version())
    enqueue = home.run("enqueue", '{"id": "upgraded", "command": "true"}')
    assert not declined(enqueue) and enqueue.returncode == 0, enqueue.stderr


def test_a_newer_schema_is_refused_by_the_full_command(home: Home, pg_admin: Admin) -> None:
    newer = str(schema_version() + 1)
    pg_admin.execute(f"UPDATE \"{home.schema}\".meta SET value = %s"
                     " WHERE key = 'schema_version'", (newer,))
    for args in (["status"], ["enqueue", '{"id": "nope", "command": "true"}']):
        fast_run = home.run(*args)
        full_run = home.run(*args, fast_path=False)
        assert declined(fast_run), fast_run.stderr
        assert (fast_run.returncode, fast_run.stdout, stderr_of(fast_run)) == \
            (full_run.returncode, full_run.stdout, stderr_of(full_run))
        assert fast_run.returncode == 1 and "newer than this queuectl" in fast_run.stderr
    assert stored_version(pg_admin, home.schema) == newer
    assert raw_jobs(pg_admin, home.schema) == {}


# ---------------------------------------------------------------- (g) the store's rules

def _options(schema: str, dsn: str | None = None, timeout: int = 5) -> dict[str, Any]:
    return PostgresOptions.model_validate(
        {"schema": schema, "dsn": dsn, "connect_timeout_s": timeout}).model_dump(mode="json")


def test_schema_version_is_the_stores() -> None:
    assert schema_version() == fast.SCHEMA_VERSION


def test_option_fields_and_defaults_are_the_models() -> None:
    dumped = PostgresOptions().model_dump(mode="json")
    assert set(dumped) == fast.OPTION_FIELDS
    assert (dumped["schema_name"], dumped["connect_timeout_s"]) == \
        (fast.DEFAULT_SCHEMA, fast.DEFAULT_CONNECT_TIMEOUT_S)


@pytest.mark.parametrize("dsn", [
    "postgresql://127.0.0.1:5432/test",
    f"postgresql://alice:{SECRET}@db.example:6543/jobs?sslmode=require",
    "postgresql://b%40b@[::1]/d",
    f"host=/var/run/postgresql user=x password={SECRET} dbname=q",
    "hostaddr=10.0.0.1 port=5433",
    "host=h1,h2 port=5432,5433 dbname=q application_name=mine connect_timeout=99",
    "",
])
def test_connection_and_display_are_the_stores(dsn: str,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    """Without a server: the parameters the store would connect with (its
    connection string) and the text it would show."""
    params = fast.connection_params(dsn, 7)
    assert SECRET not in fast.display(params)
    monkeypatch.setattr(PostgresStorage, "_connect", lambda self: None)
    store = PostgresStorage(dsn, schema="s", connect_timeout_s=7)
    assert conninfo_to_dict(store._conninfo) == params
    assert fast.describe(params, "s") == store.describe()


def test_describe_of_an_open_store_is_the_stores(home: Home, pg_admin: Admin) -> None:
    user = str(pg_admin.execute("SELECT current_user").fetchone()[0])  # type: ignore[index]
    params = conninfo_to_dict(home.dsn)
    for dsn in (f"postgresql://{user}:{SECRET}@{params.get('host')}:{params.get('port')}"
                f"/{params.get('dbname')}",
                make_conninfo("", **{**params, "user": user, "password": SECRET}),
                home.dsn):
        store = PostgresStorage(dsn, schema=home.schema)  # trust auth ignores the password
        light = fast.open_fast(_options(home.schema, dsn), str(home.path))
        assert light is not None
        try:
            assert light.describe() == store.describe()
            assert SECRET not in light.describe()
        finally:
            light.close()
            store.close()


def test_reads_are_the_stores(home: Home, pg_dsn: str) -> None:
    for args in (["enqueue", "-c", "x", "--queue", "a"], ["enqueue", "-c", "y", "--queue", "b"],
                 ["pause", "b"], ["pause", "a"], ["config", "set", "backoff-base", "3"],
                 ["config", "set", "max-retries", "4"]):
        home.ok(*args)
    store = PostgresStorage(pg_dsn, schema=home.schema)
    store.register_worker(WorkerInfo(id="w", hostname="h", pid=1, started_at=5,
                                     heartbeat_at=123))
    light = fast.open_fast(_options(home.schema, home.dsn), str(home.path))
    assert light is not None
    try:
        assert light.stored_settings() == store.get_settings()
        for queue in (None, "a", "nonesuch"):
            full = {s.value: n for s, n in store.counts(queue).items() if n}
            assert light.counts(queue) == full
        assert light.worker_heartbeats() == [w.heartbeat_at for w in store.list_workers()]
        assert light.paused_queues() == store.paused_queues() == ["a", "b"]
    finally:
        light.close()
        store.close()


def test_a_fast_enqueue_notifies_the_queues_channel(home: Home) -> None:
    """What wakes workers on other machines (none for a duplicate: above)."""
    listener = psycopg.connect(home.dsn, autocommit=True)
    try:
        listener.execute(f'LISTEN "{channel_for(home.schema)}"')
        result = home.run("enqueue", '{"id": "n1", "command": "true"}')
        assert result.returncode == 0 and not declined(result), result.stderr
        notes = list(listener.notifies(timeout=10, stop_after=1))
    finally:
        listener.close()
    assert [(n.channel, n.payload) for n in notes] == [(channel_for(home.schema), "")]


# ---------------------------------------------------------------- when it declines

def test_open_fast_declines_what_it_cannot_serve(monkeypatch: pytest.MonkeyPatch,
                                                 pg_dsn: str, new_schema: Callable[[], str]
                                                 ) -> None:
    monkeypatch.delenv(DSN_ENV, raising=False)
    assert fast.open_fast(None, "/nonexistent") is None, "no DSN anywhere"
    assert fast.open_fast(_options("q", "host='unterminated"), "/x") is None, "bad DSN"
    assert fast.open_fast(_options("q", "postgresql://127.0.0.1:1/test", 1), "/x") is None
    schema = new_schema()
    opts = _options(schema, pg_dsn)
    assert fast.open_fast(opts, "/x") is None, "no schema yet"
    PostgresStorage(pg_dsn, schema=schema).close()
    assert fast.open_fast({**opts, "sslmode": "require"}, "/x") is None, "unknown option"
    assert fast.open_fast({k: v for k, v in opts.items() if k != "dsn"}, "/x") is None
    monkeypatch.setenv(DSN_ENV, pg_dsn)
    store = fast.open_fast({**opts, "dsn": None}, "/x")
    assert store is not None, "the DSN from the environment"
    store.close()


def test_unreachable_server_declines_within_the_connect_timeout() -> None:
    started = time.monotonic()
    # 192.0.2.0/24 (TEST-NET-1) is never routed: the connection attempt hangs
    # until connect_timeout, unless the network says "unreachable" at once.
    opts = _options("q", "postgresql://192.0.2.1:5432/test", 1)
    assert fast.open_fast(opts, "/x") is None
    assert time.monotonic() - started < 5


@contextmanager
def silent_server() -> Iterator[tuple[int, Callable[[], int]]]:
    """A TCP port on 127.0.0.1 that accepts connections and never says a
    word (a PostgreSQL server that hangs): its port, and a function that
    counts the connections it got so far."""
    import socket
    import threading

    server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    server.bind(("127.0.0.1", 0))
    server.listen(16)
    server.settimeout(0.1)
    accepted: list[socket.socket] = []
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                conn, _ = server.accept()
            except TimeoutError:
                continue
            accepted.append(conn)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield server.getsockname()[1], lambda: len(accepted)
    finally:
        stop.set()
        thread.join(5)
        for conn in accepted:
            conn.close()
        server.close()


def test_a_server_that_does_not_answer_is_waited_for_once(home: Home) -> None:
    """The fast path declines after the connect timeout and the CLI runs the
    full command, which must report that failure, not connect and wait for
    the same timeout again (it would double the wait for a hung server)."""
    (home.path / "queuectl.yaml").write_text(
        f"backend: postgres\nbackends:\n  postgres:\n    schema: {home.schema}\n"
        "    connect_timeout_s: 2\n")
    home.ok("status")  # the cache for this configuration
    with silent_server() as (port, connections):
        env = {**home.env(True), DSN_ENV: f"postgresql://127.0.0.1:{port}/test"}
        fast_run = subprocess.run([str(QUEUECTL), "status"], capture_output=True, text=True,
                                  env=env, cwd=home.path, timeout=60)
        through_fast = connections()
        env["QUEUECTL_FAST_PATH"] = "0"
        full_run = subprocess.run([str(QUEUECTL), "status"], capture_output=True, text=True,
                                  env=env, cwd=home.path, timeout=60)
        through_full = connections() - through_fast
    assert declined(fast_run), fast_run.stderr
    assert (fast_run.returncode, stderr_of(fast_run)) == (full_run.returncode, full_run.stderr)
    assert full_run.returncode != 0 and "PostgreSQL" in full_run.stderr
    assert (through_fast, through_full) == (1, 1), "one connection attempt per command"
