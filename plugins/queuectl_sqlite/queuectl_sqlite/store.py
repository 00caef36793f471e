"""SQLite implementation of the storage seam.

Concurrency: WAL journal, one short ``BEGIN IMMEDIATE`` transaction per
state change. ``BEGIN IMMEDIATE`` takes the database's single write lock
before reading, so the claim's ``UPDATE ... WHERE seq = (SELECT ...)
RETURNING`` sees and changes the row while no other process can write:
two workers can never take the same job. Waiting for the lock is bounded by
the busy timeout.

Claim cost: the claim looks at claimable jobs only (partial indexes), one
queue at a time: for each queue it may take from (those asked for, or every
queue that has claimable jobs, found by a loose index scan), less the paused
ones, it seeks the best due job in that queue, then takes the best of those
few. Finished jobs, and waiting jobs in paused or other queues, therefore
cost nothing; the cost grows only with the number of queues that have
waiting jobs (one index seek or two each).
"""

from __future__ import annotations

import fcntl
import json
import os
import sqlite3
import time
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
    CLAIMABLE_STATES,
    FINISHED_STATES,
    Attempt,
    Claim,
    ExecResult,
    Job,
    JobState,
    NewJob,
    Outcome,
    WorkerInfo,
)
from queuectl_core.storage import (
    CANCELLED_ERROR,
    INTERRUPTED_ATTEMPT_ERROR,
    LOST_ATTEMPT_ERROR,
    Storage,
)

from .fast import INSERT_JOB_SQL, SCHEMA_VERSION, connect, job_row
from .fast import json_text as _to_json

_CLAIMABLE = "state IN ('pending', 'failed')"
_FINISHED = "state IN ('completed', 'dead', 'cancelled')"
#: When a finished job finished, for ``purge`` (imported jobs may lack
#: ``finished_at``). Queries must spell it exactly so to use jobs_finished.
_DONE_AT = "coalesce(finished_at, updated_at)"

#: Indexes (and the paused queues) of schema version 2: a new store and the
#: 1 -> 2 upgrade both run these. Partial indexes hold only the rows their
#: queries can want, so finished jobs piling up slow neither claims,
#: ``next_run_at`` nor a retention purge. Queries name them with INDEXED BY:
#: without statistics the planner could pick jobs_state and sort every
#: claimable job on each claim.
_V2_OBJECTS = f"""
CREATE INDEX IF NOT EXISTS jobs_ready ON jobs (queue, priority DESC, run_at, seq)
    WHERE {_CLAIMABLE};
CREATE INDEX IF NOT EXISTS jobs_due ON jobs (queue, run_at) WHERE {_CLAIMABLE};
CREATE INDEX IF NOT EXISTS jobs_leases ON jobs (lease_expires_at) WHERE state = 'processing';
CREATE INDEX IF NOT EXISTS jobs_state ON jobs (state, seq);
CREATE INDEX IF NOT EXISTS jobs_finished ON jobs (state, {_DONE_AT}, seq) WHERE {_FINISHED};
CREATE INDEX IF NOT EXISTS attempts_job ON attempts (job_id, rowid);
CREATE TABLE IF NOT EXISTS paused_queues (queue TEXT PRIMARY KEY) WITHOUT ROWID;
"""

#: A new store. The columns added in version 2 come last, in the order the
#: upgrade from version 1 adds them, so both give the same tables.
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
    exit_code        INTEGER,
    queue            TEXT NOT NULL DEFAULT 'default',
    timeout          REAL,
    cwd              TEXT,
    env              TEXT,
    retry            TEXT,
    cancel_requested_at INTEGER
);
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
    error        TEXT,
    stdout_tail  TEXT,
    stderr_tail  TEXT
);
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
""" + _V2_OBJECTS

#: In-place upgrades, by the version they start from; each runs inside the
#: opening transaction, with the version bump. ``ALTER TABLE ... ADD COLUMN``
#: rewrites no rows; only the new and rebuilt indexes read the table.
_UPGRADES: dict[int, str] = {
    1: """
