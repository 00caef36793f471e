"""SQLite implementation of the storage seam.

Concurrency: WAL journal, one short ``BEGIN IMMEDIATE`` transaction per
write. ``BEGIN IMMEDIATE`` takes the database's single write lock before
reading, so a claim's ``UPDATE ... WHERE seq = (SELECT ...) RETURNING``
sees and changes the row while no other process can write: two workers can
never take the same job. Every other change is the core's, made as a
compare-and-set (``UPDATE ... WHERE id = ? AND <expected> RETURNING *``).
Waiting for the lock is bounded by the busy timeout.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import sqlite3
import time
from collections.abc import Iterable, Iterator, Sequence
from operator import attrgetter

from queuectl_core.errors import DuplicateJobError, StorageError, disk_full
from queuectl_core.models import (
    ATTEMPT_FIELDS,
    Attempt,
    Change,
    Claim,
    Job,
    JobState,
)
from queuectl_core.storage import Storage, new_token

from . import sql, writes
from .admin import SqliteAdmin
from .damage import damaged, is_damage, is_disk_full, write_marker
from .rows import (
    INSERT_ATTEMPT,
    INSERT_JOB,
    INSERT_NEW,
    attempt_from_row,
    is_new,
    job_from_row,
    job_row,
    new_job_row,
)
from .schedules import SqliteSchedules
from .schema import (
    COUNT_NEW,
    HAS_SCHEDULE_OBJECTS,
    SCHEMA_VERSION,
    connect,
    create_or_upgrade,
    create_view_objects,
    ensure_schedule_objects,
    has_view_objects,
    read_only_reason,
)
from .views import SqliteViews, new_counts

# typing is not imported at run time (the CLI's hot path).
TYPE_CHECKING = False
if TYPE_CHECKING:
    from pathlib import Path
    from types import TracebackType
    from typing import Any

    from queuectl_core.registry import PluginContext

    from .options import SqliteOptions

#: Database file, relative to QUEUECTL_HOME (the ``path`` option's default).
DEFAULT_PATH = "queue.db"

def open_store(options: SqliteOptions | None, context: PluginContext) -> SqliteStorage:
    """The backend's factory (``BackendSpec.factory``): the store in
    QUEUECTL_HOME, as the options say (None: the defaults)."""
    if options is None:  # no options in the YAML: defaults, without pydantic
        return SqliteStorage(os.path.join(context.home_dir, DEFAULT_PATH))
    return SqliteStorage(os.path.join(context.home_dir, options.path),
                         synchronous=options.synchronous,
                         busy_timeout_ms=options.busy_timeout_ms)


class _WriteTransaction:
    """``with store._write() as conn``: one write transaction, under the
    writers' lock (see SqliteStorage._write)."""

    __slots__ = ("lock", "store")

    def __init__(self, store: SqliteStorage) -> None:
        self.store = store
        self.lock = -1

    def __enter__(self) -> sqlite3.Connection:
        store = self.store
        self.lock = store._acquire_writer_lock()
        try:
            store.conn.execute("BEGIN IMMEDIATE")
        except sqlite3.OperationalError as exc:
            self._unlock()
            raise StorageError(f"SQLite database {store.path} is busy: {exc}") from None
        return store.conn

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        try:
            self.store.conn.execute("COMMIT" if kind is None else "ROLLBACK")
        except sqlite3.OperationalError as error:
            if not is_disk_full(error):
                raise
            exc = error
            with contextlib.suppress(sqlite3.Error):
                self.store.conn.execute("ROLLBACK")
        finally:
            self._unlock()
        if isinstance(exc, sqlite3.OperationalError) and is_disk_full(exc):
            # Rolled back: nothing changed. Workers wait and retry.
            raise disk_full(f"SQLite database {self.store.path}", exc) from None
        if isinstance(exc, sqlite3.DatabaseError) and is_damage(exc):
            raise damaged(self.store.path, exc) from None

    def _unlock(self) -> None:
        if self.lock >= 0:
            fcntl.flock(self.lock, fcntl.LOCK_UN)
            self.lock = -1


