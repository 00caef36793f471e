"""SQLite implementation of the storage seam.

Concurrency: WAL journal, one short ``BEGIN IMMEDIATE`` transaction per
state change. ``BEGIN IMMEDIATE`` takes the database's single write lock
before reading, so the claim's ``UPDATE ... WHERE seq = (SELECT ...)
RETURNING`` sees and changes the row while no other process can write:
two workers can never take the same job. Waiting for the lock is bounded by
the busy timeout.
"""

from __future__ import annotations

import json
import os
import sqlite3
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from queuectl_core.errors import (
    DuplicateJobError,
    InvalidStateError,
    JobNotFoundError,
    StorageError,
)
from queuectl_core.models import (
    Attempt,
    Claim,
    ExecResult,
    Job,
    JobState,
    NewJob,
    WorkerInfo,
)
from queuectl_core.storage import INTERRUPTED_ATTEMPT_ERROR, LOST_ATTEMPT_ERROR, Storage

SCHEMA_VERSION = 1

_SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    seq              INTEGER PRIMARY KEY AUTOINCREMENT,
    id               TEXT NOT NULL UNIQUE,
    command          TEXT NOT NULL,
    state            TEXT NOT NULL,
    attempts         INTEGER NOT NULL DEFAULT 0,
    max_retries      INTEGER NOT NULL,
    priority         INTEGER NOT NULL DEFAULT 0,
    run_at           INTEGER NOT NULL,
    created_at       INTEGER NOT NULL,
    updated_at       INTEGER NOT NULL,
    started_at       INTEGER,
    finished_at      INTEGER,
    worker_id        TEXT,
    claim_token      TEXT,
    lease_expires_at INTEGER,
    last_error       TEXT,
    exit_code        INTEGER
);
-- Claim order, over claimable jobs only: finished jobs never slow a claim.
-- Queries name it with INDEXED BY: without statistics the planner would
-- pick jobs_state and sort every claimable job on each claim.
CREATE INDEX IF NOT EXISTS jobs_ready ON jobs (priority DESC, run_at, seq)
    WHERE state IN ('pending', 'failed');
