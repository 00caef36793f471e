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
jobs in one transaction. Changes that may make work due (new jobs, a job
left pending or failed, a resumed queue) ``pg_notify`` the queue's channel
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
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import psycopg
from psycopg import errors as pg_errors
from psycopg.rows import DictRow

from queuectl_core.errors import DuplicateJobError
from queuectl_core.models import (
    CLAIMABLE_STATES,
    Attempt,
    Change,
    Claim,
    Job,
    JobState,
    WorkerInfo,
)
from queuectl_core.storage import Storage, new_token

from .dsn import resolve_dsn
from .views import PostgresViews

if TYPE_CHECKING:
    from queuectl_core.registry import PluginContext

    from .options import PostgresOptions
from . import views
from .connection import Session, channel_for, connection_params, describe, guarded
from .schema import migrate
from .sql import (
    ATTEMPTS_SQL,
    CLAIM_BATCH_SQLS,
    CLAIM_SQLS,
    DUE_COUNT_SQLS,
    DUE_SQLS,
    EXPIRED_SQL,
    FIRST_EXISTING_SQL,
    GET_SQL,
    INSERT_ATTEMPT_SQL,
    INSERT_JOB_SQL,
    INSERT_ONE_JOB_SQL,
    JOB_COLUMNS,
    LIST_WORKERS_SQL,
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

# psycopg logs a warning when a pipeline ends in an error that we raise
# anyway (an executemany hitting a duplicate id). Without this handler, in a
# CLI process that configures no logging, Python's last-resort handler would
# print it to stderr before our one-line error. Where logging is configured
# (workers), the records still reach its handlers.
logging.getLogger("psycopg").addHandler(logging.NullHandler())

Cursor = psycopg.Cursor[DictRow]


def open_store(options: PostgresOptions | None, context: PluginContext) -> PostgresStorage:
    """The backend's factory (``BackendSpec.factory``)."""
    if options is None:  # no options in the YAML: the defaults, without pydantic
        return PostgresStorage(resolve_dsn(None))
    return PostgresStorage(resolve_dsn(options.dsn), schema=options.schema_name,
                           connect_timeout_s=options.connect_timeout_s)


class PostgresStorage(PostgresViews, Storage):
    """A queue in one schema of a PostgreSQL database."""

    session: Session

    def __init__(self, dsn: str, *, schema: str = "queuectl", connect_timeout_s: int = 5,
                 application_name: str = "queuectl") -> None:
        params = connection_params(dsn, connect_timeout_s, application_name)
        self.schema = schema
        self.channel = channel_for(schema)
        self._description = describe(params, schema)
        self._sql: dict[str, str] = {}
        self.session = Session(params, schema, self._prepare)
        self.session.connect()

    def _prepare(self, conn: psycopg.Connection[DictRow]) -> None:
        migrate(conn, self.schema, self.session.where)
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

    # ---------------------------------------------------------- wake-ups
    def wakeup_fileno(self) -> int | None:
        return self.session.listener.fileno()

    def drain_wakeups(self) -> None:
        self.session.listener.drain()

    # ---------------------------------------------------------- jobs
    @guarded
    def insert(self, records: Sequence[tuple[Job, Sequence[Attempt]]]) -> None:
        ids = [job.id for job, _ in records]
        seen: set[str] = set()
        for job_id in ids:
            if job_id in seen:
                raise DuplicateJobError(job_id)
            seen.add(job_id)
        if not records:
            return
        try:
            if len(records) == 1 and not records[0][1]:  # enqueue: one statement
                with self.session.cursor() as cur:
                    cur.execute(self._q(INSERT_ONE_JOB_SQL),
                                [*job_row(records[0][0], 0), self.channel])
                return
            with self.session.transaction() as cur:
                cur.executemany(self._q(INSERT_JOB_SQL),
                                [job_row(job, len(history)) for job, history in records])
                attempts = [attempt_row(a, new_token()) for _, history in records
                            for a in history]
                if attempts:
                    cur.executemany(self._q(INSERT_ATTEMPT_SQL), attempts)
                if any(job.state in CLAIMABLE_STATES for job, _ in records):
                    self._notify(cur)
        except pg_errors.UniqueViolation:
            raise DuplicateJobError(self._first_existing(ids)) from None

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
        sql = f"SELECT {JOB_COLUMNS} FROM {{s}}.jobs WHERE true"
        params: list[Any] = []
        if state is not None:
            sql += " AND state = %s"
            params.append(JobState(state).value)
        if queue is not None:
            sql += " AND queue = %s"
            params.append(queue)
        sql += " ORDER BY seq LIMIT %s"
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
    def apply(self, changes: Sequence[Change]) -> list[Job | None]:
        # Renewals come here: a worker busy with one long command reads its
        # wake-up socket too (see claim).
        self.drain_wakeups()
        made = runs(changes, self.channel)
        if not made:
            return []
        if len(made) == 1:  # one statement: atomic on its own, one round trip
            with self.session.cursor() as cur:
                return self._run(cur, *made[0])
        with self.session.transaction() as cur:
            return [job for run in made for job in self._run(cur, *run)]

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
        if limit <= 0:
            return []
        with self.session.cursor() as cur:  # one statement: claims and attempts, atomically
            return self._claim_in(cur, worker_id, now, lease_ms, queues, limit)

    def _claim_in(self, cur: Cursor, worker_id: str, now: int, lease_ms: int,
                  queues: Sequence[str] | None, limit: int) -> list[Claim]:
        """Up to ``limit`` claims in claim order, in one statement."""
        kind, params = queue_choice(queues)
        lease = now + lease_ms
        params.update(now=now, worker=worker_id, token=new_token(), lease=lease)
        if limit == 1:
            row = cur.execute(self._q(CLAIM_SQLS[kind]), params).fetchone()
            rows = [] if row is None else [row]
        else:
            params["limit"] = limit
            rows = cur.execute(self._q(CLAIM_BATCH_SQLS[kind]), params).fetchall()
            rows.sort(key=lambda r: (-r["priority"], r["run_at"], r["seq"]))
        return [Claim(job=job_from_row(row), token=row["claim_token"], worker_id=worker_id,
                      attempt=int(row["attempt_number"]), lease_expires_at=lease)
                for row in rows]

    @guarded
    def apply_and_claim(self, changes: Sequence[Change], *, worker_id: str, now: int,
                        lease_ms: int, queues: Sequence[str] | None = None, limit: int = 0
                        ) -> tuple[list[Job | None], list[Claim]]:
        """All of it in one transaction: one commit for a batch of results
        and claims."""
        if limit <= 0:
            return self.apply(changes), []
        self.drain_wakeups()
        if not changes:
            with self.session.cursor() as cur:
                return [], self._claim_in(cur, worker_id, now, lease_ms, queues, limit)
        with self.session.transaction() as cur:
            done = self._apply_in(cur, changes)
            claims = self._claim_in(cur, worker_id, now, lease_ms, queues, limit)
        return done, claims

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
        with self.session.cursor() as cur:
            cur.execute(self._q(
                "INSERT INTO {s}.settings (key, value) VALUES (%s, %s)"
                " ON CONFLICT (key) DO UPDATE SET value = excluded.value"),
                (key, json.dumps(value)))

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