ALTER TABLE jobs ADD COLUMN queue TEXT NOT NULL DEFAULT 'default';
ALTER TABLE jobs ADD COLUMN timeout REAL;
ALTER TABLE jobs ADD COLUMN cwd TEXT;
ALTER TABLE jobs ADD COLUMN env TEXT;
ALTER TABLE jobs ADD COLUMN retry TEXT;
ALTER TABLE jobs ADD COLUMN cancel_requested_at INTEGER;
ALTER TABLE attempts ADD COLUMN stdout_tail TEXT;
ALTER TABLE attempts ADD COLUMN stderr_tail TEXT;
DROP INDEX IF EXISTS jobs_ready;
DROP INDEX IF EXISTS jobs_due;
""" + _V2_OBJECTS,
}

# ------------------------------------------------------------------ claim SQL
#
# The queues a claim (or next_run_at) may take from, as the CTE ``open_q``:
# the queues named in the JSON array parameter :queues, or every queue with
# claimable jobs (a loose index scan over jobs_due: one seek per queue), in
# both cases less the paused ones.

_ANY_QUEUE_CTE = f"""WITH RECURSIVE
  seen(name) AS (
    SELECT (SELECT queue FROM jobs INDEXED BY jobs_due WHERE {_CLAIMABLE}
            ORDER BY queue LIMIT 1)
    UNION ALL
    SELECT (SELECT queue FROM jobs INDEXED BY jobs_due WHERE {_CLAIMABLE} AND queue > seen.name
            ORDER BY queue LIMIT 1)
    FROM seen WHERE seen.name IS NOT NULL
  ),
  open_q(name) AS (
    SELECT name FROM seen
    WHERE name IS NOT NULL AND name NOT IN (SELECT queue FROM paused_queues)
  )
"""

_LISTED_QUEUE_CTE = """WITH
  open_q(name) AS (
    SELECT DISTINCT value FROM json_each(:queues)
    WHERE value NOT IN (SELECT queue FROM paused_queues)
  )
