"""Schema versions of the SQLite store: a store written by the previous
release (schema version 1) opens with this code, is upgraded in place in one
step, keeps all its data and ends up with the same schema as a new store."""

from __future__ import annotations

import sqlite3
import subprocess
from pathlib import Path

import pytest

from queuectl_core.errors import StorageError
from queuectl_core.ledger import Ledger
from queuectl_core.models import ExecResult, Job, JobState, WorkerInfo
from queuectl_sqlite import schema as store_module
from queuectl_sqlite.schema import SCHEMA_VERSION
from queuectl_sqlite.store import SqliteStorage

T0 = 1_800_000_000_000
LEASE = 10_000
HERE = Path(__file__).parent
V1_SCHEMA = (HERE / "schema_v1.sql").read_text()
#: The released file that schema_v1.sql was copied from.
V1_SOURCE = ("cc77693^", "plugins/queuectl_sqlite/queuectl_sqlite/store.py")
ODD_ID = "naïve/ïd ✓ 'q'"


def _v1_body() -> str:
    return "".join(line for line in V1_SCHEMA.splitlines(keepends=True)
                   if not line.startswith("-- The schema of") and "byte for byte" not in line)


def test_v1_fixture_is_the_released_schema() -> None:
    """schema_v1.sql is what the previous release created (checked against
    git history when this is a git checkout that has it)."""
    rev, path = V1_SOURCE
    try:
        source = subprocess.run(["git", "show", f"{rev}:{path}"], cwd=HERE, check=True,
                                capture_output=True, text=True, timeout=30).stdout
    except (OSError, subprocess.SubprocessError):
        pytest.skip("no git history to compare with")
    assert "SCHEMA_VERSION = 1\n" in source
    released = source.split('_SCHEMA = """\n', 1)[1].split('"""', 1)[0]
    assert _v1_body() == released


def make_v1_store(path: Path) -> None:
    """A store as the previous release left it: every kind of job (one of
    them running), attempt history, settings and a worker."""
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA journal_mode = WAL")
    with conn:
        for statement in V1_SCHEMA.split(";"):
            if statement.strip():
                conn.execute(statement)
        conn.execute("PRAGMA user_version = 1")
    columns = ("id, command, state, attempts, max_retries, priority, run_at, created_at,"
               " updated_at, started_at, finished_at, worker_id, claim_token, lease_expires_at,"
               " last_error, exit_code")
    jobs = [
        ("done", "echo done", "completed", 1, 3, 0, T0, T0, T0 + 5, T0 + 1, T0 + 5, "w-old",
         None, None, None, 0),
        ("dead", "exit 3", "dead", 2, 1, 0, T0 + 2, T0, T0 + 9, T0 + 3, T0 + 9, "w-old", None,
         None, "exit 3", 3),
        ("waiting", "echo wait", "pending", 0, 3, 5, T0, T0, T0, None, None, None, None, None,
         None, None),
        ("retry", "flaky", "failed", 1, 3, 0, T0 + 100, T0, T0 + 4, T0 + 3, T0 + 4, "w-old",
         None, None, "boom", 1),
        ("running", "sleep 9", "processing", 1, 3, 0, T0, T0, T0 + 6, T0 + 6, None, "w-old",
         "tok-running", T0 + 6 + LEASE, None, None),
        (ODD_ID, "printf 'ünï'", "pending", 0, 0, 0, T0 + 50, T0, T0, None, None, None, None,
         None, None, None),
    ]
    attempts = [
        ("done", 1, "tok-done", "w-old", T0 + 1, T0 + 5, "completed", 0, None, None),
        ("dead", 1, "tok-dead1", "w-old", T0 + 1, T0 + 2, "failed", 3, None, "exit 3"),
        ("dead", 2, "tok-dead2", "w-old", T0 + 3, T0 + 9, "failed", 3, None, "exit 3"),
        ("retry", 1, "tok-retry", "w-old", T0 + 3, T0 + 4, "failed", 1, None, "boom"),
        ("running", 1, "tok-running", "w-old", T0 + 6, None, "running", None, None, None),
    ]
    with conn:
        conn.executemany(f"INSERT INTO jobs ({columns}) VALUES ({', '.join('?' * 16)})", jobs)
        conn.executemany(
            "INSERT INTO attempts (job_id, number, claim_token, worker_id, started_at,"
            " finished_at, outcome, exit_code, signal, error) VALUES (?,?,?,?,?,?,?,?,?,?)",
            attempts)
        conn.execute("INSERT INTO settings VALUES ('max_retries', '5')")
        conn.execute("INSERT INTO workers VALUES ('h:1:w-old', 'h', 1, ?, ?, 'running', 77)",
                     (T0, T0 + 6))
    conn.close()


def schema_of(path: Path) -> dict[str, object]:
    """Tables (their columns) and indexes (their definitions) of a store."""
    conn = sqlite3.connect(path)
    try:
        tables = {name: conn.execute(f"PRAGMA table_info({name})").fetchall()
                  for (name,) in conn.execute(
                      "SELECT name FROM sqlite_master WHERE type = 'table'"
                      " AND name NOT LIKE 'sqlite_%'")}
        indexes = {name: " ".join(str(sql).split()) for name, sql in conn.execute(
            "SELECT name, sql FROM sqlite_master WHERE type = 'index'")}
        version = conn.execute("PRAGMA user_version").fetchone()[0]
    finally:
        conn.close()
    return {"tables": tables, "indexes": indexes, "version": version}


