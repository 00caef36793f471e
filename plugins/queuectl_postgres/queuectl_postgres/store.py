"""PostgreSQL implementation of the storage seam.

Concurrency: the connection runs in autocommit mode; every state change
is either one statement (claim, complete, renew: atomic on their own) or
one explicit transaction. A claim locks the next due job with
``FOR UPDATE SKIP LOCKED``, so concurrent claimers on any number of
machines each take a different row without waiting for one another, and
opens the attempt in the same statement. Every change after a claim is
conditional on the claim's token (fencing), exactly like the SQLite store.

Changes that make work due (enqueue, import, a failure with a retry time,
a DLQ retry, recovered jobs, a resumed queue) also ``pg_notify`` the
queue's channel in their transaction; :meth:`PostgresStorage.wakeup_fileno`
gives idle workers a socket that becomes readable on such news.

Connection errors (server down, restarting, backend terminated) drop the
connection and raise TransientStorageError; the next call reconnects.
A connection is never used in a process other than the one that opened it
(after ``fork`` the child opens its own).
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import os
import re
import select
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any, Concatenate, ParamSpec, TypeVar

import psycopg
from psycopg import errors as pg_errors
from psycopg.conninfo import make_conninfo
from psycopg.rows import DictRow, dict_row

from queuectl_core.errors import (
    ConfigError,
    DuplicateJobError,
    InvalidStateError,
    JobNotFoundError,
    StorageError,
    TransientStorageError,
)
from queuectl_core.models import (
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

from .dsn import mask_secrets
from .fast import (
    INSERT_JOB_SQL,
    channel_for,
    connection_params,
    display,
    failed_connection,
    job_row,
)
from .fast import describe as describe_store
from .fast import json_value as _json

log = logging.getLogger("queuectl.postgres")
# psycopg logs a warning when a pipeline ends in an error that we raise
# anyway (an executemany hitting a duplicate id). Without this handler, in a
# CLI process that configures no logging, Python's last-resort handler would
# print it to stderr before our one-line error. Where logging is configured
# (workers), the records still reach its handlers.
logging.getLogger("psycopg").addHandler(logging.NullHandler())

P = ParamSpec("P")
R = TypeVar("R")
Conn = psycopg.Connection[DictRow]

# ---------------------------------------------------------------- schema

#: The schema's history, oldest first: (version, DDL). ``{s}`` is the
#: quoted schema name. A store brings an older schema up to date by
#: applying every later step in order, in one transaction; never edit a
#: released step, append a new one.
MIGRATIONS: list[tuple[int, str]] = [
    (1, """
CREATE TABLE {s}.jobs (
    seq              bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    id               text NOT NULL UNIQUE,
    command          text NOT NULL,
    state            text NOT NULL
                     CHECK (state IN ('pending', 'processing', 'completed', 'failed', 'dead')),
    attempts         integer NOT NULL DEFAULT 0,
    max_retries      integer NOT NULL,
    priority         integer NOT NULL DEFAULT 0,
    run_at           bigint NOT NULL,
    created_at       bigint NOT NULL,
    updated_at       bigint NOT NULL,
    started_at       bigint,
    finished_at      bigint,
    worker_id        text,
    claim_token      text,
    lease_expires_at bigint,
    last_error       text,
    exit_code        integer
);
-- Claim order over claimable jobs only: finished jobs never slow a claim.
CREATE INDEX jobs_ready ON {s}.jobs (priority DESC, run_at, seq)
    WHERE state IN ('pending', 'failed');
CREATE INDEX jobs_due ON {s}.jobs (run_at) WHERE state IN ('pending', 'failed');
CREATE INDEX jobs_leases ON {s}.jobs (lease_expires_at) WHERE state = 'processing';
CREATE INDEX jobs_state ON {s}.jobs (state, seq);
CREATE TABLE {s}.attempts (
    seq          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    job_id       text NOT NULL,
    number       integer NOT NULL,
    claim_token  text NOT NULL UNIQUE,
    worker_id    text NOT NULL,
    started_at   bigint NOT NULL,
    finished_at  bigint,
    outcome      text NOT NULL,
    exit_code    integer,
    signal       integer,
    error        text
);
CREATE INDEX attempts_job ON {s}.attempts (job_id, seq);
CREATE TABLE {s}.settings (
    key   text PRIMARY KEY,
    value text NOT NULL
);
CREATE TABLE {s}.workers (
    id           text PRIMARY KEY,
    hostname     text NOT NULL,
    pid          integer NOT NULL,
    started_at   bigint NOT NULL,
    heartbeat_at bigint NOT NULL,
    current_job  text,
    job_pgid     integer
);
"""),
    (2, """
-- Named queues, per-job options, cancellation, output tails, paused queues.
ALTER TABLE {s}.jobs
    ADD COLUMN queue               text NOT NULL DEFAULT 'default',
    ADD COLUMN timeout             double precision,
    ADD COLUMN cwd                 text,
    ADD COLUMN env                 json,
    ADD COLUMN retry               json,
    ADD COLUMN cancel_requested_at bigint,
    -- The number of attempt records the job has; a claim numbers the
    -- attempt it opens from it, read under the job's row lock. NULL (for
    -- completed jobs of version 1, which never run again): count the rows.
    ADD COLUMN attempt_records     integer,
    DROP CONSTRAINT jobs_state_check,
    ADD CONSTRAINT jobs_state_check CHECK (
        state IN ('pending', 'processing', 'completed', 'failed', 'dead', 'cancelled'));
ALTER TABLE {s}.jobs ALTER COLUMN attempt_records SET DEFAULT 0;
UPDATE {s}.jobs AS j
   SET attempt_records = (SELECT count(*) FROM {s}.attempts AS a WHERE a.job_id = j.id)
 WHERE j.state IN ('pending', 'processing', 'failed', 'dead');
-- Claims from chosen queues: claim order, per queue.
CREATE INDEX jobs_ready_queue ON {s}.jobs (queue, priority DESC, run_at, seq)
    WHERE state IN ('pending', 'failed');
-- Wake-up times: the earliest run_at of each queue (and the queues that have
-- claimable jobs, read by skipping from one to the next).
DROP INDEX {s}.jobs_due;
CREATE INDEX jobs_due_queue ON {s}.jobs (queue, run_at) WHERE state IN ('pending', 'failed');
-- Retention sweeps (purge oldest finished first) over finished jobs only.
CREATE INDEX jobs_finished ON {s}.jobs ((COALESCE(finished_at, updated_at)), seq)
    WHERE state IN ('completed', 'dead', 'cancelled');