"""

#: The best due job (parameter :now) of each open queue, then the best of
#: those, in claim order.
_PICK = f"""SELECT seq FROM jobs WHERE seq IN (
    SELECT (SELECT seq FROM jobs INDEXED BY jobs_ready
            WHERE {_CLAIMABLE} AND queue = open_q.name AND run_at <= :now
            ORDER BY priority DESC, run_at, seq LIMIT 1)
    FROM open_q)
  ORDER BY priority DESC, run_at, seq LIMIT 1"""

#: The next due job, in claim order, from any queue that is not paused
#: (parameter :now) or only from those in :queues (a JSON array).
NEXT_DUE_SQL = _ANY_QUEUE_CTE + _PICK
NEXT_DUE_LISTED_SQL = _LISTED_QUEUE_CTE + _PICK

_EARLIEST = f"""SELECT min((SELECT run_at FROM jobs INDEXED BY jobs_due
                    WHERE {_CLAIMABLE} AND queue = open_q.name ORDER BY run_at LIMIT 1))
  FROM open_q"""
NEXT_RUN_AT_SQL = _ANY_QUEUE_CTE + _EARLIEST
NEXT_RUN_AT_LISTED_SQL = _LISTED_QUEUE_CTE + _EARLIEST

#: How many jobs are due now (:now) in the open queues, up to :limit.
_DUE = f"""SELECT count(*) FROM (SELECT 1 FROM jobs INDEXED BY jobs_due
    WHERE {_CLAIMABLE} AND queue IN (SELECT name FROM open_q) AND run_at <= :now
    LIMIT :limit)"""
DUE_COUNT_SQL = _ANY_QUEUE_CTE + _DUE
DUE_COUNT_LISTED_SQL = _LISTED_QUEUE_CTE + _DUE

_CLAIM_SET = (
    "UPDATE jobs SET state = 'processing', attempts = attempts + 1,"
    " worker_id = :worker, claim_token = :token, lease_expires_at = :lease,"
    " started_at = :now, finished_at = NULL, updated_at = :now"
)
#: The claim: one statement, picking and taking the job.
CLAIM_SQL = f"{_CLAIM_SET} WHERE seq = ({NEXT_DUE_SQL}) RETURNING *"
CLAIM_LISTED_SQL = f"{_CLAIM_SET} WHERE seq = ({NEXT_DUE_LISTED_SQL}) RETURNING *"

#: The open queues (see above): those of :queues, or every queue with
#: claimable jobs, less the paused ones.
OPEN_QUEUES_SQL = _ANY_QUEUE_CTE + "SELECT name FROM open_q"
OPEN_LISTED_QUEUES_SQL = _LISTED_QUEUE_CTE + "SELECT name FROM open_q"

#: Several claims at once, in one statement: the jobs that ``{pick}``
#: selects, each with the token :prefix.<seq>. RETURNING gives no order:
#: the caller sorts.
_CLAIM_PICKED_SQL = (
    "UPDATE jobs SET state = 'processing', attempts = attempts + 1,"
    " worker_id = :worker, claim_token = :prefix || '.' || seq,"
    " lease_expires_at = :lease, started_at = :now, finished_at = NULL, updated_at = :now"
    " WHERE seq IN ({pick}) RETURNING *"
)


def _best_due(queue: str, columns: str = "seq") -> str:
    """The best :limit due jobs of the queue named by the parameter
    ``queue``, in claim order: a seek in ``jobs_ready``, read in index order."""
    return (f"SELECT {columns} FROM jobs INDEXED BY jobs_ready WHERE {_CLAIMABLE}"
            f" AND queue = {queue} AND run_at <= :now ORDER BY priority DESC, run_at, seq"
            " LIMIT :limit")


#: Most open queues a batch claim takes from in one statement; with more,
#: it claims one job at a time.
MAX_BATCH_QUEUES = 8
_claim_batch_sqls: dict[int, str] = {}


def claim_batch_sql(queues: int) -> str:
    """Several claims at once from ``queues`` open queues, named by the
    parameters :q0, :q1, ...: the best :limit due jobs of each, then the
    best :limit of those, which are the jobs that many single claims would
    take in turn. With one queue, its best :limit in index order, unsorted."""
    sql = _claim_batch_sqls.get(queues)
    if sql is None:
        if queues == 1:
            pick = _best_due(":q0")
        else:
            best = " UNION ALL ".join(
                f"SELECT * FROM ({_best_due(f':q{i}', 'seq, priority, run_at')})"
                for i in range(queues))
            pick = f"SELECT seq FROM ({best}) ORDER BY priority DESC, run_at, seq LIMIT :limit"
        sql = _claim_batch_sqls[queues] = _CLAIM_PICKED_SQL.format(pick=pick)
    return sql


#: ... and their attempts (the jobs' seqs in the JSON array :seqs).
_OPEN_ATTEMPTS_SQL = (
    "INSERT INTO attempts (job_id, number, claim_token, worker_id, started_at, outcome)"
    " SELECT id, 1 + (SELECT count(*) FROM attempts AS a WHERE a.job_id = j.id),"
    " claim_token, :worker, :now, 'running'"
    " FROM jobs AS j WHERE seq IN (SELECT value FROM json_each(:seqs))"
    " RETURNING job_id, number"
)

#: The attempt a claim opens, numbered after the job's whole history.
_OPEN_ATTEMPT_SQL = (
    "INSERT INTO attempts (job_id, number, claim_token, worker_id, started_at, outcome)"
    " VALUES (:job, 1 + (SELECT count(*) FROM attempts WHERE job_id = :job), :token,"
    " :worker, :now, 'running') RETURNING number"
)

#: Finished jobs in one state (:state), oldest first, for purge; with
#: :before (epoch ms) only those finished earlier. -1 as :limit: no limit.
PURGE_OLDEST_SQL = (
    f"SELECT seq, id, {_DONE_AT} AS done FROM jobs INDEXED BY jobs_finished"
    f" WHERE {_FINISHED} AND state = :state AND {_DONE_AT} < :before"
    f" ORDER BY {_DONE_AT}, seq LIMIT :limit"
)
_PURGE_ALL_SQL = (
    f"SELECT seq, id, {_DONE_AT} AS done FROM jobs INDEXED BY jobs_finished"
    f" WHERE {_FINISHED} AND state = :state ORDER BY {_DONE_AT}, seq LIMIT :limit"
)
_PURGE_IDS_SQL = (
    f"SELECT seq, id, {_DONE_AT} AS done, state FROM jobs"
    " WHERE id IN (SELECT value FROM json_each(:ids))"
)

_JOB_FIELDS = Job.field_names()
_ATTEMPT_FIELDS = Attempt.field_names()
_JSON_FIELDS = ("env", "retry")


def _job(row: sqlite3.Row) -> Job:
    data = {k: row[k] for k in _JOB_FIELDS}
    for key in _JSON_FIELDS:
        if data[key] is not None:
            data[key] = json.loads(data[key])
    if data["timeout"] is not None:
        # UPDATE ... RETURNING gives a whole REAL back as an integer.
        data["timeout"] = float(data["timeout"])
    return Job(**data)


def _attempt(row: sqlite3.Row) -> Attempt:
    return Attempt(**{k: row[k] for k in _ATTEMPT_FIELDS})


def _run_script(conn: sqlite3.Connection, script: str) -> None:
    """Run ``;``-separated statements one by one (``executescript`` would
    commit the open transaction first)."""
    for statement in script.split(";"):
        if statement.strip():
            conn.execute(statement)


class SqliteStorage(Storage):
    """A queue in one SQLite file."""

    def __init__(self, path: Path, *, synchronous: str = "full",
                 busy_timeout_ms: int = 30_000) -> None:
        self.path = path
        #: Writers queue on an flock of ``<db>-wlock`` (see _write); opened
        #: on first use, again in a forked child.
        self._lock_fd = -1
        self._lock_pid = 0
        self._busy_timeout_s = busy_timeout_ms / 1000
        try:
            path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            # Create the file private to the user before SQLite opens it;
            # SQLite gives its -wal and -shm files the same permissions.
            os.close(os.open(path, os.O_RDWR | os.O_CREAT, 0o600))
        except OSError as exc:
            raise StorageError(f"cannot open SQLite database {path}: {exc.strerror}") from None
        try:
            try:
                self.conn = connect(path, synchronous=synchronous,
                                    busy_timeout_ms=busy_timeout_ms)
            except RuntimeError as exc:
                raise StorageError(f"SQLite database {path}: {exc}") from None
            self.conn.row_factory = sqlite3.Row
            self._migrate()
        except sqlite3.DatabaseError as exc:
            raise StorageError(
                f"SQLite database {path} cannot be used: {exc}. If the file is damaged, "
                "move it aside and restore a backup; queuectl never overwrites it."
            ) from None

    # ---------------------------------------------------------- plumbing
    def _migrate(self) -> None:
        """Create the schema in a new file, or upgrade an older one in place,
        in one transaction (a crash leaves the old version, whole)."""
        version = self.conn.execute("PRAGMA user_version").fetchone()[0]
        if version == SCHEMA_VERSION:
            return
        if version > SCHEMA_VERSION:
            raise StorageError(
                f"SQLite database {self.path} has schema version {version}, newer than this "
                f"queuectl understands ({SCHEMA_VERSION}); upgrade queuectl"
            )
        with self._write() as conn:
            # Another process may have done it while we waited for the lock.
            version = conn.execute("PRAGMA user_version").fetchone()[0]
            if version >= SCHEMA_VERSION:
                return
            if version == 0:
                _run_script(conn, _SCHEMA)
            else:
                for step in range(version, SCHEMA_VERSION):
                    _run_script(conn, _UPGRADES[step])
            conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")

    def _writer_lock(self) -> int:
        """The descriptor of the writers' lock file, or -1 if it cannot be
        opened (then writers wait in SQLite's busy handler alone)."""
        if self._lock_pid != os.getpid():  # first use, or a forked child
            self._lock_pid = os.getpid()
            try:
                self._lock_fd = os.open(f"{self.path}-wlock",
                                        os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
            except OSError:
                self._lock_fd = -1
        return self._lock_fd

    def _acquire_writer_lock(self) -> int:
        """Take the writers' flock (see _write); its descriptor, or -1 when
        going on without it."""
        lock = self._writer_lock()
        if lock < 0:
            return -1
        deadline: float | None = None
        while True:
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return lock
            except BlockingIOError:
                now = time.monotonic()
                if deadline is None:
                    deadline = now + self._busy_timeout_s
                elif now >= deadline:
                    return -1
                # Short and constant, unlike SQLite's busy handler (1, 2, 5,
                # 10, ... ms): transactions here take about a millisecond.
                time.sleep(0.0005)
            except OSError:
                return -1

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        """One write transaction, holding the database's write lock from the
        start (BEGIN IMMEDIATE).

        Writers of this store first take an exclusive ``flock`` on
        ``<db>-wlock`` and hold it for the transaction, so they queue in the
        kernel and the next one starts the moment the lock is released.
        SQLite's busy handler instead sleeps 1, 2, 5, 10, ... ms between
        retries whether or not the lock was freed meanwhile, which made busy
        workers wait several times longer than the transactions took. The
        flock holder still takes SQLite's own lock (BEGIN IMMEDIATE), and
        writers that do not take the flock (other programs, the CLI's fast
        path) are kept out by it, with the busy timeout as before. A holder
        holds the flock for one transaction; the kernel drops it if the
        process dies. The wait for the flock is bounded by the busy timeout
        (a holder that is stopped, not dead, must not hang every other
        writer): after it, the writer goes on to SQLite's lock, whose busy
        timeout then reports the store as busy."""
        lock = self._acquire_writer_lock()
        try:
            with self._transaction() as conn:
                yield conn
        finally:
            if lock >= 0:
                fcntl.flock(lock, fcntl.LOCK_UN)

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
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
        if self._lock_fd >= 0 and self._lock_pid == os.getpid():
            os.close(self._lock_fd)
        self._lock_fd = -1
        self._lock_pid = 0

    # ---------------------------------------------------------- jobs
    def enqueue(self, jobs: Sequence[NewJob]) -> None:
        seen: set[str] = set()
        for job in jobs:
            if job.id in seen:
                raise DuplicateJobError(job.id)
            seen.add(job.id)
        # The same row as the CLI's fast path writes (fast.job_row).
        rows = [job_row({"id": j.id, "command": j.command, "max_retries": j.max_retries,
                         "priority": j.priority, "run_at": j.run_at,
                         "created_at": j.created_at, "queue": j.queue, "timeout": j.timeout,
                         "cwd": j.cwd, "env": j.env, "retry": j.retry})
                for j in jobs]
        try:
            with self._write() as conn:
                conn.executemany(INSERT_JOB_SQL, rows)
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
                    for key in _JSON_FIELDS:
                        data[key] = _to_json(data[key])
                    conn.execute(f"INSERT INTO jobs ({columns}) VALUES ({marks})",
                                 [data[k] for k in _JOB_FIELDS])
                    conn.executemany(
                        "INSERT INTO attempts (job_id, number, claim_token, worker_id,"
                        " started_at, finished_at, outcome, exit_code, signal, error,"
                        " stdout_tail, stderr_tail) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                        [(a.job_id, a.number, uuid.uuid4().hex, a.worker_id, a.started_at,
                          a.finished_at, a.outcome, a.exit_code, a.signal, a.error,
                          a.stdout_tail, a.stderr_tail)
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

    def list_jobs(self, state: JobState | None = None, limit: int | None = None, *,
                  queue: str | None = None) -> list[Job]:
        terms: list[str] = []
        params: list[Any] = []
        if state is not None:
            terms.append("state = ?")
            params.append(state.value)
        if queue is not None:
            terms.append("queue = ?")
            params.append(queue)
        sql = "SELECT * FROM jobs"
        if terms:
            sql += " WHERE " + " AND ".join(terms)
        sql += " ORDER BY seq"
        if limit is not None:
            sql += " LIMIT ?"
            params.append(limit)
        return [_job(r) for r in self.conn.execute(sql, params)]

    def counts(self, queue: str | None = None) -> dict[JobState, int]:
        counts = dict.fromkeys(JobState, 0)
        if queue is None:
            rows = self.conn.execute("SELECT state, count(*) FROM jobs GROUP BY state")
        else:
            rows = self.conn.execute(
                "SELECT state, count(*) FROM jobs WHERE queue = ? GROUP BY state", (queue,))
        for state, n in rows:
            counts[JobState(state)] = n
        return counts

    def next_run_at(self, queues: Sequence[str] | None = None) -> int | None:
        if queues is None:
            row = self.conn.execute(NEXT_RUN_AT_SQL).fetchone()
        else:
            row = self.conn.execute(NEXT_RUN_AT_LISTED_SQL,
                                    {"queues": json.dumps(list(queues))}).fetchone()
        return None if row[0] is None else int(row[0])

    # ---------------------------------------------------------- claims
    def claim(self, worker_id: str, now: int, lease_ms: int,
              queues: Sequence[str] | None = None) -> Claim | None:
        with self._write() as conn:
            return self._claim_in(conn, worker_id, now, lease_ms, queues)

    @staticmethod
    def _claim_in(conn: sqlite3.Connection, worker_id: str, now: int, lease_ms: int,
                  queues: Sequence[str] | None) -> Claim | None:
        """The claim, inside the caller's write transaction."""
        token = uuid.uuid4().hex
        lease = now + lease_ms
        params: dict[str, Any] = {"worker": worker_id, "token": token, "lease": lease,
                                  "now": now}
        if queues is None:
            sql = CLAIM_SQL
        else:
            sql = CLAIM_LISTED_SQL
            params["queues"] = json.dumps(list(queues))
        row = conn.execute(sql, params).fetchone()
        if row is None:
            return None
        job = _job(row)
        number = conn.execute(
            _OPEN_ATTEMPT_SQL,
            {"job": job.id, "token": token, "worker": worker_id, "now": now},
        ).fetchone()[0]
        return Claim(job=job, token=token, worker_id=worker_id, attempt=number,
                     lease_expires_at=lease)

    def finish_and_claim(self, claim: Claim, result: ExecResult, now: int, *, completed: bool,
                         retry_at: int | None, worker_id: str, lease_ms: int,
                         queues: Sequence[str] | None = None
                         ) -> tuple[Job | None, Claim | None]:
        """Both steps in one transaction: one commit (one fsync) and one
        write lock per job for a busy worker, instead of two."""
        with self._write() as conn:
            if completed:
                done = self._finish_in(conn, claim, result, now, JobState.COMPLETED, None,
                                       "completed")
            else:
                state = JobState.FAILED if retry_at is not None else JobState.DEAD
                done = self._finish_in(conn, claim, result, now, state, retry_at, "failed")
            return done, self._claim_in(conn, worker_id, now, lease_ms, queues)

    def record_and_claim(self, outcomes: Sequence[Outcome], now: int, *, worker_id: str,
                         lease_ms: int, queues: Sequence[str] | None = None, limit: int = 1
                         ) -> tuple[list[Job | None], list[Claim]]:
        """All of it in one transaction: one commit (one fsync) and one write
        lock for a batch of results and claims."""
        with self._write() as conn:
            dones = [self._finish_in(conn, o.claim, o.result, o.at(now), o.state,
                                     None if o.completed else o.retry_at, o.attempt_outcome,
                                     o.started_at)
                     for o in outcomes]
            return dones, self._claim_many_in(conn, worker_id, now, lease_ms, queues, limit)

    @classmethod
    def _claim_many_in(cls, conn: sqlite3.Connection, worker_id: str, now: int,
                       lease_ms: int, queues: Sequence[str] | None, limit: int
                       ) -> list[Claim]:
        """Up to ``limit`` claims in claim order, inside the caller's write
        transaction: with up to MAX_BATCH_QUEUES open queues (one is the
        usual case) in two statements whatever their number, else one
        claim at a time."""
        claims: list[Claim] = []
        if limit > 1:
            if queues is None:
                names = conn.execute(OPEN_QUEUES_SQL).fetchall()
            else:
                names = conn.execute(OPEN_LISTED_QUEUES_SQL,
                                     {"queues": json.dumps(list(queues))}).fetchall()
            if not names:
                return claims
            if len(names) <= MAX_BATCH_QUEUES:
                return cls._claim_batch_in(conn, worker_id, now, lease_ms,
                                           [n[0] for n in names], limit)
        while len(claims) < limit:
            following = cls._claim_in(conn, worker_id, now, lease_ms, queues)
            if following is None:
                break
            claims.append(following)
        return claims

    @staticmethod
    def _claim_batch_in(conn: sqlite3.Connection, worker_id: str, now: int, lease_ms: int,
                        queues: list[str], limit: int) -> list[Claim]:
        lease = now + lease_ms
        params: dict[str, Any] = {"worker": worker_id, "prefix": uuid.uuid4().hex,
                                  "lease": lease, "now": now, "limit": limit}
        params.update((f"q{i}", name) for i, name in enumerate(queues))
        rows = conn.execute(claim_batch_sql(len(queues)), params).fetchall()
        if not rows:
            return []
        rows.sort(key=lambda r: (-r["priority"], r["run_at"], r["seq"]))
        numbers = dict(conn.execute(_OPEN_ATTEMPTS_SQL, {
            "worker": worker_id, "now": now,
            "seqs": json.dumps([r["seq"] for r in rows])}).fetchall())
        claims = []
        for row in rows:
            job = _job(row)
            claims.append(Claim(job=job, token=row["claim_token"], worker_id=worker_id,
                                attempt=numbers[job.id], lease_expires_at=lease))
        return claims

    def due_count(self, now: int, queues: Sequence[str] | None = None, limit: int = 1
                  ) -> int | None:
        params: dict[str, Any] = {"now": now, "limit": limit}
        if queues is None:
            sql = DUE_COUNT_SQL
        else:
            sql = DUE_COUNT_LISTED_SQL
            params["queues"] = json.dumps(list(queues))
        return int(self.conn.execute(sql, params).fetchone()[0])

    def release(self, claim: Claim, now: int) -> Job | None:
        with self._write() as conn:
            held = conn.execute(
                "SELECT attempts, cancel_requested_at FROM jobs"
                " WHERE id = ? AND state = 'processing' AND claim_token = ?",
                (claim.job.id, claim.token),
            ).fetchone()
            if held is None:
                return None
            conn.execute("DELETE FROM attempts WHERE claim_token = ?", (claim.token,))
            before = conn.execute(
                "SELECT worker_id, started_at, finished_at FROM attempts WHERE job_id = ?"
                " ORDER BY rowid DESC LIMIT 1", (claim.job.id,),
            ).fetchone()
            attempts = held[0] - 1
            worker, started, finished = before if before is not None else (None, None, None)
            if not attempts:
                started = finished = None
            state, error = ("pending" if not attempts else "failed"), None
            if held[1] is not None:
                state, finished, error = "cancelled", now, CANCELLED_ERROR
            row = conn.execute(
                "UPDATE jobs SET state = ?, attempts = ?, worker_id = ?, started_at = ?,"
                " finished_at = ?, last_error = COALESCE(?, last_error), updated_at = ?,"
                " claim_token = NULL, lease_expires_at = NULL WHERE id = ? RETURNING *",
                (state, attempts, worker, started, finished, error, now, claim.job.id),
            ).fetchone()
            return _job(row)

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
        with self._write() as conn:
            return self._finish_in(conn, claim, result, now, state, retry_at, outcome)

    @staticmethod
    def _finish_in(conn: sqlite3.Connection, claim: Claim, result: ExecResult, now: int,
                   state: JobState, retry_at: int | None, outcome: str,
                   started_at: int | None = None) -> Job | None:
        """Close a claimed attempt, inside the caller's write transaction
        (``started_at``: when its command started, if not at the claim)."""
        completed = state is JobState.COMPLETED
        error = None if completed else result.error
        # A failure after a cancel request ends the job as cancelled (no
        # retry, no DLQ); a success stays a success.
        cancelled = "0" if completed else "cancel_requested_at IS NOT NULL"
        row = conn.execute(
            f"UPDATE jobs SET state = CASE WHEN {cancelled} THEN 'cancelled' ELSE ? END,"
            f" run_at = CASE WHEN {cancelled} THEN run_at ELSE COALESCE(?, run_at) END,"
            " last_error = ?, exit_code = ?, finished_at = ?, updated_at = ?,"
            " started_at = COALESCE(?, started_at), claim_token = NULL, lease_expires_at = NULL"
            " WHERE id = ? AND state = 'processing' AND claim_token = ? RETURNING *",
            (state.value, retry_at, error, result.exit_code, now, now, started_at, claim.job.id,
             claim.token),
        ).fetchone()
        if row is None:
            return None
        job = _job(row)
        if not completed and job.state is JobState.CANCELLED:
            outcome = "cancelled"
        conn.execute(
            "UPDATE attempts SET finished_at = ?, outcome = ?, exit_code = ?, signal = ?,"
            " error = ?, stdout_tail = ?, stderr_tail = ?, started_at = COALESCE(?, started_at)"
            " WHERE claim_token = ?",
            (now, outcome, result.exit_code, result.signal, result.error,
             result.stdout_tail, result.stderr_tail, started_at, claim.token),
        )
        return job

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
            cancelled = "WHEN cancel_requested_at IS NOT NULL THEN 'cancelled'"
            if charge_attempt:
                template, outcome = LOST_ATTEMPT_ERROR, "lost"
                change = (f"state = CASE {cancelled} WHEN attempts > max_retries THEN 'dead'"
                          " ELSE 'failed' END")
            else:
                template, outcome = INTERRUPTED_ATTEMPT_ERROR, "interrupted"
                change = ("attempts = attempts - 1,"
                          f" state = CASE {cancelled} WHEN attempts <= 1 THEN 'pending'"
                          " ELSE 'failed' END")
            for job_id, token, owner in stale:
                error = template.format(worker=owner)
                row = conn.execute(
                    f"UPDATE jobs SET {change}, run_at = ?, last_error = ?, exit_code = NULL,"
                    " finished_at = ?, updated_at = ?, claim_token = NULL, lease_expires_at = NULL"
                    " WHERE id = ? AND claim_token = ? RETURNING *",
                    (now, error, now, now, job_id, token),
                ).fetchone()
                job = _job(row)
                conn.execute(
                    "UPDATE attempts SET finished_at = ?, outcome = ?, error = ?"
                    " WHERE claim_token = ?",
                    (now, "cancelled" if job.state is JobState.CANCELLED else outcome, error,
                     token),
                )
                recovered.append(job)
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

    def cancel(self, job_id: str, now: int) -> Job:
        with self._write() as conn:
            row = conn.execute("SELECT * FROM jobs WHERE id = ?", (job_id,)).fetchone()
            if row is None:
                raise JobNotFoundError(job_id)
            state = JobState(row["state"])
            if state in CLAIMABLE_STATES:
                row = conn.execute(
                    "UPDATE jobs SET state = 'cancelled', finished_at = ?, updated_at = ?,"
                    " last_error = ?, cancel_requested_at = ? WHERE seq = ? RETURNING *",
                    (now, now, CANCELLED_ERROR, now, row["seq"]),
                ).fetchone()
            elif state is JobState.PROCESSING:
                # The worker sees the request at its next heartbeat and stops
                # the command; asking again changes nothing.
                if row["cancel_requested_at"] is None:
                    row = conn.execute(
                        "UPDATE jobs SET cancel_requested_at = ?, updated_at = ? WHERE seq = ?"
                        " RETURNING *",
                        (now, now, row["seq"]),
                    ).fetchone()
            else:
                raise InvalidStateError(f"job {job_id!r} is {state.value} already")
            return _job(row)

    def purge(self, *, states: Sequence[JobState], finished_before: int | None = None,
              ids: Sequence[str] | None = None, limit: int | None = None) -> list[str]:
        wanted = {JobState(s) for s in states}
        if not wanted <= set(FINISHED_STATES):
            raise ValueError("only completed, dead and cancelled jobs can be purged")
        if not wanted or limit == 0 or (ids is not None and not ids):
            return []
        # A cheap read first: most retention sweeps find nothing to delete.
        if not self._purge_candidates(self.conn, wanted, finished_before, ids, 1):
            return []
        with self._write() as conn:
            found = self._purge_candidates(conn, wanted, finished_before, ids, limit)
            if found:
                seqs = json.dumps([seq for seq, _ in found])
                job_ids = [job_id for _, job_id in found]
                conn.execute("DELETE FROM attempts WHERE job_id IN"
                             " (SELECT value FROM json_each(?))", (json.dumps(job_ids),))
                conn.execute("DELETE FROM jobs WHERE seq IN (SELECT value FROM json_each(?))",
                             (seqs,))
        return [job_id for _, job_id in found]

    @staticmethod
    def _purge_candidates(conn: sqlite3.Connection, states: set[JobState],
                          finished_before: int | None, ids: Sequence[str] | None,
                          limit: int | None) -> list[tuple[int, str]]:
        """(seq, id) of the jobs :meth:`purge` deletes, oldest first."""
        rows: list[tuple[int, int, str]] = []  # (done, seq, id)
        if ids is not None:
            names = {s.value for s in states}
            for seq, job_id, done, state in conn.execute(
                    _PURGE_IDS_SQL, {"ids": json.dumps(list(ids))}):
                if state in names and (finished_before is None or done < finished_before):
                    rows.append((done, seq, job_id))
        else:
            # Each state is one range of jobs_finished, already in age order:
            # at most ``limit`` rows read per state, however many are stored.
            sql = _PURGE_ALL_SQL if finished_before is None else PURGE_OLDEST_SQL
            for state in sorted(states):
                params = {"state": state.value, "before": finished_before,
                          "limit": -1 if limit is None else limit}
                rows.extend((done, seq, job_id) for seq, job_id, done in conn.execute(sql, params))
        rows.sort()
        if limit is not None:
            rows = rows[:limit]
        return [(seq, job_id) for _, seq, job_id in rows]

    def set_queue_paused(self, queue: str, paused: bool) -> bool:
        with self._write() as conn:
            if paused:
                cur = conn.execute("INSERT OR IGNORE INTO paused_queues (queue) VALUES (?)",
                                   (queue,))
            else:
                cur = conn.execute("DELETE FROM paused_queues WHERE queue = ?", (queue,))
            return cur.rowcount == 1

    def paused_queues(self) -> list[str]:
        return sorted(r[0] for r in self.conn.execute("SELECT queue FROM paused_queues"))

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