def test_v1_store_is_upgraded_in_place_and_keeps_its_data(tmp_path: Path) -> None:
    path = tmp_path / "queue.db"
    make_v1_store(path)
    store = Ledger(SqliteStorage(path))
    try:
        version = store.store.conn.execute("PRAGMA user_version").fetchone()[0]  # type: ignore[attr-defined]
        assert version == SCHEMA_VERSION == 3
        # Every job, as it was, with the new fields at their defaults.
        assert [j.id for j in store.list_jobs()] == ["done", "dead", "waiting", "retry",
                                                     "running", ODD_ID]
        done = store.get("done")
        assert done is not None and done.state is JobState.COMPLETED
        assert (done.attempts, done.finished_at, done.exit_code, done.worker_id) == (
            1, T0 + 5, 0, "w-old")
        for job in store.list_jobs():
            assert (job.queue, job.timeout, job.cwd, job.env, job.retry,
                    job.cancel_requested_at) == ("default", None, None, None, None, None)
        retry = store.get("retry")
        assert retry is not None and (retry.state, retry.run_at, retry.last_error) == (
            JobState.FAILED, T0 + 100, "boom")
        odd = store.get(ODD_ID)
        assert odd is not None and odd.command == "printf 'ünï'"
        assert [(a.number, a.outcome, a.error, a.stdout_tail, a.stderr_tail)
                for a in store.attempts("dead")] == [(1, "failed", "exit 3", None, None),
                                                     (2, "failed", "exit 3", None, None)]
        assert store.counts() == {**dict.fromkeys(JobState, 0), JobState.PENDING: 2,
                                  JobState.PROCESSING: 1, JobState.COMPLETED: 1,
                                  JobState.FAILED: 1, JobState.DEAD: 1}
        assert store.counts("default") == store.counts()
        assert store.get_settings() == {"max_retries": 5}
        assert store.list_workers() == [WorkerInfo(id="h:1:w-old", hostname="h", pid=1,
                                                   started_at=T0, heartbeat_at=T0 + 6,
                                                   current_job="running", job_pgid=77)]
        assert store.paused_queues() == []
        assert store.next_run_at() == T0 and store.next_run_at(["default"]) == T0
        # The job that was running when the old version stopped is taken back
        # under its old claim token.
        [lost] = store.recover_expired(T0 + 6 + LEASE + 1)
        assert lost.id == "running" and lost.state is JobState.FAILED
        assert [a.outcome for a in store.attempts("running")] == ["lost"]
        # Claims work, in the usual order, numbering attempts after the history.
        claim = store.claim("w-new", T0 + 6 + LEASE + 1, LEASE, queues=["default"])
        assert claim is not None and claim.job.id == "waiting" and claim.attempt == 1
        for job_id in (ODD_ID, "retry"):
            assert store.cancel(job_id, T0 + 6 + LEASE + 1).state is JobState.CANCELLED
        claim = store.claim("w-new", T0 + 6 + LEASE + 1, LEASE)
        assert claim is not None and claim.job.id == "running"
        assert (claim.attempt, claim.job.attempts) == (2, 2)
        store.complete(claim, ExecResult(exit_code=0, stdout_tail="ok\n"), T0 + 20_000)
        assert store.attempts("running")[-1].stdout_tail == "ok\n"
        store.dlq_retry("dead", T0 + 20_001)
        claim = store.claim("w-new", T0 + 20_001, LEASE)
        assert claim is not None and claim.job.id == "dead"
        assert (claim.attempt, claim.job.attempts) == (3, 1)
        # New features work on old rows.
        assert store.set_queue_paused("default", True)
        assert store.claim("w-new", T0 + 10**9, LEASE) is None
        assert store.purge(states=[JobState.COMPLETED]) == ["done", "running"]
        assert store.attempts("done") == []
    finally:
        store.close()
    # Opening again changes nothing; the upgraded store has the schema of a new one.
    SqliteStorage(path).close()
    SqliteStorage(tmp_path / "new.db").close()
    assert schema_of(path) == schema_of(tmp_path / "new.db")


def test_upgraded_store_has_the_new_indexes(tmp_path: Path) -> None:
    path = tmp_path / "queue.db"
    make_v1_store(path)
    SqliteStorage(path).close()
    indexes = schema_of(path)["indexes"]
    assert isinstance(indexes, dict)
    assert "(queue, priority DESC, run_at, seq)" in indexes["jobs_ready"]
    assert "(queue, run_at)" in indexes["jobs_due"]
    assert "jobs_finished" in indexes


def test_failed_upgrade_leaves_the_old_store_whole(tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "queue.db"
    make_v1_store(path)
    before = schema_of(path)
    broken = store_module.UPGRADES[1] + ";\nSELECT no_such_column FROM jobs"
    monkeypatch.setitem(store_module.UPGRADES, 1, broken)
    with pytest.raises(StorageError, match="cannot be used"):
        SqliteStorage(path)
    assert schema_of(path) == before, "the upgrade is one transaction"
    monkeypatch.undo()
    store = SqliteStorage(path)
    try:
        assert len(store.list_jobs()) == 6
    finally:
        store.close()


def test_every_older_version_has_an_upgrade() -> None:
    assert set(store_module.UPGRADES) == set(range(1, SCHEMA_VERSION))


def test_whole_second_timeouts_stay_floats_through_returning(tmp_path: Path) -> None:
    """SQLite hands a whole REAL back as an integer from UPDATE ... RETURNING;
    every path must still give the float the model promises."""
    store = Ledger(SqliteStorage(tmp_path / "q.db"))
    try:
        store.enqueue([Job.new(id="a", command="true", max_retries=0, run_at=0, created_at=0,
                               timeout=30.0)])
        claim = store.claim("w", 1, 10_000)
        assert claim is not None and type(claim.job.timeout) is float
        job = store.cancel("a", 2)
        assert type(job.timeout) is float and job.timeout == 30.0
    finally:
        store.close()
