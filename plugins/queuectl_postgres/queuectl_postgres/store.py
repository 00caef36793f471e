"""PostgreSQL implementation of the storage seam.

The core decides every change of a job (``queuectl_core.transitions``); this
store keeps what it decided. Each change is one compare-and-set statement
(``UPDATE ... WHERE id = ... AND <expected fields> IS NOT DISTINCT FROM ...``,
with the attempt's change in the same statement), and the changes of one
call are one transaction.

What is PostgreSQL's own: a claim locks the next due job with
``FOR UPDATE SKIP LOCKED``, so concurrent claimers on any number of
machines each take a different row without waiting for one another, and
opens the attempt in the same statement (one claim or a batch);
``apply_and_claim`` records a busy worker's results and claims its next
jobs in one transaction. Keyed jobs (concurrency limits) are claimed apart,
one key at a time under the key's advisory lock (see ``sql``). Changes that
may make work due (new jobs, a job left pending or failed, a keyed job that
stops running, a resumed queue) ``pg_notify`` the queue's channel
in their transaction; :meth:`PostgresStorage.wakeup_fileno` gives idle
workers a socket that becomes readable on such news.

Connection errors (server down, restarting, backend terminated) drop the
connection and raise TransientStorageError; the next call reconnects and
checks the schema (``schema.migrate``). A connection is never used in a
process other than the one that opened it (see ``connection``).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any

import psycopg
from psycopg import errors as pg_errors
from psycopg.rows import DictRow

from queuectl_core.errors import ChangedMeanwhile, DuplicateJobError, StorageError
from queuectl_core.models import (
    CLAIMABLE_STATES,
    Attempt,
    Change,
    Claim,
    Job,
    JobState,
    WorkerInfo,
)
from queuectl_core.storage import LIMITS_SETTING, Storage, new_token

from .dsn import resolve_dsn
from .views import PostgresViews, jobs_where

if TYPE_CHECKING:
    from queuectl_core.registry import PluginContext

    from .options import PostgresOptions
from . import views
from .connection import (
    DEFAULT_CALL_TIMEOUT_S,
    Session,
    channel_for,
    connection_params,
    describe,
    guarded,
)
from .schedules import PostgresSchedules
from .schema import ensure_schedule_objects, migrate
from .sql import (
    ATTEMPTS_SQL,
    CLAIM_BATCH_SQLS,
    CLAIM_SQLS,
    DEPENDENTS_SQL,
    DUE_COUNT_SQLS,
    DUE_SQLS,
    EXPIRED_SQL,
    FIRST_EXISTING_SQL,
    GET_SQL,
    INSERT_ATTEMPT_SQL,
    INSERT_EDGES_SQL,
    INSERT_JOB_SQL,
    INSERT_ONE_JOB_SQL,
    JOB_COLUMNS,
    KEYED_CLAIM_SQLS,
    LIST_WORKERS_SQL,
    LOCK_KEY_SQL,
    NEXT_RUN_IN_QUEUES_SQL,
    NEXT_RUN_SQL,
    NOTIFY_SQL,
    PUT_WORKER_SQL,
    WORKER_FIELDS,
    attempt_from_row,
    attempt_row,
    finished_sql,
    job_from_row,
    job_row,
    queue_choice,
    quoted,
    runs,
)
from .writes import (
    UNIQUE_ROUNDS,
    Undo,
    batch_conflict,
    holder_of_changes,
    holder_of_jobs,
    is_unique_key,
)

# psycopg logs a warning when a pipeline ends in an error that we raise
# anyway (an executemany hitting a duplicate id). Without this handler, in a
# CLI process that configures no logging, Python's last-resort handler would
# print it to stderr before our one-line error. Where logging is configured
# (workers), the records still reach its handlers.
logging.getLogger("psycopg").addHandler(logging.NullHandler())

Cursor = psycopg.Cursor[DictRow]
#: At most this many rounds of a claim of keyed jobs (a round ends early
#: when a key fills up; the next looks past that key's jobs).
KEYED_ROUNDS = 4


#: A claim with its place in claim order (priority, run_at, seq).
Placed = tuple[tuple[int, int, int], Claim]


def _in_claim_order(placed: list[Placed]) -> list[Claim]:
    return [claim for _, claim in sorted(placed, key=lambda p: p[0])]


def open_store(options: PostgresOptions | None, context: PluginContext) -> PostgresStorage:
    """The backend's factory (``BackendSpec.factory``)."""
    if options is None:  # no options in the YAML: the defaults, without pydantic
        return PostgresStorage(resolve_dsn(None))
    return PostgresStorage(resolve_dsn(options.dsn), schema=options.schema_name,
                           connect_timeout_s=options.connect_timeout_s,
                           call_timeout_s=options.call_timeout_s)