-- Command output may hold any bytes, NUL included: UTF-8 (surrogatepass).
ALTER TABLE {s}.attempts
    ADD COLUMN stdout_tail bytea,
    ADD COLUMN stderr_tail bytea;
CREATE TABLE {s}.paused_queues (
    queue text PRIMARY KEY
);
"""),
]


def schema_version() -> int:
    """The schema version this code writes (the last migration's)."""
    return MIGRATIONS[-1][0]


_CLAIMABLE = "state IN ('pending', 'failed')"
#: Spelled out in every purge so that the planner can use ``jobs_finished``.
_FINISHED = "state IN ('completed', 'dead', 'cancelled')"
#: Not in a paused queue: the paused queues are read once per statement (an
#: InitPlan) and compared per row. Not ``queue <> ALL(...)``: with most jobs
#: in one queue, the planner's estimate for that is "no row passes", and it
#: then sorts every due job instead of walking ``jobs_ready`` in order; the
#: estimate for ``<@`` does not depend on the column's statistics.
_NOT_PAUSED = "NOT (ARRAY[queue] <@ ARRAY(SELECT queue FROM {s}.paused_queues))"
_JOB_FIELDS = Job.field_names()
_JOB_COLUMNS = ", ".join(_JOB_FIELDS)
_JSON_FIELDS = frozenset({"env", "retry"})
_ATTEMPT_FIELDS = Attempt.field_names()
_ATTEMPT_COLUMNS = ", ".join(_ATTEMPT_FIELDS)
_TAIL_FIELDS = frozenset({"stdout_tail", "stderr_tail"})
_WORKER_COLUMNS = ", ".join(WorkerInfo.field_names())


def _next_due_sql(queue_filter: str, limit: str = "1") -> str:
    return (f"SELECT seq FROM {{s}}.jobs WHERE {_CLAIMABLE} AND run_at <= %(now)s"
            f" AND {_NOT_PAUSED}{queue_filter}"
            f" ORDER BY priority DESC, run_at, seq LIMIT {limit} FOR UPDATE SKIP LOCKED")


#: The next due job in any queue that is not paused, in claim order
#: (parameter ``now``). Walks the partial index ``jobs_ready`` and stops at
#: the first row it can lock.
NEXT_DUE_SQL = _next_due_sql("")
#: The same in one queue (parameters ``now``, ``queue``): walks
#: ``jobs_ready_queue`` from that queue's first entry.
NEXT_DUE_IN_QUEUE_SQL = _next_due_sql(" AND queue = %(queue)s")
#: The same in several queues (parameters ``now``, ``queues``).
NEXT_DUE_IN_QUEUES_SQL = _next_due_sql(" AND queue = ANY(%(queues)s::text[])")


#: The first (earliest ``run_at``) claimable job of each queue ``q.name``,
#: from ``jobs_due_queue``, outside paused queues.
_FIRST_DUE_PER_QUEUE = (
    "SELECT min(first.run_at) AS t FROM {queues} AS q(name)"
    " CROSS JOIN LATERAL (SELECT run_at FROM {s}.jobs"
    f" WHERE {_CLAIMABLE} AND queue = q.name ORDER BY run_at LIMIT 1) AS first"
    " WHERE q.name <> ALL(ARRAY(SELECT queue FROM {s}.paused_queues))"
)
#: When an idle worker of any queue should look again. The queues that have
#: claimable jobs are found by skipping through ``jobs_due_queue`` from one
#: queue to the next (a loose index scan), so the cost grows with the number
#: of queues, not of jobs, and a paused queue's backlog is never read.
NEXT_RUN_SQL = f"""
WITH RECURSIVE active(name) AS (
    (SELECT queue FROM {{s}}.jobs WHERE {_CLAIMABLE} ORDER BY queue LIMIT 1)
    UNION ALL
    SELECT (SELECT queue FROM {{s}}.jobs WHERE {_CLAIMABLE} AND queue > active.name
             ORDER BY queue LIMIT 1)
      FROM active WHERE active.name IS NOT NULL
)
{_FIRST_DUE_PER_QUEUE.replace("{queues}", "(SELECT name FROM active WHERE name IS NOT NULL)")}
"""
#: The same for chosen queues (parameter ``queues``).
NEXT_RUN_IN_QUEUES_SQL = _FIRST_DUE_PER_QUEUE.replace("{queues}", "unnest(%(queues)s::text[])")


def _claim_sql(next_due: str, token: str = "%(token)s") -> str:
    """Claim what ``next_due`` selects and open the attempts, in one
    statement; ``token`` is the SQL of each claim's token."""
    return f"""
WITH next AS ({next_due}),
claimed AS (
    UPDATE {{s}}.jobs AS j
       SET state = 'processing', attempts = j.attempts + 1,
           attempt_records = COALESCE(j.attempt_records, (
               SELECT count(*) FROM {{s}}.attempts AS a WHERE a.job_id = j.id)) + 1,
           worker_id = %(worker)s, claim_token = {token}, lease_expires_at = %(lease)s,
           started_at = %(now)s, finished_at = NULL, updated_at = %(now)s
      FROM next
     WHERE j.seq = next.seq
 RETURNING j.seq, j.claim_token, j.attempt_records AS attempt_number,
           {", ".join("j." + f for f in _JOB_FIELDS)}
),
opened AS (
    INSERT INTO {{s}}.attempts (job_id, number, claim_token, worker_id, started_at, outcome)
    SELECT id, attempt_number, claim_token, %(worker)s, %(now)s, 'running' FROM claimed
)
SELECT * FROM claimed
"""


def _due_count_sql(queue_filter: str) -> str:
    return (f"SELECT count(*) AS n FROM (SELECT 1 FROM {{s}}.jobs WHERE {_CLAIMABLE}"
            f" AND run_at <= %(now)s AND {_NOT_PAUSED}{queue_filter} LIMIT %(limit)s) AS due")


#: How many jobs a claim could take now, up to ``limit`` (``due_count``).
_DUE_COUNT_SQL = _due_count_sql("")
_DUE_COUNT_IN_QUEUES_SQL = _due_count_sql(" AND queue = ANY(%(queues)s::text[])")

_CLAIM_SQL = _claim_sql(NEXT_DUE_SQL)
_CLAIM_IN_QUEUE_SQL = _claim_sql(NEXT_DUE_IN_QUEUE_SQL)
_CLAIM_IN_QUEUES_SQL = _claim_sql(NEXT_DUE_IN_QUEUES_SQL)
#: Up to %(limit)s claims in one statement (record_and_claim of a busy
#: worker), each with its own token: ``<random>.<seq>``. The rows come back
#: in no particular order; the caller sorts them into claim order.
_BATCH_TOKEN = "%(token)s || '.' || j.seq"
_CLAIM_BATCH_SQL = _claim_sql(_next_due_sql("", "%(limit)s"), _BATCH_TOKEN)
_CLAIM_BATCH_IN_QUEUE_SQL = _claim_sql(_next_due_sql(" AND queue = %(queue)s", "%(limit)s"),
                                       _BATCH_TOKEN)
_CLAIM_BATCH_IN_QUEUES_SQL = _claim_sql(
    _next_due_sql(" AND queue = ANY(%(queues)s::text[])", "%(limit)s"), _BATCH_TOKEN)

#: The claim statements for any queue, one queue and several queues.
_CLAIM_SQLS = (_CLAIM_SQL, _CLAIM_IN_QUEUE_SQL, _CLAIM_IN_QUEUES_SQL)
_CLAIM_BATCH_SQLS = (_CLAIM_BATCH_SQL, _CLAIM_BATCH_IN_QUEUE_SQL, _CLAIM_BATCH_IN_QUEUES_SQL)


def _claim_statement(statements: tuple[str, str, str], queues: Sequence[str] | None
                     ) -> tuple[str, dict[str, Any]]:
    """The statement of ``statements`` for ``queues``, with its queue
    parameter."""
    if queues is None:
        return statements[0], {}
    if len(queues) == 1:
        return statements[1], {"queue": queues[0]}
    return statements[2], {"queues": list(queues)}

# A failure (parameter ``cancellable``: true for fail()) of a job whose cancel
# was asked for ends it ``cancelled`` instead of ``failed`` or ``dead``.
_CANCELS = "(%(cancellable)s AND cancel_requested_at IS NOT NULL)"

_FINISH_SQL = f"""
WITH done AS (
    UPDATE {{s}}.jobs
       SET state = CASE WHEN {_CANCELS} THEN 'cancelled' ELSE %(state)s END,
           run_at = CASE WHEN {_CANCELS} THEN run_at
                         ELSE COALESCE(%(retry_at)s::bigint, run_at) END,
           last_error = %(last_error)s, exit_code = %(exit_code)s, finished_at = %(now)s,
           updated_at = %(now)s, claim_token = NULL, lease_expires_at = NULL,
           started_at = COALESCE(%(started_at)s::bigint, started_at)
     WHERE id = %(id)s AND state = 'processing' AND claim_token = %(token)s
 RETURNING {_JOB_COLUMNS}
),
closed AS (
    UPDATE {{s}}.attempts AS a
       SET finished_at = %(now)s,
           outcome = CASE WHEN done.state = 'cancelled' THEN 'cancelled' ELSE %(outcome)s END,
           exit_code = %(exit_code)s, signal = %(signal)s, error = %(error)s,
           stdout_tail = %(stdout_tail)s, stderr_tail = %(stderr_tail)s,
           started_at = COALESCE(%(started_at)s::bigint, a.started_at)
      FROM done
     WHERE a.claim_token = %(token)s
)
SELECT * FROM done
"""

# The core's messages, as format() templates for SQL (the worker id is %s).
_LOST_ERROR = LOST_ATTEMPT_ERROR.replace("{worker}", "%s")
_INTERRUPTED_ERROR = INTERRUPTED_ATTEMPT_ERROR.replace("{worker}", "%s")

_RECOVER_SQL = f"""
WITH stale AS (
    SELECT seq, claim_token, worker_id FROM {{s}}.jobs
     WHERE {{where}}
     ORDER BY seq
       FOR UPDATE
),
released AS (
    UPDATE {{s}}.jobs AS j
       SET {{change}}, run_at = %(now)s,
           last_error = format(%(template)s, coalesce(stale.worker_id, '?')),
           exit_code = NULL, finished_at = %(now)s, updated_at = %(now)s,
           claim_token = NULL, lease_expires_at = NULL
      FROM stale
     WHERE j.seq = stale.seq
 RETURNING j.seq, stale.claim_token AS old_token, {", ".join("j." + f for f in _JOB_FIELDS)}
),
closed AS (
    UPDATE {{s}}.attempts AS a
       SET finished_at = %(now)s, error = released.last_error,
           outcome = CASE WHEN released.state = 'cancelled' THEN 'cancelled'
                          ELSE %(outcome)s END
      FROM released
     WHERE a.claim_token = released.old_token
)
SELECT * FROM released ORDER BY seq
"""

_CHARGED = ("state = CASE WHEN j.cancel_requested_at IS NOT NULL THEN 'cancelled'"
            " WHEN j.attempts > j.max_retries THEN 'dead' ELSE 'failed' END")
_UNCHARGED = ("attempts = j.attempts - 1,"
              " state = CASE WHEN j.cancel_requested_at IS NOT NULL THEN 'cancelled'"
              " WHEN j.attempts <= 1 THEN 'pending' ELSE 'failed' END")

#: A waiting job is cancelled at once; a running one is asked to stop (once).
_CANCEL_SQL = f"""
UPDATE {{s}}.jobs
   SET state = CASE WHEN state = 'processing' THEN state ELSE 'cancelled' END,
       finished_at = CASE WHEN state = 'processing' THEN finished_at ELSE %(now)s END,
       last_error = CASE WHEN state = 'processing' THEN last_error ELSE %(error)s END,
       cancel_requested_at = %(now)s, updated_at = %(now)s
 WHERE id = %(id)s
   AND ({_CLAIMABLE} OR (state = 'processing' AND cancel_requested_at IS NULL))
RETURNING {_JOB_COLUMNS}
"""

#: Oldest finished first (``jobs_finished``), with their attempts, in one
#: statement. ``{where}``: the optional conditions. Rows another purge (or a
#: DLQ retry) holds are skipped, so that concurrent sweeps never wait.
_PURGE_SQL = f"""
WITH doomed AS (
    SELECT seq, id, COALESCE(finished_at, updated_at) AS t FROM {{s}}.jobs
     WHERE {_FINISHED} AND state = ANY(%(states)s::text[]){{where}}
     ORDER BY COALESCE(finished_at, updated_at), seq
     LIMIT %(limit)s
       FOR UPDATE SKIP LOCKED
),
history AS (
    DELETE FROM {{s}}.attempts AS a USING doomed WHERE a.job_id = doomed.id
),
gone AS (
    DELETE FROM {{s}}.jobs AS j USING doomed WHERE j.seq = doomed.seq
 RETURNING j.id, doomed.t, j.seq
)
SELECT id FROM gone ORDER BY t, seq
"""

#: Messages of connection failures that retrying will not fix.
_PERMANENT_CONNECT = re.compile(
    r"password authentication failed|authentication failed|no pg_hba\.conf entry"
    r"|does not exist|permission denied|no password supplied|invalid (?:connection|port|"
    r"sslmode|integer)|unsupported|certificate|could not translate host name",
    re.IGNORECASE,
)

#: Don't retry the LISTEN connection more often than this after it failed.
_LISTEN_RETRY_S = 5.0
#: At most this many reads per drain_wakeups() call.
_DRAIN_ROUNDS = 50


def _job(row: DictRow) -> Job:
    return Job(**{k: row[k] for k in _JOB_FIELDS})


def _attempt(row: DictRow) -> Attempt:
    data = {k: row[k] for k in _ATTEMPT_FIELDS}
    for key in _TAIL_FIELDS:
        data[key] = _from_tail(data[key])
    return Attempt(**data)


def _job_row(job: Job) -> list[Any]:
    """The values of ``_JOB_COLUMNS`` for an imported job."""
    data = job.as_dict()
    data["state"] = job.state.value
    data["last_error"] = _text(job.last_error)
    for key in _JSON_FIELDS:
        data[key] = _json(data[key])
    return [data[k] for k in _JOB_FIELDS]


def _to_tail(value: str | None) -> bytes | None:
    """Command output for a ``bytea`` column, exactly (NUL and lone
    surrogates included, which PostgreSQL text cannot hold)."""
    return None if value is None else value.encode("utf-8", "surrogatepass")


def _from_tail(value: bytes | memoryview | None) -> str | None:
    return None if value is None else bytes(value).decode("utf-8", "surrogatepass")


def _text(value: str | None) -> str | None:
    """PostgreSQL text holds neither NUL nor lone surrogates; error texts
    (from commands and exceptions) may contain them."""
    if value is None:
        return None
    return value.replace("\x00", "\\0").encode("utf-8", "replace").decode("utf-8")


def _finish_params(claim: Claim, result: ExecResult, now: int, state: JobState,
                   retry_at: int | None, outcome: str, started_at: int | None = None
                   ) -> dict[str, Any]:
    """The parameters of _FINISH_SQL, which closes a claimed attempt
    (``started_at``: when its command started, if not at the claim)."""
    return {
        "started_at": started_at,
        "state": state.value, "retry_at": retry_at,
        "last_error": None if state is JobState.COMPLETED else _text(result.error),
        "exit_code": result.exit_code, "now": now, "id": claim.job.id,
        "token": claim.token, "outcome": outcome, "signal": result.signal,
        "error": _text(result.error), "cancellable": state is not JobState.COMPLETED,
        "stdout_tail": _to_tail(result.stdout_tail),
        "stderr_tail": _to_tail(result.stderr_tail),
    }


def _advisory_key(schema: str) -> int:
    digest = hashlib.sha256(f"queuectl-migrate:{schema}".encode()).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


def _guarded(method: Callable[Concatenate[PostgresStorage, P], R]
             ) -> Callable[Concatenate[PostgresStorage, P], R]:
    """Map driver errors to queuectl's: a lost or unreachable server is
    transient (the connection is dropped; the next call reconnects); any
    other database error is a StorageError. Messages are masked."""

    def wrapper(self: PostgresStorage, /, *args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return method(self, *args, **kwargs)
        except (psycopg.OperationalError, psycopg.InterfaceError) as exc:
            self._drop()
            raise TransientStorageError(self._mask(
                f"PostgreSQL {self._where} is unreachable or the connection was lost "
                f"({_one_line(exc)}); nothing was changed unless it was committed whole, "
                "and the next call reconnects"
            )) from None
        except psycopg.Error as exc:
            raise StorageError(self._mask(f"PostgreSQL {self._where}: {_one_line(exc)}")
                               ) from None

    functools.update_wrapper(wrapper, method)
    return wrapper


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__


class PostgresStorage(Storage):
    """A queue in one schema of a PostgreSQL database."""

    def __init__(self, dsn: str, *, schema: str = "queuectl", connect_timeout_s: int = 5,
                 application_name: str = "queuectl") -> None:
        try:
            params = connection_params(dsn, connect_timeout_s, application_name)
        except psycopg.Error as exc:
            detail = "" if "pass" in dsn.lower() else f": {_one_line(exc)}"
            raise ConfigError(mask_secrets(
                "the PostgreSQL DSN is not a valid connection string (use "
                f"postgresql://user@host:5432/dbname or key=value pairs){detail}"
            )) from None
        password = params.get("password")
        self._secrets = [str(password)] if password else []
        self._conninfo = make_conninfo("", **params)
        self.schema = schema
        self.channel = channel_for(schema)
        self._where = display(params)
        self._description = describe_store(params, schema)
        self._sql_cache: dict[str, str] = {}
        self._conn: Conn | None = None
        self._listen: Conn | None = None
        self._listen_retry_at = 0.0
        self._listen_fatal = False
        self._pid = os.getpid()
        self._connect()

    # ---------------------------------------------------------- plumbing
    def _mask(self, text: str) -> str:
        return mask_secrets(text, self._secrets)

    def _q(self, template: str) -> str:
        """A statement with ``{s}`` replaced by the (validated, quoted)
        schema name."""
        sql = self._sql_cache.get(template)
        if sql is None:
            sql = template.replace("{s}", f'"{self.schema}"')
            self._sql_cache[template] = sql
        return sql

    def _forget_after_fork(self) -> None:
        """Drop references to connections opened by the parent process,
        without closing them: closing would end the parent's sessions.
        (psycopg does not close a connection on garbage collection in
        another process than its own.)"""
        if self._pid != os.getpid():
            self._conn = None
            self._listen = None
            self._listen_retry_at = 0.0
            self._pid = os.getpid()

    def _open_connection(self) -> Conn:
        try:
            # The CLI's fast path may have just waited for this very server
            # in vain: report that rather than wait as long again.
            failed = failed_connection(self._conninfo)
            if failed is not None:
                raise failed
            return psycopg.connect(self._conninfo, autocommit=True, row_factory=dict_row)
        except psycopg.OperationalError as exc:
            message = _one_line(exc)
            if _PERMANENT_CONNECT.search(message):
                raise StorageError(self._mask(
                    f"cannot connect to PostgreSQL {self._where}: {message}")) from None
            raise TransientStorageError(self._mask(
                f"cannot reach PostgreSQL {self._where}: {message}")) from None
        except psycopg.Error as exc:
            raise StorageError(self._mask(
                f"cannot connect to PostgreSQL {self._where}: {_one_line(exc)}")) from None

    def _connect(self) -> Conn:
        """The open connection, (re)connecting (and checking the schema) if
        needed."""
        self._forget_after_fork()
        conn = self._conn
        if conn is not None and not conn.closed:
            return conn
        conn = self._open_connection()
        try:
            self._migrate(conn)
        except (psycopg.OperationalError, psycopg.InterfaceError) as exc:
            conn.close()
            raise TransientStorageError(self._mask(
                f"PostgreSQL {self._where}: connection lost while checking the schema "
                f"({_one_line(exc)})")) from None
        except psycopg.Error as exc:
            conn.close()
            raise StorageError(self._mask(
                f"PostgreSQL {self._where}: cannot set up schema {self.schema!r}: "
                f"{_one_line(exc)}")) from None
        except BaseException:
            conn.close()
            raise
        self._conn = conn
        return conn

    def _drop(self) -> None:
        """Forget a (probably broken) connection; the next call reconnects."""
        self._forget_after_fork()
        conn, self._conn = self._conn, None
        if conn is not None:
            try:
                conn.close()
            except Exception:  # a broken connection may fail to close cleanly
                log.debug("closing a broken connection failed", exc_info=True)

    @contextmanager
    def _tx(self) -> Iterator[psycopg.Cursor[DictRow]]:
        """One transaction (rolled back on any error)."""
        conn = self._connect()
        with conn.transaction(), conn.cursor() as cur:
            yield cur

    def _cursor(self) -> psycopg.Cursor[DictRow]:
        """A cursor for one autocommit statement (atomic on its own)."""
        return self._connect().cursor()

    def _notify(self, cur: psycopg.Cursor[DictRow]) -> None:
        """Wake idle workers when the current transaction commits."""
        cur.execute("SELECT pg_notify(%s, '')", (self.channel,))

    # ---------------------------------------------------------- schema
    def _stored_version(self, conn: Conn) -> int:
        row = conn.execute("SELECT to_regclass(%s) AS t", (f'"{self.schema}".meta',)).fetchone()
        if row is None or row["t"] is None:
            return 0
        row = conn.execute(self._q("SELECT value FROM {s}.meta WHERE key = 'schema_version'")
                           ).fetchone()
        return 0 if row is None else int(row["value"])

    def _migrate(self, conn: Conn) -> None:
        """Create or upgrade the schema, one migration after another, under
        a transaction-scoped advisory lock so that concurrent starters do not
        race; refuse a schema written by a newer queuectl."""
        latest = schema_version()
        version = self._stored_version(conn)
        if version == latest:
            return
        if version < latest:
            with conn.transaction():
                conn.execute("SELECT pg_advisory_xact_lock(%s)", (_advisory_key(self.schema),))
                conn.execute(f'CREATE SCHEMA IF NOT EXISTS "{self.schema}"')
                conn.execute(self._q("CREATE TABLE IF NOT EXISTS {s}.meta"
                                     " (key text PRIMARY KEY, value text NOT NULL)"))
                version = self._stored_version(conn)
                if version < latest:
                    for step, ddl in MIGRATIONS:
                        if step > version:
                            log.info("upgrading schema %s to version %d", self.schema, step)
                            conn.execute(self._q(ddl))
                    conn.execute(self._q(
                        "INSERT INTO {s}.meta (key, value) VALUES ('schema_version', %s)"
                        " ON CONFLICT (key) DO UPDATE SET value = excluded.value"),
                        (str(latest),))
                    return
        if version > latest:
            raise StorageError(
                f"PostgreSQL {self._where}: schema {self.schema!r} has version {version}, "
                f"newer than this queuectl understands ({latest}); upgrade queuectl (and "
                "queuectl-postgres) on this machine"
            )

    def describe(self) -> str:
        return self._description

    def close(self) -> None:
        self._forget_after_fork()
        for conn in (self._conn, self._listen):
            if conn is not None:
                try:
                    conn.close()
                except Exception:
                    log.debug("closing a connection failed", exc_info=True)
        self._conn = self._listen = None

    # ---------------------------------------------------------- wake-ups
    def wakeup_fileno(self) -> int | None:
        self._forget_after_fork()
        listen = self._listen
        if listen is not None and not listen.closed:
            return listen.fileno()
        if time.monotonic() < self._listen_retry_at:
            return None
        listen = None
        try:
            listen = psycopg.connect(self._conninfo, autocommit=True, row_factory=dict_row)
            self._listen_fatal = False
            listen.add_notice_handler(self._on_listen_notice)
            listen.execute(f'LISTEN "{self.channel}"')
        except psycopg.Error as exc:
            if listen is not None:
                listen.close()
            log.debug("%s", self._mask(f"cannot LISTEN on {self._where}: {_one_line(exc)}"))
            self._listen_retry_at = time.monotonic() + _LISTEN_RETRY_S
            return None
        self._listen = listen
        return listen.fileno()

    def _on_listen_notice(self, diag: psycopg.errors.Diagnostic) -> None:
        # A server that ends an idle session (pg_terminate_backend, a
        # shutdown) says so with a FATAL message, which libpq hands to the
        # notice handler; the end of the stream may only show later.
        if diag.severity_nonlocalized in ("FATAL", "PANIC"):
            self._listen_fatal = True

    def drain_wakeups(self) -> None:
        self._forget_after_fork()
        listen = self._listen
        if listen is None:
            return
        pgconn = listen.pgconn
        try:
            # Never blocks: libpq reads what the socket holds and returns.
            # A terminated backend sends a FATAL message (see
            # _on_listen_notice) and then closes; read again while the socket
            # stays readable, to see the end of the stream too (bounded, in
            # case notifications keep streaming in).
            for _ in range(_DRAIN_ROUNDS):
                pgconn.consume_input()
                while pgconn.notifies() is not None:
                    pass
                if self._listen_fatal or pgconn.status != psycopg.pq.ConnStatus.OK:
                    raise psycopg.OperationalError("the LISTEN connection was lost")
                if not select.select([pgconn.socket], [], [], 0)[0]:
                    break
        except (psycopg.Error, OSError, ValueError):
            # A dead socket stays readable: close it so that the caller does
            # not spin on it. The next wakeup_fileno() reconnects (or returns
            # None while the server is away).
            self._listen = None
            self._listen_retry_at = time.monotonic() + _LISTEN_RETRY_S
            try:
                listen.close()
            except Exception:
                log.debug("closing the LISTEN connection failed", exc_info=True)

    # ---------------------------------------------------------- jobs
    @_guarded
    def enqueue(self, jobs: Sequence[NewJob]) -> None:
        ids = [j.id for j in jobs]
        seen: set[str] = set()
        for job_id in ids:
            if job_id in seen:
                raise DuplicateJobError(job_id)
            seen.add(job_id)
        if not jobs:
            return
        # The same row as the CLI's fast path writes (fast.job_row).
        rows = [job_row({"id": j.id, "command": j.command, "max_retries": j.max_retries,
                         "priority": j.priority, "run_at": j.run_at,
                         "created_at": j.created_at, "queue": j.queue, "timeout": j.timeout,
                         "cwd": j.cwd, "env": j.env, "retry": j.retry})
                for j in jobs]
        try:
            with self._tx() as cur:
                cur.executemany(self._q(INSERT_JOB_SQL), rows)
                self._notify(cur)
        except pg_errors.UniqueViolation:
            raise DuplicateJobError(self._first_existing(ids)) from None

    @_guarded
    def import_jobs(self, records: Sequence[tuple[Job, Sequence[Attempt]]]) -> None:
        ids = [job.id for job, _ in records]
        seen: set[str] = set()
        for job_id in ids:
            if job_id in seen:
                raise DuplicateJobError(job_id)
            seen.add(job_id)
        if not records:
            return
        marks = ", ".join(["%s"] * (len(_JOB_FIELDS) + 1))
        job_rows: list[list[Any]] = []
        attempt_rows: list[tuple[Any, ...]] = []
        for job, history in records:
            job_rows.append([*_job_row(job), len(history)])
            attempt_rows.extend(
                (a.job_id, a.number, uuid.uuid4().hex, a.worker_id, a.started_at,
                 a.finished_at, a.outcome, a.exit_code, a.signal, _text(a.error),
                 _to_tail(a.stdout_tail), _to_tail(a.stderr_tail))
                for a in history)
        try:
            with self._tx() as cur:
                cur.executemany(self._q(
                    f"INSERT INTO {{s}}.jobs ({_JOB_COLUMNS}, attempt_records) VALUES ({marks})"),
                    job_rows)
                if attempt_rows:
                    cur.executemany(self._q(
                        "INSERT INTO {s}.attempts (job_id, number, claim_token, worker_id,"
                        " started_at, finished_at, outcome, exit_code, signal, error,"
                        " stdout_tail, stderr_tail)"
                        " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)"),
                        attempt_rows)
                self._notify(cur)
        except pg_errors.UniqueViolation:
            raise DuplicateJobError(self._first_existing(ids)) from None

    def _first_existing(self, ids: list[str]) -> str:
        """The first of ``ids`` (in their order) that is stored already."""
        with self._cursor() as cur:
            row = cur.execute(self._q(
                "SELECT u.id FROM unnest(%s::text[]) WITH ORDINALITY AS u(id, n)"
                " JOIN {s}.jobs AS j ON j.id = u.id ORDER BY u.n LIMIT 1"), (ids,)).fetchone()
        return ids[0] if row is None else str(row["id"])

    @_guarded
    def get(self, job_id: str) -> Job | None:
        with self._cursor() as cur:
            row = cur.execute(self._q(f"SELECT {_JOB_COLUMNS} FROM {{s}}.jobs WHERE id = %s"),
                              (job_id,)).fetchone()
        return None if row is None else _job(row)

    @_guarded
    def attempts(self, job_id: str) -> list[Attempt]:
        with self._cursor() as cur:
            rows = cur.execute(self._q(
                f"SELECT {_ATTEMPT_COLUMNS} FROM {{s}}.attempts WHERE job_id = %s ORDER BY seq"),
                (job_id,)).fetchall()
        return [_attempt(r) for r in rows]

    @_guarded
    def list_jobs(self, state: JobState | None = None, limit: int | None = None, *,
                  queue: str | None = None) -> list[Job]:
        sql = f"SELECT {_JOB_COLUMNS} FROM {{s}}.jobs WHERE true"
        params: list[Any] = []
        if state is not None:
            sql += " AND state = %s"
            params.append(state.value)
        if queue is not None:
            sql += " AND queue = %s"
            params.append(queue)
        sql += " ORDER BY seq"
        if limit is not None:
            sql += " LIMIT %s"
            params.append(limit)
        with self._cursor() as cur:
            rows = cur.execute(self._q(sql), params).fetchall()
        return [_job(r) for r in rows]

    @_guarded
    def counts(self, queue: str | None = None) -> dict[JobState, int]:
        counts = dict.fromkeys(JobState, 0)
        sql = "SELECT state, count(*) AS n FROM {s}.jobs"
        if queue is not None:
            sql += " WHERE queue = %(queue)s"
        with self._cursor() as cur:
            for row in cur.execute(self._q(sql + " GROUP BY state"), {"queue": queue}):
                counts[JobState(row["state"])] = int(row["n"])
        return counts

    @_guarded
    def next_run_at(self, queues: Sequence[str] | None = None) -> int | None:
        sql = NEXT_RUN_SQL if queues is None else NEXT_RUN_IN_QUEUES_SQL
        with self._cursor() as cur:
            row = cur.execute(self._q(sql), {"queues": None if queues is None else list(queues)}
                              ).fetchone()
        return None if row is None or row["t"] is None else int(row["t"])

    # ---------------------------------------------------------- claims
    @_guarded
    def claim(self, worker_id: str, now: int, lease_ms: int,
              queues: Sequence[str] | None = None) -> Claim | None:
        # A busy worker claims without ever sleeping on the wake-up socket:
        # read it here (and in renew) so that it never fills up, which would
        # stall the server's notification queue. Nothing is lost: the claim
        # below sees every change whose notification is discarded.
        self.drain_wakeups()
        with self._cursor() as cur:  # one statement: the claim and its attempt, atomically
            return self._claim_in(cur, worker_id, now, lease_ms, queues)

    def _claim_in(self, cur: psycopg.Cursor[DictRow], worker_id: str, now: int,
                  lease_ms: int, queues: Sequence[str] | None) -> Claim | None:
        token = uuid.uuid4().hex
        lease = now + lease_ms
        sql, params = _claim_statement(_CLAIM_SQLS, queues)
        params.update(now=now, worker=worker_id, token=token, lease=lease)
        row = cur.execute(self._q(sql), params).fetchone()
        if row is None:
            return None
        return Claim(job=_job(row), token=token, worker_id=worker_id,
                     attempt=int(row["attempt_number"]), lease_expires_at=lease)

    def _claim_batch_in(self, cur: psycopg.Cursor[DictRow], worker_id: str, now: int,
                        lease_ms: int, queues: Sequence[str] | None, limit: int
                        ) -> list[Claim]:
        """Up to ``limit`` claims in claim order, in one statement."""
        lease = now + lease_ms
        sql, params = _claim_statement(_CLAIM_BATCH_SQLS, queues)
        params.update(now=now, worker=worker_id, token=uuid.uuid4().hex, lease=lease,
                      limit=limit)
        rows = cur.execute(self._q(sql), params).fetchall()
        rows.sort(key=lambda r: (-r["priority"], r["run_at"], r["seq"]))
        return [Claim(job=_job(row), token=row["claim_token"], worker_id=worker_id,
                      attempt=int(row["attempt_number"]), lease_expires_at=lease)
                for row in rows]

    @_guarded
    def record_and_claim(self, outcomes: Sequence[Outcome], now: int, *, worker_id: str,
                         lease_ms: int, queues: Sequence[str] | None = None, limit: int = 1
                         ) -> tuple[list[Job | None], list[Claim]]:
        """All of it in one transaction: one round of commits for a batch of
        results and claims."""
        self.drain_wakeups()
        dones: list[Job | None] = []
        claims: list[Claim] = []
        with self._tx() as cur:
            retried = False
            for outcome in outcomes:
                row = cur.execute(self._q(_FINISH_SQL), _finish_params(
                    outcome.claim, outcome.result, outcome.at(now), outcome.state,
                    None if outcome.completed else outcome.retry_at,
                    outcome.attempt_outcome, outcome.started_at)).fetchone()
                dones.append(None if row is None else _job(row))
                retried = retried or (row is not None and row["state"] == JobState.FAILED.value)
            if limit == 1:
                following = self._claim_in(cur, worker_id, now, lease_ms, queues)
                claims = [] if following is None else [following]
            elif limit > 1:
                claims = self._claim_batch_in(cur, worker_id, now, lease_ms, queues, limit)
            if retried:
                self._notify(cur)  # a retry may be due at once, for any worker
        return dones, claims

    @_guarded
    def due_count(self, now: int, queues: Sequence[str] | None = None, limit: int = 1
                  ) -> int | None:
        params: dict[str, Any] = {"now": now, "limit": limit}
        sql = _DUE_COUNT_SQL
        if queues is not None:
            sql, params["queues"] = _DUE_COUNT_IN_QUEUES_SQL, list(queues)
        with self._cursor() as cur:
            row = cur.execute(self._q(sql), params).fetchone()
        return int(row["n"]) if row is not None else 0

    @_guarded
    def release(self, claim: Claim, now: int) -> Job | None:
        with self._tx() as cur:
            held = cur.execute(self._q(
                "SELECT attempts, cancel_requested_at FROM {s}.jobs"
                " WHERE id = %s AND state = 'processing' AND claim_token = %s FOR UPDATE"),
                (claim.job.id, claim.token)).fetchone()
            if held is None:
                return None
            cur.execute(self._q("DELETE FROM {s}.attempts WHERE claim_token = %s"),
                        (claim.token,))
            before = cur.execute(self._q(
                "SELECT worker_id, started_at, finished_at FROM {s}.attempts"
                " WHERE job_id = %s ORDER BY seq DESC LIMIT 1"), (claim.job.id,)).fetchone()
            attempts = int(held["attempts"]) - 1
            worker = before["worker_id"] if before is not None else None
            started = before["started_at"] if before is not None and attempts else None
            finished = before["finished_at"] if before is not None and attempts else None
            state, error = ("pending" if not attempts else "failed"), None
            if held["cancel_requested_at"] is not None:
                state, finished, error = "cancelled", now, CANCELLED_ERROR
            row = cur.execute(self._q(
                "UPDATE {s}.jobs SET state = %(state)s, attempts = %(attempts)s,"
                " attempt_records = attempt_records - 1, worker_id = %(worker)s,"
                " started_at = %(started)s, finished_at = %(finished)s,"
                " last_error = COALESCE(%(error)s, last_error), updated_at = %(now)s,"
                " claim_token = NULL, lease_expires_at = NULL WHERE id = %(id)s"
                f" RETURNING {_JOB_COLUMNS}"),
                {"state": state, "attempts": attempts, "worker": worker, "started": started,
                 "finished": finished, "error": error, "now": now, "id": claim.job.id},
            ).fetchone()
            if state != "cancelled":
                self._notify(cur)  # claimable again: wake idle workers anywhere
        assert row is not None  # the row is locked above
        return _job(row)

    @_guarded
    def renew(self, claim: Claim, now: int, lease_ms: int) -> bool:
        self.drain_wakeups()  # (see claim)
        with self._cursor() as cur:
            cur.execute(self._q(
                "UPDATE {s}.jobs SET lease_expires_at = %s"
                " WHERE id = %s AND state = 'processing' AND claim_token = %s"),
                (now + lease_ms, claim.job.id, claim.token))
            return cur.rowcount == 1

    def _finish(self, claim: Claim, result: ExecResult, now: int, state: JobState,
                retry_at: int | None, outcome: str) -> Job | None:
        params = _finish_params(claim, result, now, state, retry_at, outcome)
        if retry_at is None:
            with self._cursor() as cur:  # one statement: job and attempt together
                row = cur.execute(self._q(_FINISH_SQL), params).fetchone()
        else:
            with self._tx() as cur:
                row = cur.execute(self._q(_FINISH_SQL), params).fetchone()
                if row is not None and row["state"] == JobState.FAILED.value:
                    self._notify(cur)  # (not when a cancel turned the retry down)
        return None if row is None else _job(row)

    @_guarded
    def complete(self, claim: Claim, result: ExecResult, now: int) -> Job | None:
        return self._finish(claim, result, now, JobState.COMPLETED, None, "completed")

    @_guarded
    def fail(self, claim: Claim, result: ExecResult, now: int, retry_at: int | None
             ) -> Job | None:
        state = JobState.FAILED if retry_at is not None else JobState.DEAD
        return self._finish(claim, result, now, state, retry_at, "failed")

    @_guarded
    def recover_expired(self, now: int, worker_id: str | None = None, *,
                        charge_attempt: bool = True) -> list[Job]:
        if worker_id is None:
            where = "state = 'processing' AND lease_expires_at < %(now)s"
        else:
            where = "state = 'processing' AND worker_id = %(worker)s"
        params: dict[str, Any] = {"now": now, "worker": worker_id}
        # A cheap read first: most sweeps find nothing and need no transaction.
        with self._cursor() as cur:
            if cur.execute(self._q(f"SELECT 1 FROM {{s}}.jobs WHERE {where} LIMIT 1"),
                           params).fetchone() is None:
                return []
        if charge_attempt:
            change, params["template"], params["outcome"] = _CHARGED, _LOST_ERROR, "lost"
        else:
            change, params["template"], params["outcome"] = (
                _UNCHARGED, _INTERRUPTED_ERROR, "interrupted")
        sql = self._q(_RECOVER_SQL).replace("{where}", where).replace("{change}", change)
        with self._tx() as cur:
            rows = cur.execute(sql, params).fetchall()
            if any(r["state"] in (JobState.PENDING.value, JobState.FAILED.value) for r in rows):
                self._notify(cur)
        return [_job(r) for r in rows]

    @_guarded
    def cancel(self, job_id: str, now: int) -> Job:
        with self._cursor() as cur:  # one statement, whatever the job's state
            row = cur.execute(self._q(_CANCEL_SQL),
                              {"id": job_id, "now": now, "error": CANCELLED_ERROR}).fetchone()
            if row is not None:
                return _job(row)
            row = cur.execute(self._q(f"SELECT {_JOB_COLUMNS} FROM {{s}}.jobs WHERE id = %s"),
                              (job_id,)).fetchone()
        if row is None:
            raise JobNotFoundError(job_id)
        job = _job(row)
        if job.state is JobState.PROCESSING:  # asked already: nothing changes
            return job
        raise InvalidStateError(f"job {job_id!r} is {job.state.value} already; only pending, "
                                "failed and processing jobs can be cancelled")

    @_guarded
    def purge(self, *, states: Sequence[JobState], finished_before: int | None = None,
              ids: Sequence[str] | None = None, limit: int | None = None) -> list[str]:
        if any(s not in FINISHED_STATES for s in states):
            raise ValueError("only completed, dead and cancelled jobs can be purged")
        if not states or (ids is not None and not ids) or limit == 0:
            return []
        where = ""
        if finished_before is not None:
            where += " AND COALESCE(finished_at, updated_at) < %(before)s"
        if ids is not None:
            where += " AND id = ANY(%(ids)s::text[])"
        params = {"states": [JobState(s).value for s in states], "before": finished_before,
                  "ids": None if ids is None else list(ids), "limit": limit}
        with self._cursor() as cur:  # one statement: jobs and attempts together
            rows = cur.execute(self._q(_PURGE_SQL.replace("{where}", where)), params
                               ).fetchall()
        return [str(r["id"]) for r in rows]

    @_guarded
    def set_queue_paused(self, queue: str, paused: bool) -> bool:
        if paused:
            with self._cursor() as cur:
                cur.execute(self._q("INSERT INTO {s}.paused_queues (queue) VALUES (%s)"
                                    " ON CONFLICT DO NOTHING"), (queue,))
                return cur.rowcount == 1
        with self._tx() as cur:
            cur.execute(self._q("DELETE FROM {s}.paused_queues WHERE queue = %s"), (queue,))
            if cur.rowcount != 1:
                return False
            self._notify(cur)  # its jobs may be due: wake idle workers
            return True

    @_guarded
    def paused_queues(self) -> list[str]:
        with self._cursor() as cur:
            rows = cur.execute(self._q("SELECT queue FROM {s}.paused_queues")).fetchall()
        return sorted(str(r["queue"]) for r in rows)

    @_guarded
    def dlq_retry(self, job_id: str, now: int) -> Job:
        with self._tx() as cur:
            row = cur.execute(self._q(
                "UPDATE {s}.jobs SET state = 'pending', attempts = 0, run_at = %s,"
                " updated_at = %s, started_at = NULL, finished_at = NULL, exit_code = NULL"
                f" WHERE id = %s AND state = 'dead' RETURNING {_JOB_COLUMNS}"),
                (now, now, job_id)).fetchone()
            if row is not None:
                self._notify(cur)
                return _job(row)
            current = cur.execute(self._q("SELECT state FROM {s}.jobs WHERE id = %s"),
                                  (job_id,)).fetchone()
        if current is None:
            raise JobNotFoundError(job_id)
        raise InvalidStateError(
            f"job {job_id!r} is {current['state']}, not dead; only jobs in the DLQ can be "
            "retried"
        )

    # ---------------------------------------------------------- settings
    @_guarded
    def get_settings(self) -> dict[str, Any]:
        with self._cursor() as cur:
            rows = cur.execute(self._q("SELECT key, value FROM {s}.settings")).fetchall()
        return {str(r["key"]): json.loads(r["value"]) for r in rows}

    @_guarded
    def set_setting(self, key: str, value: Any) -> None:
        with self._cursor() as cur:
            cur.execute(self._q(
                "INSERT INTO {s}.settings (key, value) VALUES (%s, %s)"
                " ON CONFLICT (key) DO UPDATE SET value = excluded.value"),
                (key, json.dumps(value)))

    # ---------------------------------------------------------- workers
    @_guarded
    def register_worker(self, worker: WorkerInfo) -> None:
        with self._cursor() as cur:
            cur.execute(self._q(
                f"INSERT INTO {{s}}.workers ({_WORKER_COLUMNS})"
                " VALUES (%s, %s, %s, %s, %s, %s, %s)"
                " ON CONFLICT (id) DO UPDATE SET hostname = excluded.hostname,"
                " pid = excluded.pid, started_at = excluded.started_at,"
                " heartbeat_at = excluded.heartbeat_at, current_job = excluded.current_job,"
                " job_pgid = excluded.job_pgid"),
                (worker.id, worker.hostname, worker.pid, worker.started_at, worker.heartbeat_at,
                 worker.current_job, worker.job_pgid))

    @_guarded
    def worker_heartbeat(self, worker_id: str, now: int, current_job: str | None,
                         job_pgid: int | None) -> None:
        with self._cursor() as cur:
            cur.execute(self._q(
                "UPDATE {s}.workers SET heartbeat_at = %s, current_job = %s, job_pgid = %s"
                " WHERE id = %s"), (now, current_job, job_pgid, worker_id))

    @_guarded
    def unregister_worker(self, worker_id: str) -> None:
        with self._cursor() as cur:
            cur.execute(self._q("DELETE FROM {s}.workers WHERE id = %s"), (worker_id,))

    @_guarded
    def list_workers(self) -> list[WorkerInfo]:
        with self._cursor() as cur:
            rows = cur.execute(self._q(
                f"SELECT {_WORKER_COLUMNS} FROM {{s}}.workers ORDER BY started_at, id")
            ).fetchall()
        return [WorkerInfo(**dict(r)) for r in rows]

    @_guarded
    def prune_workers(self, heartbeat_before: int) -> int:
        with self._cursor() as cur:
            cur.execute(self._q("DELETE FROM {s}.workers WHERE heartbeat_at < %s"),
                        (heartbeat_before,))
            return cur.rowcount