CREATE INDEX IF NOT EXISTS jobs_due ON jobs (run_at) WHERE state IN ('pending', 'failed');
CREATE INDEX IF NOT EXISTS jobs_leases ON jobs (lease_expires_at) WHERE state = 'processing';
CREATE INDEX IF NOT EXISTS jobs_state ON jobs (state, seq);
CREATE TABLE IF NOT EXISTS attempts (
    rowid        INTEGER PRIMARY KEY,
    job_id       TEXT NOT NULL,
    number       INTEGER NOT NULL,
    claim_token  TEXT NOT NULL UNIQUE,
    worker_id    TEXT NOT NULL,
    started_at   INTEGER NOT NULL,
    finished_at  INTEGER,
    outcome      TEXT NOT NULL,
    exit_code    INTEGER,
    signal       INTEGER,
    error        TEXT
);
CREATE INDEX IF NOT EXISTS attempts_job ON attempts (job_id, rowid);
CREATE TABLE IF NOT EXISTS settings (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS workers (
    id           TEXT PRIMARY KEY,
    hostname     TEXT NOT NULL,
    pid          INTEGER NOT NULL,
    started_at   INTEGER NOT NULL,
    heartbeat_at INTEGER NOT NULL,
    current_job  TEXT,
    job_pgid     INTEGER
);
"""

_CLAIMABLE = "state IN ('pending', 'failed')"
#: The next due job (parameter: now), in claim order.
NEXT_DUE_SQL = (
    f"SELECT seq FROM jobs INDEXED BY jobs_ready WHERE {_CLAIMABLE} AND run_at <= ?"
    " ORDER BY priority DESC, run_at, seq LIMIT 1"
)
_JOB_FIELDS = Job.field_names()
_ATTEMPT_FIELDS = Attempt.field_names()


def _job(row: sqlite3.Row) -> Job:
    return Job(**{k: row[k] for k in _JOB_FIELDS})


def _attempt(row: sqlite3.Row) -> Attempt:
    return Attempt(**{k: row[k] for k in _ATTEMPT_FIELDS})


class SqliteStorage(Storage):
    """A queue in one SQLite file."""

    def __init__(self, path: Path, *, synchronous: str = "full",
                 busy_timeout_ms: int = 30_000) -> None:
        self.path = path
        try:
            path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            # Create the file private to the user before SQLite opens it;
            # SQLite gives its -wal and -shm files the same permissions.
            os.close(os.open(path, os.O_RDWR | os.O_CREAT, 0o600))
        except OSError as exc:
            raise StorageError(f"cannot open SQLite database {path}: {exc.strerror}") from None
        try:
            self.conn = sqlite3.connect(
                path, timeout=busy_timeout_ms / 1000, isolation_level=None,
                check_same_thread=False,
            )
            self.conn.row_factory = sqlite3.Row
            self.conn.execute(f"PRAGMA busy_timeout = {int(busy_timeout_ms)}")
            mode = self.conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
            if str(mode).lower() != "wal":
                raise StorageError(f"SQLite database {path}: cannot switch to WAL mode ({mode})")
            sync = "FULL" if synchronous == "full" else "NORMAL"
            self.conn.execute(f"PRAGMA synchronous = {sync}")
            self._migrate()
        except sqlite3.DatabaseError as exc:
            raise StorageError(
                f"SQLite database {path} cannot be used: {exc}. If the file is damaged, "
                "move it aside and restore a backup; queuectl never overwrites it."
            ) from None

    # ---------------------------------------------------------- plumbing
    def _migrate(self) -> None:
        version = self.conn.execute("PRAGMA user_version").fetchone()[0]
        if version == SCHEMA_VERSION:
            return
        if version > SCHEMA_VERSION:
            raise StorageError(
                f"SQLite database {self.path} has schema version {version}, newer than this "
                f"queuectl understands ({SCHEMA_VERSION}); upgrade queuectl"
            )
        with self._write():
            version = self.conn.execute("PRAGMA user_version").fetchone()[0]
            if version < SCHEMA_VERSION:
                for statement in _SCHEMA.split(";"):
                    if statement.strip():
                        self.conn.execute(statement)
                self.conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        """One write transaction, holding the database's write lock from the
        start (BEGIN IMMEDIATE)."""
        try:
            self.conn.execute("BEGIN IMMEDIATE")
        except sqlite3.OperationalError as exc:
            raise StorageError(f"SQLite database {self.path} is busy: {exc}") from None
        try:
            yield self.conn
        except BaseException:
            self.conn.execute("ROLLBACK")
            raise
        else:
            self.conn.execute("COMMIT")

    def describe(self) -> str:
        return f"sqlite {self.path}"

    def local_paths(self) -> list[Path]:
        return [self.path]

    def close(self) -> None:
        self.conn.close()

    # ---------------------------------------------------------- jobs
    def enqueue(self, jobs: Sequence[NewJob]) -> None:
        seen: set[str] = set()
        for job in jobs:
            if job.id in seen:
                raise DuplicateJobError(job.id)
            seen.add(job.id)
        rows = [
            (j.id, j.command, JobState.PENDING.value, j.max_retries, j.priority, j.run_at,
             j.created_at, j.created_at)
            for j in jobs
        ]
        try:
            with self._write() as conn:
                conn.executemany(
                    "INSERT INTO jobs (id, command, state, attempts, max_retries, priority,"
                    " run_at, created_at, updated_at) VALUES (?, ?, ?, 0, ?, ?, ?, ?, ?)",
                    rows,
                )
        except sqlite3.IntegrityError:
            raise DuplicateJobError(self._first_existing([j.id for j in jobs])) from None

    def import_jobs(self, records: Sequence[tuple[Job, Sequence[Attempt]]]) -> None:
        seen: set[str] = set()
        for job, _ in records:
            if job.id in seen:
                raise DuplicateJobError(job.id)
            seen.add(job.id)
        columns = ", ".join(_JOB_FIELDS)
        marks = ", ".join("?" * len(_JOB_FIELDS))
        try:
            with self._write() as conn:
                for job, history in records:
                    data = job.as_dict()
                    data["state"] = job.state.value
                    conn.execute(f"INSERT INTO jobs ({columns}) VALUES ({marks})",
                                 [data[k] for k in _JOB_FIELDS])
                    conn.executemany(
                        "INSERT INTO attempts (job_id, number, claim_token, worker_id,"
                        " started_at, finished_at, outcome, exit_code, signal, error)"
                        " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                        [(a.job_id, a.number, uuid.uuid4().hex, a.worker_id, a.started_at,
                          a.finished_at, a.outcome, a.exit_code, a.signal, a.error)
                         for a in history],
                    )
        except sqlite3.IntegrityError:
            raise DuplicateJobError(self._first_existing([j.id for j, _ in records])) from None

    def _first_existing(self, ids: list[str]) -> str:
        for start in range(0, len(ids), 500):
            chunk = ids[start:start + 500]
            marks = ",".join("?" * len(chunk))
            row = self.conn.execute(
                f"SELECT id FROM jobs WHERE id IN ({marks}) LIMIT 1", chunk
            ).fetchone()
            if row is not None:
                return str(row[0])
        return ids[0]

    def get(self, job_id: str) -> Job | None:
        row = self.conn.execute("SELECT * FROM jobs WHERE id = ?", (job_id,)).fetchone()
        return None if row is None else _job(row)

    def attempts(self, job_id: str) -> list[Attempt]:
        rows = self.conn.execute(
            "SELECT * FROM attempts WHERE job_id = ? ORDER BY rowid", (job_id,)
        ).fetchall()
        return [_attempt(r) for r in rows]

    def list_jobs(self, state: JobState | None = None, limit: int | None = None) -> list[Job]:
        sql = "SELECT * FROM jobs"
        params: list[Any] = []
        if state is not None:
            sql += " WHERE state = ?"
            params.append(state.value)
        sql += " ORDER BY seq"
        if limit is not None:
            sql += " LIMIT ?"
            params.append(limit)
        return [_job(r) for r in self.conn.execute(sql, params)]

    def counts(self) -> dict[JobState, int]:
        counts = dict.fromkeys(JobState, 0)
        for state, n in self.conn.execute("SELECT state, count(*) FROM jobs GROUP BY state"):
            counts[JobState(state)] = n
        return counts

    def next_run_at(self) -> int | None:
        row = self.conn.execute(
            f"SELECT min(run_at) FROM jobs INDEXED BY jobs_due WHERE {_CLAIMABLE}").fetchone()
        return None if row[0] is None else int(row[0])

    # ---------------------------------------------------------- claims
    def claim(self, worker_id: str, now: int, lease_ms: int) -> Claim | None:
        token = uuid.uuid4().hex
        lease = now + lease_ms
        with self._write() as conn:
            row = conn.execute(
                "UPDATE jobs SET state = 'processing', attempts = attempts + 1,"
                " worker_id = ?, claim_token = ?, lease_expires_at = ?, started_at = ?,"
                " finished_at = NULL, updated_at = ?"
                f" WHERE seq = ({NEXT_DUE_SQL}) RETURNING *",
                (worker_id, token, lease, now, now, now),
            ).fetchone()
            if row is None:
                return None
            job = _job(row)
            conn.execute(
                "INSERT INTO attempts (job_id, number, claim_token, worker_id, started_at,"
                " outcome) VALUES (?, ?, ?, ?, ?, 'running')",
                (job.id, job.attempts, token, worker_id, now),
            )
        return Claim(job=job, token=token, worker_id=worker_id, attempt=job.attempts,
                     lease_expires_at=lease)

    def renew(self, claim: Claim, now: int, lease_ms: int) -> bool:
        with self._write() as conn:
            cur = conn.execute(
                "UPDATE jobs SET lease_expires_at = ? WHERE id = ? AND state = 'processing'"
                " AND claim_token = ?",
                (now + lease_ms, claim.job.id, claim.token),
            )
            return cur.rowcount == 1

    def _finish(self, claim: Claim, result: ExecResult, now: int, state: JobState,
                retry_at: int | None, outcome: str) -> Job | None:
        error = None if state is JobState.COMPLETED else result.error
        with self._write() as conn:
            row = conn.execute(
                "UPDATE jobs SET state = ?, run_at = COALESCE(?, run_at), last_error = ?,"
                " exit_code = ?, finished_at = ?, updated_at = ?, claim_token = NULL,"
                " lease_expires_at = NULL"
                " WHERE id = ? AND state = 'processing' AND claim_token = ? RETURNING *",
                (state.value, retry_at, error, result.exit_code, now, now, claim.job.id,
                 claim.token),
            ).fetchone()
            if row is None:
                return None
            conn.execute(
                "UPDATE attempts SET finished_at = ?, outcome = ?, exit_code = ?, signal = ?,"
                " error = ? WHERE claim_token = ?",
                (now, outcome, result.exit_code, result.signal, result.error, claim.token),
            )
            return _job(row)

    def complete(self, claim: Claim, result: ExecResult, now: int) -> Job | None:
        return self._finish(claim, result, now, JobState.COMPLETED, None, "completed")

    def fail(self, claim: Claim, result: ExecResult, now: int, retry_at: int | None
             ) -> Job | None:
        state = JobState.FAILED if retry_at is not None else JobState.DEAD
        return self._finish(claim, result, now, state, retry_at, "failed")

    def recover_expired(self, now: int, worker_id: str | None = None, *,
                        charge_attempt: bool = True) -> list[Job]:
        where = "state = 'processing' AND "
        params: list[Any]
        if worker_id is None:
            where += "lease_expires_at < ?"
            params = [now]
        else:
            where += "worker_id = ?"
            params = [worker_id]
        # A cheap read first: most sweeps find nothing and need no write lock.
        probe = self.conn.execute(f"SELECT 1 FROM jobs WHERE {where} LIMIT 1", params)
        if probe.fetchone() is None:
            return []
        recovered: list[Job] = []
        with self._write() as conn:
            stale = conn.execute(f"SELECT id, claim_token, worker_id FROM jobs WHERE {where}",
                                 params).fetchall()
            if charge_attempt:
                template, outcome = LOST_ATTEMPT_ERROR, "lost"
                change = ("state = CASE WHEN attempts > max_retries THEN 'dead' ELSE 'failed' END")
            else:
                template, outcome = INTERRUPTED_ATTEMPT_ERROR, "interrupted"
                change = ("attempts = attempts - 1,"
                          " state = CASE WHEN attempts <= 1 THEN 'pending' ELSE 'failed' END")
            for job_id, token, owner in stale:
                error = template.format(worker=owner)
                row = conn.execute(
                    f"UPDATE jobs SET {change}, run_at = ?, last_error = ?, exit_code = NULL,"
                    " finished_at = ?, updated_at = ?, claim_token = NULL, lease_expires_at = NULL"
                    " WHERE id = ? AND claim_token = ? RETURNING *",
                    (now, error, now, now, job_id, token),
                ).fetchone()
                conn.execute(
                    "UPDATE attempts SET finished_at = ?, outcome = ?, error = ?"
                    " WHERE claim_token = ?",
                    (now, outcome, error, token),
                )
                recovered.append(_job(row))
        return recovered

    def dlq_retry(self, job_id: str, now: int) -> Job:
        with self._write() as conn:
            row = conn.execute(
                "UPDATE jobs SET state = 'pending', attempts = 0, run_at = ?, updated_at = ?,"
                " started_at = NULL, finished_at = NULL, exit_code = NULL"
                " WHERE id = ? AND state = 'dead' RETURNING *",
                (now, now, job_id),
            ).fetchone()
            if row is not None:
                return _job(row)
            current = conn.execute("SELECT state FROM jobs WHERE id = ?", (job_id,)).fetchone()
        if current is None:
            raise JobNotFoundError(job_id)
        raise InvalidStateError(
            f"job {job_id!r} is {current[0]}, not dead; only jobs in the DLQ can be retried"
        )

    # ---------------------------------------------------------- settings
    def get_settings(self) -> dict[str, Any]:
        return {k: json.loads(v) for k, v in self.conn.execute("SELECT key, value FROM settings")}

    def set_setting(self, key: str, value: Any) -> None:
        with self._write() as conn:
            conn.execute(
                "INSERT INTO settings (key, value) VALUES (?, ?)"
                " ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                (key, json.dumps(value)),
            )

    # ---------------------------------------------------------- workers
    def register_worker(self, worker: WorkerInfo) -> None:
        with self._write() as conn:
            conn.execute(
                "INSERT OR REPLACE INTO workers (id, hostname, pid, started_at, heartbeat_at,"
                " current_job, job_pgid) VALUES (?, ?, ?, ?, ?, ?, ?)",
                (worker.id, worker.hostname, worker.pid, worker.started_at, worker.heartbeat_at,
                 worker.current_job, worker.job_pgid),
            )

    def worker_heartbeat(self, worker_id: str, now: int, current_job: str | None,
                         job_pgid: int | None) -> None:
        with self._write() as conn:
            conn.execute(
                "UPDATE workers SET heartbeat_at = ?, current_job = ?, job_pgid = ? WHERE id = ?",
                (now, current_job, job_pgid, worker_id),
            )

    def unregister_worker(self, worker_id: str) -> None:
        with self._write() as conn:
            conn.execute("DELETE FROM workers WHERE id = ?", (worker_id,))

    def list_workers(self) -> list[WorkerInfo]:
        rows = self.conn.execute("SELECT * FROM workers ORDER BY started_at, id").fetchall()
        return [WorkerInfo(**dict(r)) for r in rows]

    def prune_workers(self, heartbeat_before: int) -> int:
        if self.conn.execute("SELECT 1 FROM workers WHERE heartbeat_at < ? LIMIT 1",
                             (heartbeat_before,)).fetchone() is None:
            return 0
        with self._write() as conn:
            return conn.execute("DELETE FROM workers WHERE heartbeat_at < ?",
                                (heartbeat_before,)).rowcount