#: New jobs, streamed by :meth:`PostgresStorage.insert_new`.
COPY_JOBS_SQL = f"COPY {{s}}.jobs ({JOB_COLUMNS}, attempt_records) FROM STDIN"


def _duplicate_id(exc: pg_errors.UniqueViolation) -> str:
    """The id a unique violation names (``Key (id)=(x) already exists.``)."""
    detail = exc.diag.message_detail or ""
    head, tail = "Key (id)=(", ") already exists."
    if detail.startswith(head) and detail.endswith(tail):
        return detail[len(head):-len(tail)]
    return "(an id of the file)"


class PostgresStorage(PostgresSchedules, PostgresViews, Storage):
    """A queue in one schema of a PostgreSQL database."""

    session: Session

    def __init__(self, dsn: str, *, schema: str = "queuectl", connect_timeout_s: int = 5,
                 call_timeout_s: float = DEFAULT_CALL_TIMEOUT_S,
                 application_name: str = "queuectl") -> None:
        params = connection_params(dsn, connect_timeout_s, application_name)
        self.schema = schema
        self.channel = channel_for(schema)
        self._description = describe(params, schema)
        self._sql: dict[str, str] = {}
        self.session = Session(params, schema, self._prepare, call_timeout_s)
        self.session.connect()

    def _prepare(self, conn: psycopg.Connection[DictRow]) -> None:
        migrate(conn, self.schema, self.session.where)
        ensure_schedule_objects(conn, self.schema)
        views.ensure(conn, self.schema)

    def _q(self, template: str) -> str:
        """A statement with ``{s}`` replaced by the quoted schema name."""
        sql = self._sql.get(template)
        if sql is None:
            sql = self._sql[template] = template.replace("{s}", quoted(self.schema))
        return sql

    def _notify(self, cur: Cursor) -> None:
        """Wake idle workers when the current transaction commits."""
        cur.execute(NOTIFY_SQL, (self.channel,))

    def describe(self) -> str:
        return self._description

    def close(self) -> None:
        self.session.close()

    def bound_calls(self, seconds: float) -> None:
        self.session.bound(seconds)

    # ---------------------------------------------------------- wake-ups
    def wakeup_fileno(self) -> int | None:
        return self.session.listener.fileno()

    def drain_wakeups(self) -> None:
        self.session.listener.drain()

    # ---------------------------------------------------------- jobs
    @guarded
    def insert(self, records: Sequence[tuple[Job, Sequence[Attempt]]],
               changes: Sequence[Change] = ()) -> None:
        ids = [job.id for job, _ in records]
        seen: set[str] = set()
        for job_id in ids:
            if job_id in seen:
                raise DuplicateJobError(job_id)
            seen.add(job_id)
        jobs = [job for job, _ in records]
        taken = batch_conflict(jobs)
        if taken is not None:
            raise taken
        if not records:
            return
        for _ in range(UNIQUE_ROUNDS):
            try:
                return self._insert(records, changes)
            except pg_errors.UniqueViolation as exc:
                if not is_unique_key(exc):
                    raise DuplicateJobError(self._first_existing(ids)) from None
            with self.session.cursor() as cur:  # (after the rollback)
                taken = holder_of_jobs(cur, self._q, jobs)
            if taken is not None:
                raise taken from None
        raise StorageError("a unique key kept changing hands; try again")

    def _insert(self, records: Sequence[tuple[Job, Sequence[Attempt]]],
                changes: Sequence[Change]) -> None:
        first = records[0][0]
        if len(records) == 1 and not records[0][1] and not changes and not first.after:
            with self.session.cursor() as cur:  # enqueue: one statement
                cur.execute(self._q(INSERT_ONE_JOB_SQL), [*job_row(first, 0), self.channel])
            return
        with self.session.transaction() as cur:
            # The parents first (their rows stay locked until the commit).
            if None in self._apply_in(cur, changes):
                raise ChangedMeanwhile("a job to run after changed meanwhile; nothing stored")
            cur.executemany(self._q(INSERT_JOB_SQL),
                            [job_row(job, len(history)) for job, history in records])
            attempts = [attempt_row(a, new_token()) for _, history in records for a in history]
            if attempts:
                cur.executemany(self._q(INSERT_ATTEMPT_SQL), attempts)
            edges = [(parent, job.id) for job, _ in records for parent in job.after or ()]
            if edges:
                cur.execute(self._q(INSERT_EDGES_SQL),
                            ([p for p, _ in edges], [c for _, c in edges]))
            if any(job.state in CLAIMABLE_STATES for job, _ in records):
                self._notify(cur)

    @guarded
    def insert_new(self, jobs: Iterable[Job]) -> int:
        # One transaction, one COPY: rows go to the server as they are made.
        count = 0
        try:
            with self.session.transaction() as cur:
                with cur.copy(self._q(COPY_JOBS_SQL)) as copy:
                    for job in jobs:
                        copy.write_row(job_row(job, 0))
                        count += 1
                if count:
                    self._notify(cur)
        except pg_errors.UniqueViolation as exc:
            raise DuplicateJobError(_duplicate_id(exc)) from None
        return count

    def _first_existing(self, ids: list[str]) -> str:
        """The first of ``ids`` (in their order) that is stored already."""
        with self.session.cursor() as cur:
            row = cur.execute(self._q(FIRST_EXISTING_SQL), (ids,)).fetchone()
        return ids[0] if row is None else str(row["id"])

    @guarded
    def get(self, job_id: str) -> Job | None:
        with self.session.cursor() as cur:
            row = cur.execute(self._q(GET_SQL), (job_id,)).fetchone()
        return None if row is None else job_from_row(row)

    @guarded
    def attempts(self, job_id: str) -> list[Attempt]:
        with self.session.cursor() as cur:
            rows = cur.execute(self._q(ATTEMPTS_SQL), (job_id,)).fetchall()
        return [attempt_from_row(r) for r in rows]

    @guarded
    def list_jobs(self, state: JobState | None = None, limit: int | None = None, *,
                  queue: str | None = None) -> list[Job]:
        return self._list(state, limit, queue, "seq")

    @guarded
    def list_newest(self, state: JobState | None = None, limit: int | None = None, *,
                    queue: str | None = None) -> list[Job]:
        # The primary key, or jobs_state (state, seq), read backwards.
        return self._list(state, limit, queue, "seq DESC")

    def _list(self, state: JobState | None, limit: int | None, queue: str | None,
              order: str) -> list[Job]:
        sql, params = jobs_where(state, queue)
        sql += f" ORDER BY {order} LIMIT %s"
        params.append(limit)  # NULL: no limit
        with self.session.cursor() as cur:
            rows = cur.execute(self._q(sql), params).fetchall()
        return [job_from_row(r) for r in rows]

    @guarded
    def expired(self, now: int) -> list[Job]:
        with self.session.cursor() as cur:
            rows = cur.execute(self._q(EXPIRED_SQL), {"now": now}).fetchall()
        return [job_from_row(r) for r in rows]

    @guarded
    def finished(self, states: Sequence[JobState], before: int | None = None,
                 limit: int | None = None) -> list[Job]:
        if not states or limit == 0:
            return []
        params = {"states": [JobState(s).value for s in states], "before": before,
                  "limit": limit}
        with self.session.cursor() as cur:
            rows = cur.execute(self._q(finished_sql(before is not None)), params).fetchall()
        return [job_from_row(r) for r in rows]

    # ---------------------------------------------------------- changes
    @guarded
    def apply(self, changes: Sequence[Change], *, atomic: bool = False
              ) -> list[Job | None]:
        # Renewals come here: a worker busy with one long command reads its
        # wake-up socket too (see claim).
        self.drain_wakeups()
        made = runs(changes, self.channel)
        if not made:
            return []
        for _ in range(UNIQUE_ROUNDS):
            try:
                return self._apply(made, atomic)
            except Undo:  # (rolled back)
                return [None] * len(changes)
            except pg_errors.UniqueViolation as exc:
                if not is_unique_key(exc):
                    raise
            with self.session.cursor() as cur:  # (after the rollback)
                taken = holder_of_changes(cur, self._q, changes)
            if taken is not None:
                raise taken from None
        raise StorageError("a unique key kept changing hands; try again")

    def _apply(self, made: list[tuple[str, dict[str, Any], int]], atomic: bool
               ) -> list[Job | None]:
        if len(made) == 1 and (made[0][2] == 1 or not atomic):
            # One statement: atomic on its own (each of its changes made or
            # not, in one step), one round trip.
            with self.session.cursor() as cur:
                return self._run(cur, *made[0])
        with self.session.transaction() as cur:
            done = [job for run in made for job in self._run(cur, *run)]
            if atomic and None in done:
                # Under read committed, a compare-and-set that met a row
                # changed meanwhile matched nothing: undo the others.
                raise Undo
            return done

    @guarded
    def dependents(self, job_id: str) -> list[Job]:
        with self.session.cursor() as cur:
            rows = cur.execute(self._q(DEPENDENTS_SQL), (job_id,)).fetchall()
        return [job_from_row(r) for r in rows]

    def _apply_in(self, cur: Cursor, changes: Sequence[Change]) -> list[Job | None]:
        """Make ``changes`` in order in the current transaction."""
        return [job for run in runs(changes, self.channel) for job in self._run(cur, *run)]

    def _run(self, cur: Cursor, sql: str, params: dict[str, Any], size: int
             ) -> list[Job | None]:
        """One run of changes (see ``sql.runs``): the job after each change,
        or None where it was not made."""
        done: list[Job | None] = [None] * size
        for row in cur.execute(self._q(sql), params).fetchall():
            done[int(row["n"]) - 1] = job_from_row(row)
        return done

    # ---------------------------------------------------------- claims
    @guarded
    def due(self, now: int, queues: Sequence[str] | None = None, limit: int = 1) -> list[Job]:
        kind, params = queue_choice(queues)
        params.update(now=now, limit=limit)
        with self.session.cursor() as cur:
            rows = cur.execute(self._q(DUE_SQLS[kind]), params).fetchall()
        return [job_from_row(r) for r in rows]

    @guarded
    def due_count(self, now: int, queues: Sequence[str] | None = None, limit: int = 1) -> int:
        kind, params = queue_choice(queues)
        params.update(now=now, limit=limit)
        with self.session.cursor() as cur:
            row = cur.execute(self._q(DUE_COUNT_SQLS[kind]), params).fetchone()
        return 0 if row is None else int(row["n"])

    @guarded
    def next_run_at(self, queues: Sequence[str] | None = None) -> int | None:
        sql = NEXT_RUN_SQL if queues is None else NEXT_RUN_IN_QUEUES_SQL
        with self.session.cursor() as cur:
            row = cur.execute(self._q(sql), {"queues": None if queues is None else list(queues)}
                              ).fetchone()
        return None if row is None or row["t"] is None else int(row["t"])

    @guarded
    def claim(self, worker_id: str, now: int, lease_ms: int,
              queues: Sequence[str] | None = None, limit: int = 1) -> list[Claim]:
        # A busy worker claims without ever sleeping on the wake-up socket:
        # read it here (and in apply) so that it never fills up, which would
        # stall the server's notification queue. Nothing is lost: the claim
        # below sees every change whose notification is discarded.
        self.drain_wakeups()
        claims: list[Placed] = []
        for _ in range(KEYED_ROUNDS):
            if len(claims) >= limit:
                break
            with self.session.cursor() as cur:  # one statement: claims and attempts
                made, wanted = self._claim_in(cur, worker_id, now, lease_ms, queues,
                                              limit - len(claims))
            claims += made
            if not wanted:
                break
            with self.session.transaction() as cur:
                made, full = self._claim_keyed_in(cur, worker_id, now, lease_ms, queues,
                                                  wanted, limit - len(claims))
            claims += made
            if not full:  # else a key filled up: look again past its jobs
                break
        return _in_claim_order(claims)

    def _claim_in(self, cur: Cursor, worker_id: str, now: int, lease_ms: int,
                  queues: Sequence[str] | None, limit: int) -> tuple[list[Placed], list[str]]:
        """Up to ``limit`` claims in claim order, in one statement, of jobs
        without a concurrency key; and the keys of the keyed jobs among the
        ``limit`` first due (those whose key looked free), to claim next
        (:meth:`_claim_keyed_in`), once per job."""
        kind, params = queue_choice(queues)
        params.update(now=now, worker=worker_id, token=new_token(), lease=now + lease_ms)
        if limit == 1:
            rows = cur.execute(self._q(CLAIM_SQLS[kind]), params).fetchall()
        else:
            params["limit"] = limit
            rows = cur.execute(self._q(CLAIM_BATCH_SQLS[kind]), params).fetchall()
        wanted = [str(r["wanted_key"]) for r in rows if r["wanted_key"] is not None]
        return self._claims(rows, worker_id, now + lease_ms), wanted

    def _claim_keyed_in(self, cur: Cursor, worker_id: str, now: int, lease_ms: int,
                        queues: Sequence[str] | None, wanted: list[str], limit: int
                        ) -> tuple[list[Placed], bool]:
        """Claims of jobs with the keys ``wanted`` (a key once per job
        wanted), up to ``limit``, inside the caller's transaction: each key
        under its advisory lock (taken in key order: no deadlock between
        claimers), counting the key's running jobs after taking it. Also
        says whether a key gave fewer jobs than wanted."""
        kind, params = queue_choice(queues)
        params.update(now=now, worker=worker_id, token=new_token(), lease=now + lease_ms)
        claims: list[Placed] = []
        full = False
        for key in sorted(set(wanted)):
            if len(claims) >= limit:
                break
            want = min(wanted.count(key), limit - len(claims))
            cur.execute(self._q(LOCK_KEY_SQL), {"schema": self.schema, "key": key})
            params.update(key=key, limit=want)
            made = self._claims(cur.execute(self._q(KEYED_CLAIM_SQLS[kind]), params).fetchall(),
                                worker_id, now + lease_ms)
            full = full or len(made) < want
            claims += made
        return claims, full

    @staticmethod
    def _claims(rows: list[DictRow], worker_id: str, lease: int) -> list[Placed]:
        return [((-row["priority"], row["run_at"], row["seq"]),
                 Claim(job=job_from_row(row), token=row["claim_token"], worker_id=worker_id,
                       attempt=int(row["attempt_number"]), lease_expires_at=lease))
                for row in rows if row["claim_token"] is not None]

    @guarded
    def apply_and_claim(self, changes: Sequence[Change], *, worker_id: str, now: int,
                        lease_ms: int, queues: Sequence[str] | None = None, limit: int = 0,
                        atomic: bool = False) -> tuple[list[Job | None], list[Claim]]:
        """All of it in one transaction: one commit for a batch of results
        and claims (keyed jobs in one round: see :meth:`claim`)."""
        if limit <= 0:
            return self.apply(changes, atomic=atomic), []
        if not changes:
            return [], self.claim(worker_id, now, lease_ms, queues, limit)
        self.drain_wakeups()
        try:
            return self._apply_and_claim(changes, worker_id, now, lease_ms, queues, limit,
                                         atomic)
        except Undo:  # (rolled back)
            return [None] * len(changes), []

    def _apply_and_claim(self, changes: Sequence[Change], worker_id: str, now: int,
                         lease_ms: int, queues: Sequence[str] | None, limit: int, atomic: bool
                         ) -> tuple[list[Job | None], list[Claim]]:
        with self.session.transaction() as cur:
            done = self._apply_in(cur, changes)
            if atomic and None in done:
                raise Undo
            claims, wanted = self._claim_in(cur, worker_id, now, lease_ms, queues, limit)
            if wanted and len(claims) < limit:
                claims += self._claim_keyed_in(cur, worker_id, now, lease_ms, queues, wanted,
                                               limit - len(claims))[0]
        return done, _in_claim_order(claims)

    # ---------------------------------------------------------- queues, settings
    @guarded
    def set_queue_paused(self, queue: str, paused: bool) -> bool:
        if paused:
            with self.session.cursor() as cur:
                cur.execute(self._q("INSERT INTO {s}.paused_queues (queue) VALUES (%s)"
                                    " ON CONFLICT DO NOTHING"), (queue,))
                return cur.rowcount == 1
        with self.session.transaction() as cur:
            cur.execute(self._q("DELETE FROM {s}.paused_queues WHERE queue = %s"), (queue,))
            if cur.rowcount != 1:
                return False
            self._notify(cur)  # its jobs may be due: wake idle workers
            return True

    @guarded
    def paused_queues(self) -> list[str]:
        with self.session.cursor() as cur:
            rows = cur.execute(self._q("SELECT queue FROM {s}.paused_queues")).fetchall()
        return sorted(str(r["queue"]) for r in rows)

    @guarded
    def get_settings(self) -> dict[str, Any]:
        with self.session.cursor() as cur:
            rows = cur.execute(self._q("SELECT key, value FROM {s}.settings")).fetchall()
        return {str(r["key"]): json.loads(r["value"]) for r in rows}

    @guarded
    def set_setting(self, key: str, value: Any) -> None:
        with self.session.transaction() as cur:
            cur.execute(self._q(
                "INSERT INTO {s}.settings (key, value) VALUES (%s, %s)"
                " ON CONFLICT (key) DO UPDATE SET value = excluded.value"),
                (key, json.dumps(value)))
            if key == LIMITS_SETTING:
                self._notify(cur)  # a raised limit frees slots: wake idle workers

    # ---------------------------------------------------------- workers
    @guarded
    def put_worker(self, worker: WorkerInfo) -> None:
        with self.session.cursor() as cur:
            cur.execute(self._q(PUT_WORKER_SQL), [getattr(worker, f) for f in WORKER_FIELDS])

    @guarded
    def remove_workers(self, worker_ids: Sequence[str]) -> None:
        if not worker_ids:
            return
        with self.session.cursor() as cur:
            cur.execute(self._q("DELETE FROM {s}.workers WHERE id = ANY(%s::text[])"),
                        (list(worker_ids),))

    @guarded
    def list_workers(self) -> list[WorkerInfo]:
        with self.session.cursor() as cur:
            rows = cur.execute(self._q(LIST_WORKERS_SQL)).fetchall()
        return [WorkerInfo(**dict(r)) for r in rows]