class SqliteStorage(SqliteSchedules, SqliteViews, SqliteAdmin, Storage):
    """A queue in one SQLite file."""

    def __init__(self, path: str | os.PathLike[str], *, synchronous: str = "full",
                 busy_timeout_ms: int = 30_000) -> None:
        self.path = path
        #: Writers queue on an flock of ``<db>-wlock`` (see _write); opened
        #: on first use, again in a forked child.
        self._lock_fd = -1
        self._lock_pid = 0
        self._busy_timeout_s = busy_timeout_ms / 1000
        try:
            os.makedirs(os.path.dirname(os.fspath(path)) or ".", mode=0o700, exist_ok=True)
            # Create the file private to the user before SQLite opens it;
            # SQLite gives its -wal and -shm files the same permissions.
            os.close(os.open(path, os.O_RDWR | os.O_CREAT, 0o600))
        except OSError as exc:
            raise StorageError(f"cannot open SQLite database {path}: {exc.strerror}") from None
        try:
            try:
                self.conn = connect(os.fspath(path), synchronous=synchronous,
                                    busy_timeout_ms=busy_timeout_ms)
            except RuntimeError as exc:
                raise StorageError(f"SQLite database {path}: {exc}") from None
            self.conn.row_factory = sqlite3.Row
            self._migrate()
        except sqlite3.DatabaseError as exc:
            readonly = read_only_reason(os.fspath(path), exc)
            if readonly is not None:
                raise StorageError(readonly) from None
            raise StorageError(
                f"SQLite database {path} cannot be used: {exc}. If the file is damaged, "
                "move it aside and restore a backup; queuectl never overwrites it."
            ) from None

    # ---------------------------------------------------------- plumbing
    def _migrate(self) -> None:
        """Create the schema in a new file, or upgrade an older one in place,
        in one transaction (a crash leaves the old version, whole). A file
        with no schema whose marker (``<db>-created``) says it held a queue
        was emptied or replaced: refused, never a new empty queue."""
        version = self.conn.execute("PRAGMA user_version").fetchone()[0]
        marker = f"{self.path}-created"
        if version == SCHEMA_VERSION:
            if not os.path.exists(marker):  # created by an older queuectl
                write_marker(marker, self.path)
            if self.conn.execute(HAS_SCHEDULE_OBJECTS).fetchone()[0] != 2:
                with self._write() as conn:
                    ensure_schedule_objects(conn)
            self._ensure_view_objects()
            return
        if version == 0 and os.path.exists(marker):
            raise StorageError(
                f"SQLite database {self.path} is empty, but {marker} shows that it held a "
                "queue: the file was emptied, replaced or removed. Restore it from a backup; "
                "queuectl will not start an empty queue over the old one (to start a new "
                "queue on purpose, remove the marker too)")
        if version > SCHEMA_VERSION:
            raise StorageError(
                f"SQLite database {self.path} has schema version {version}, newer than this "
                f"queuectl understands ({SCHEMA_VERSION}); upgrade queuectl"
            )
        with self._write() as conn:
            # Another process may have done it while we waited for the lock.
            version = conn.execute("PRAGMA user_version").fetchone()[0]
            if version < SCHEMA_VERSION:
                create_or_upgrade(conn, version)
            create_view_objects(conn)
        write_marker(marker, self.path)

    def _ensure_view_objects(self) -> None:
        """Create the maintained counts where missing; a store that cannot
        be written (read-only file) is read without them."""
        if not has_view_objects(self.conn):
            try:
                with self._write() as conn:
                    create_view_objects(conn)
            except (StorageError, sqlite3.OperationalError):
                self.counted = False

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

    def _write(self) -> _WriteTransaction:
        """One write transaction, holding the database's write lock from the
        start (BEGIN IMMEDIATE).

        Writers of this store first take an exclusive ``flock`` on
        ``<db>-wlock`` and hold it for the transaction, so they queue in the
        kernel and the next one starts the moment the lock is released.
        SQLite's busy handler instead sleeps 1, 2, 5, 10, ... ms between
        retries whether or not the lock was freed meanwhile, which made busy
        workers wait several times longer than the transactions took. The
        flock holder still takes SQLite's own lock (BEGIN IMMEDIATE), and
        writers that do not take the flock (other programs) are kept out by
        it, with the busy timeout as before. The wait for the flock is
        bounded by the busy timeout (a holder that is stopped, not dead,
        must not hang every other writer)."""
        return _WriteTransaction(self)

    def describe(self) -> str:
        return f"sqlite {self.path}"

    def local_paths(self) -> list[Path]:
        from pathlib import Path

        return [Path(self.path)]

    def close(self) -> None:
        self.conn.close()
        if self._lock_fd >= 0 and self._lock_pid == os.getpid():
            os.close(self._lock_fd)
        self._lock_fd = -1
        self._lock_pid = 0

    # ---------------------------------------------------------- jobs
    def insert(self, records: Sequence[tuple[Job, Sequence[Attempt]]],
               changes: Sequence[Change] = ()) -> None:
        ids = [job.id for job, _ in records]
        seen: set[str] = set()
        for job_id in ids:
            if job_id in seen:
                raise DuplicateJobError(job_id)
            seen.add(job_id)
        history = [(new_token(), *attrgetter(*ATTEMPT_FIELDS)(a))
                   for _, attempts in records for a in attempts]
        fresh = not history and all(is_new(job) for job, _ in records)
        if fresh:  # enqueue: only the columns a new job sets
            rows = [new_job_row(job) for job, _ in records]
        else:
            rows = [job_row(job) for job, _ in records]
        try:
            with self._write() as conn:
                writes.guard(conn, changes)
                conn.executemany(INSERT_NEW if fresh else INSERT_JOB, rows)
                if history:
                    conn.executemany(INSERT_ATTEMPT, history)
                writes.insert_edges(conn, [job for job, _ in records])
                if self.counted:
                    conn.executemany(COUNT_NEW, new_counts(job for job, _ in records))
        except sqlite3.IntegrityError:
            # Rolled back: what is stored now is what the batch met.
            keys = [job.unique_key for job, _ in records]
            taken = writes.unique_error(self.conn, keys) if any(keys) else None
            if taken is not None:
                raise taken from None
            raise DuplicateJobError(self._first_existing(ids)) from None

    def insert_new(self, jobs: Iterable[Job]) -> int:
        # One executemany over the stream, in one transaction: SQLite reads
        # a row, stores it and drops it, so memory stays flat. A duplicate id
        # fails on the row read last; an error raised by the stream rolls
        # everything back.
        last: list[str] = [""]
        count = 0
        counts: dict[tuple[str, str], int] = {}

        def rows() -> Iterator[list[Any]]:
            nonlocal count
            for job in jobs:
                last[0] = job.id
                count += 1
                key = (job.queue, job.state.value)
                counts[key] = counts.get(key, 0) + 1
                yield new_job_row(job)

        try:
            with self._write() as conn:
                conn.executemany(INSERT_NEW, rows())
                if self.counted:  # the maintained counts, in the same transaction
                    conn.executemany(COUNT_NEW, [(q, st, n) for (q, st), n in counts.items()])
        except sqlite3.IntegrityError:
            raise DuplicateJobError(last[0]) from None
        return count

    def _first_existing(self, ids: list[str]) -> str:
        for start in range(0, len(ids), 500):
            chunk = ids[start:start + 500]
            marks = ",".join("?" * len(chunk))
            row = self.conn.execute(
                f"SELECT id FROM jobs WHERE id IN ({marks}) LIMIT 1", chunk).fetchone()
            if row is not None:
                return str(row[0])
        return ids[0]

    def get(self, job_id: str) -> Job | None:
        row = self.conn.execute("SELECT * FROM jobs WHERE id = ?", (job_id,)).fetchone()
        return None if row is None else job_from_row(row)

    def attempts(self, job_id: str) -> list[Attempt]:
        rows = self.conn.execute(
            "SELECT * FROM attempts WHERE job_id = ? ORDER BY rowid", (job_id,)).fetchall()
        return [attempt_from_row(r) for r in rows]

    def list_jobs(self, state: JobState | None = None, limit: int | None = None, *,
                  queue: str | None = None) -> list[Job]:
        return self._list(state, limit, queue, "seq")

    def list_newest(self, state: JobState | None = None, limit: int | None = None, *,
                    queue: str | None = None) -> list[Job]:
        # The primary key, or jobs_state (state, seq), read backwards.
        return self._list(state, limit, queue, "seq DESC")

    def _list(self, state: JobState | None, limit: int | None, queue: str | None,
              order: str) -> list[Job]:
        terms: list[str] = []
        params: list[Any] = []
        if state is not None:
            terms.append("state = ?")
            params.append(state.value)
        if queue is not None:
            terms.append("queue = ?")
            params.append(queue)
        query = "SELECT * FROM jobs"
        if terms:
            query += " WHERE " + " AND ".join(terms)
        query += " ORDER BY " + order
        if limit is not None:
            query += " LIMIT ?"
            params.append(limit)
        return [job_from_row(r) for r in self.conn.execute(query, params)]

    def _open_queues(self, conn: sqlite3.Connection, queues: Sequence[str] | None
                     ) -> list[str]:
        if queues is None:
            return [r[0] for r in conn.execute(sql.OPEN_QUEUES_SQL)]
        return [r[0] for r in conn.execute(sql.OPEN_LISTED_QUEUES_SQL,
                                           {"queues": json.dumps(list(queues))})]

    def due(self, now: int, queues: Sequence[str] | None = None, limit: int = 1) -> list[Job]:
        names = self._open_queues(self.conn, queues)
        if not names or limit <= 0:
            return []
        rows: list[sqlite3.Row] = []
        for start in range(0, len(names), sql.MAX_BATCH_QUEUES):
            chunk = names[start:start + sql.MAX_BATCH_QUEUES]
            params: dict[str, Any] = {"now": now, "limit": limit}
            params.update((f"q{i}", name) for i, name in enumerate(chunk))
            rows.extend(self.conn.execute(sql.due_batch_sql(len(chunk)), params))
        rows.sort(key=lambda r: (-r["priority"], r["run_at"], r["seq"]))
        return [job_from_row(r) for r in rows[:limit]]

    def next_run_at(self, queues: Sequence[str] | None = None) -> int | None:
        if queues is None:
            row = self.conn.execute(sql.NEXT_RUN_AT_SQL).fetchone()
        else:
            row = self.conn.execute(sql.NEXT_RUN_AT_LISTED_SQL,
                                    {"queues": json.dumps(list(queues))}).fetchone()
        return None if row[0] is None else int(row[0])

    def due_count(self, now: int, queues: Sequence[str] | None = None, limit: int = 1) -> int:
        params: dict[str, Any] = {"now": now, "limit": limit}
        if queues is None:
            query = sql.DUE_COUNT_SQL
        else:
            query = sql.DUE_COUNT_LISTED_SQL
            params["queues"] = json.dumps(list(queues))
        return int(self.conn.execute(query, params).fetchone()[0])

    def expired(self, now: int) -> list[Job]:
        return [job_from_row(r) for r in self.conn.execute(sql.EXPIRED_SQL, {"now": now})]

    def finished(self, states: Sequence[JobState], before: int | None = None,
                 limit: int | None = None) -> list[Job]:
        # Each state is one range of jobs_finished, already in age order:
        # at most ``limit`` rows read per state, however many are stored.
        query = sql.FINISHED_SQL if before is None else sql.FINISHED_BEFORE_SQL
        rows: list[tuple[int, int, Job]] = []
        for state in sorted({JobState(s) for s in states}):
            params = {"state": state.value, "before": before,
                      "limit": -1 if limit is None else limit}
            for row in self.conn.execute(query, params):
                job = job_from_row(row)
                done = job.finished_at if job.finished_at is not None else job.updated_at
                rows.append((done, row["seq"], job))
        rows.sort(key=lambda r: (r[0], r[1]))
        jobs = [job for _, _, job in rows]
        return jobs if limit is None else jobs[:limit]

    # ---------------------------------------------------------- changes
    def apply(self, changes: Sequence[Change], *, atomic: bool = False
              ) -> list[Job | None]:
        try:
            with self._write() as conn:
                return writes.apply_changes(conn, changes, atomic=atomic)
        except writes.Undo:
            return [None] * len(changes)

    def dependents(self, job_id: str) -> list[Job]:
        return [job_from_row(r) for r in self.conn.execute(writes.DEPENDENTS_SQL, (job_id,))]

    # ---------------------------------------------------------- claims
    def claim(self, worker_id: str, now: int, lease_ms: int,
              queues: Sequence[str] | None = None, limit: int = 1) -> list[Claim]:
        with self._write() as conn:
            return self._claim_in(conn, worker_id, now, lease_ms, queues, limit)

    def apply_and_claim(self, changes: Sequence[Change], *, worker_id: str, now: int,
                        lease_ms: int, queues: Sequence[str] | None = None, limit: int = 0,
                        atomic: bool = False) -> tuple[list[Job | None], list[Claim]]:
        """Both in one transaction: one commit (one fsync) and one write
        lock for a batch of results and claims."""
        try:
            with self._write() as conn:
                done = writes.apply_changes(conn, changes, atomic=atomic)
                if limit <= 0:
                    return done, []
                return done, self._claim_in(conn, worker_id, now, lease_ms, queues, limit)
        except writes.Undo:
            return [None] * len(changes), []

    def _claim_in(self, conn: sqlite3.Connection, worker_id: str, now: int, lease_ms: int,
                  queues: Sequence[str] | None, limit: int) -> list[Claim]:
        """Up to ``limit`` claims in claim order, inside the caller's write
        transaction: with up to MAX_BATCH_QUEUES open queues (one is the
        usual case) in two statements whatever their number, else one claim
        at a time."""
        claims: list[Claim] = []
        if limit > 1:
            names = self._open_queues(conn, queues)
            if not names:
                return []
            if len(names) <= sql.MAX_BATCH_QUEUES:
                claims = self._claim_batch_in(conn, worker_id, now, lease_ms, names, limit)
                queues = names  # the batch takes no keyed jobs: those one at a time
        while len(claims) < limit:
            following = self._claim_one_in(conn, worker_id, now, lease_ms, queues)
            if following is None:
                break
            claims.append(following)
        return claims

    @staticmethod
    def _claim_one_in(conn: sqlite3.Connection, worker_id: str, now: int, lease_ms: int,
                      queues: Sequence[str] | None) -> Claim | None:
        token = new_token()
        lease = now + lease_ms
        params: dict[str, Any] = {"worker": worker_id, "token": token, "lease": lease,
                                  "now": now}
        if queues is None:
            query = sql.CLAIM_SQL
        else:
            query = sql.CLAIM_LISTED_SQL
            params["queues"] = json.dumps(list(queues))
        row = conn.execute(query, params).fetchone()
        if row is None:
            return None
        job = job_from_row(row)
        number = conn.execute(sql.OPEN_ATTEMPT_SQL, {"job": job.id, "token": token,
                                                     "worker": worker_id, "now": now},
                              ).fetchone()[0]
        return Claim(job=job, token=token, worker_id=worker_id, attempt=number,
                     lease_expires_at=lease)

    @staticmethod
    def _claim_batch_in(conn: sqlite3.Connection, worker_id: str, now: int, lease_ms: int,
                        queues: list[str], limit: int) -> list[Claim]:
        lease = now + lease_ms
        params: dict[str, Any] = {"worker": worker_id, "prefix": new_token(),
                                  "lease": lease, "now": now, "limit": limit}
        params.update((f"q{i}", name) for i, name in enumerate(queues))
        rows = conn.execute(sql.claim_batch_sql(len(queues)), params).fetchall()
        if not rows:
            return []
        rows.sort(key=lambda r: (-r["priority"], r["run_at"], r["seq"]))
        numbers = dict(conn.execute(sql.OPEN_ATTEMPTS_SQL, {
            "worker": worker_id, "now": now,
            "seqs": json.dumps([r["seq"] for r in rows])}).fetchall())
        return [Claim(job=(job := job_from_row(row)), token=row["claim_token"], worker_id=worker_id,
                      attempt=numbers[job.id], lease_expires_at=lease) for row in rows]
