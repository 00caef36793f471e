"""PostgreSQL implementation of the storage seam.

Concurrency: the connection runs in autocommit mode; every state change
is either one statement (claim, complete, renew: atomic on their own) or
one explicit transaction. A claim locks the next due job with
``FOR UPDATE SKIP LOCKED``, so concurrent claimers on any number of
machines each take a different row without waiting for one another, and
opens the attempt in the same statement. Every change after a claim is
conditional on the claim's token (fencing), exactly like the SQLite store.

Changes that make work due (enqueue, import, a failure with a retry time,
a DLQ retry, recovered jobs) also ``pg_notify`` the queue's channel in
their transaction; :meth:`PostgresStorage.wakeup_fileno` gives idle workers
a socket that becomes readable on such news.

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
from urllib.parse import quote

import psycopg
from psycopg import errors as pg_errors
from psycopg.conninfo import conninfo_to_dict, make_conninfo
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
    Attempt,
    Claim,
    ExecResult,
    Job,
    JobState,
    NewJob,
    WorkerInfo,
)
from queuectl_core.storage import INTERRUPTED_ATTEMPT_ERROR, LOST_ATTEMPT_ERROR, Storage

from .dsn import mask_secrets

log = logging.getLogger("queuectl.postgres")

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
]


def schema_version() -> int:
    """The schema version this code writes (the last migration's)."""
    return MIGRATIONS[-1][0]


_CLAIMABLE = "state IN ('pending', 'failed')"
_JOB_FIELDS = Job.field_names()
_JOB_COLUMNS = ", ".join(_JOB_FIELDS)
_ATTEMPT_FIELDS = Attempt.field_names()
_ATTEMPT_COLUMNS = ", ".join(_ATTEMPT_FIELDS)
_WORKER_COLUMNS = ", ".join(WorkerInfo.field_names())

#: The next due job, in claim order (parameter ``now``). Walks the partial
#: index ``jobs_ready`` and stops at the first row it can lock.
NEXT_DUE_SQL = (
    f"SELECT seq FROM {{s}}.jobs WHERE {_CLAIMABLE} AND run_at <= %(now)s"
    " ORDER BY priority DESC, run_at, seq LIMIT 1 FOR UPDATE SKIP LOCKED"
)

_CLAIM_SQL = f"""
WITH next AS ({NEXT_DUE_SQL}),
claimed AS (
    UPDATE {{s}}.jobs AS j
       SET state = 'processing', attempts = j.attempts + 1, worker_id = %(worker)s,
           claim_token = %(token)s, lease_expires_at = %(lease)s, started_at = %(now)s,
           finished_at = NULL, updated_at = %(now)s
      FROM next
     WHERE j.seq = next.seq
 RETURNING {", ".join("j." + f for f in _JOB_FIELDS)}
),
opened AS (
    INSERT INTO {{s}}.attempts (job_id, number, claim_token, worker_id, started_at, outcome)
    SELECT id, attempts, %(token)s, %(worker)s, %(now)s, 'running' FROM claimed
)
SELECT * FROM claimed
"""

_FINISH_SQL = f"""
WITH done AS (
    UPDATE {{s}}.jobs
       SET state = %(state)s, run_at = COALESCE(%(retry_at)s::bigint, run_at),
           last_error = %(last_error)s, exit_code = %(exit_code)s, finished_at = %(now)s,
           updated_at = %(now)s, claim_token = NULL, lease_expires_at = NULL
     WHERE id = %(id)s AND state = 'processing' AND claim_token = %(token)s
 RETURNING {_JOB_COLUMNS}
),
closed AS (
    UPDATE {{s}}.attempts AS a
       SET finished_at = %(now)s, outcome = %(outcome)s, exit_code = %(exit_code)s,
           signal = %(signal)s, error = %(error)s
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
       SET finished_at = %(now)s, outcome = %(outcome)s, error = released.last_error
      FROM released
     WHERE a.claim_token = released.old_token
)
SELECT * FROM released ORDER BY seq
"""

_CHARGED = "state = CASE WHEN j.attempts > j.max_retries THEN 'dead' ELSE 'failed' END"
_UNCHARGED = ("attempts = j.attempts - 1,"
              " state = CASE WHEN j.attempts <= 1 THEN 'pending' ELSE 'failed' END")

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
    return Attempt(**{k: row[k] for k in _ATTEMPT_FIELDS})


def _text(value: str | None) -> str | None:
    """PostgreSQL text holds neither NUL nor lone surrogates; error texts
    (from commands and exceptions) may contain them."""
    if value is None:
        return None
    return value.replace("\x00", "\\0").encode("utf-8", "replace").decode("utf-8")


def _advisory_key(schema: str) -> int:
    digest = hashlib.sha256(f"queuectl-migrate:{schema}".encode()).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


def channel_for(schema: str) -> str:
    """The LISTEN/NOTIFY channel of the queue in ``schema`` (a valid,
    lower-case identifier of at most 63 bytes)."""
    name = f"queuectl_{schema}"
    if len(name) <= 63:
        return name
    return "queuectl_" + hashlib.sha256(schema.encode()).hexdigest()[:32]


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
            params = conninfo_to_dict(dsn)
        except psycopg.Error as exc:
            detail = "" if "pass" in dsn.lower() else f": {_one_line(exc)}"
            raise ConfigError(mask_secrets(
                "the PostgreSQL DSN is not a valid connection string (use "
                f"postgresql://user@host:5432/dbname or key=value pairs){detail}"
            )) from None
        password = params.get("password")
        self._secrets = [str(password)] if password else []
        params["connect_timeout"] = str(connect_timeout_s)
        params.setdefault("application_name", application_name)
        # Notice a silently dead peer (a machine gone, a network cut) within
        # about a minute instead of hanging on it for hours.
        for key, value in (("keepalives", "1"), ("keepalives_idle", "30"),
                           ("keepalives_interval", "10"), ("keepalives_count", "3")):
            params.setdefault(key, value)
        self._conninfo = make_conninfo("", **params)
        self.schema = schema
        self.channel = channel_for(schema)
        self._where = self._display(params)
        self._sql_cache: dict[str, str] = {}
        self._conn: Conn | None = None
        self._listen: Conn | None = None
        self._listen_retry_at = 0.0
        self._listen_fatal = False
        self._pid = os.getpid()
        self._connect()

    # ---------------------------------------------------------- plumbing
    @staticmethod
    def _display(params: dict[str, Any]) -> str:
        """``postgresql://user@host:port/db`` without the password."""
        user = params.get("user")
        host = str(params.get("host") or params.get("hostaddr") or "")
        if "/" in host:
            host = quote(host, safe="")
        port = params.get("port")
        db = params.get("dbname") or ""
        auth = f"{quote(str(user), safe='')}@" if user else ""
        return f"postgresql://{auth}{host}{f':{port}' if port else ''}/{db}"

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
        return f"postgres {self._where} (schema {self.schema})"

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
        rows = [(j.id, j.command, j.max_retries, j.priority, j.run_at, j.created_at,
                 j.created_at) for j in jobs]
        try:
            with self._tx() as cur:
                cur.executemany(self._q(
                    "INSERT INTO {s}.jobs (id, command, state, attempts, max_retries, priority,"
                    " run_at, created_at, updated_at) VALUES (%s, %s, 'pending', 0, %s, %s, %s,"
                    " %s, %s)"), rows)
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
        marks = ", ".join(["%s"] * len(_JOB_FIELDS))
        job_rows: list[list[Any]] = []
        attempt_rows: list[tuple[Any, ...]] = []
        for job, history in records:
            data = job.as_dict()
            data["state"] = job.state.value
            data["last_error"] = _text(job.last_error)
            job_rows.append([data[k] for k in _JOB_FIELDS])
            attempt_rows.extend(
                (a.job_id, a.number, uuid.uuid4().hex, a.worker_id, a.started_at,
                 a.finished_at, a.outcome, a.exit_code, a.signal, _text(a.error))
                for a in history)
        try:
            with self._tx() as cur:
                cur.executemany(
                    self._q(f"INSERT INTO {{s}}.jobs ({_JOB_COLUMNS}) VALUES ({marks})"), job_rows)
                if attempt_rows:
                    cur.executemany(self._q(
                        "INSERT INTO {s}.attempts (job_id, number, claim_token, worker_id,"
                        " started_at, finished_at, outcome, exit_code, signal, error)"
                        " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s)"), attempt_rows)
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
    def list_jobs(self, state: JobState | None = None, limit: int | None = None) -> list[Job]:
        sql = f"SELECT {_JOB_COLUMNS} FROM {{s}}.jobs"
        params: list[Any] = []
        if state is not None:
            sql += " WHERE state = %s"
            params.append(state.value)
        sql += " ORDER BY seq"
        if limit is not None:
            sql += " LIMIT %s"
            params.append(limit)
        with self._cursor() as cur:
            rows = cur.execute(self._q(sql), params).fetchall()
        return [_job(r) for r in rows]

    @_guarded
    def counts(self) -> dict[JobState, int]:
        counts = dict.fromkeys(JobState, 0)
        with self._cursor() as cur:
            for row in cur.execute(self._q(
                    "SELECT state, count(*) AS n FROM {s}.jobs GROUP BY state")):
                counts[JobState(row["state"])] = int(row["n"])
        return counts

    @_guarded
    def next_run_at(self) -> int | None:
        with self._cursor() as cur:
            row = cur.execute(self._q(
                f"SELECT min(run_at) AS t FROM {{s}}.jobs WHERE {_CLAIMABLE}")).fetchone()
        return None if row is None or row["t"] is None else int(row["t"])

    # ---------------------------------------------------------- claims
    @_guarded
    def claim(self, worker_id: str, now: int, lease_ms: int) -> Claim | None:
        # A busy worker claims without ever sleeping on the wake-up socket:
        # read it here (and in renew) so that it never fills up, which would
        # stall the server's notification queue. Nothing is lost: the claim
        # below sees every change whose notification is discarded.
        self.drain_wakeups()
        token = uuid.uuid4().hex
        lease = now + lease_ms
        with self._cursor() as cur:  # one statement: the claim and its attempt, atomically
            row = cur.execute(self._q(_CLAIM_SQL), {
                "now": now, "worker": worker_id, "token": token, "lease": lease,
            }).fetchone()
        if row is None:
            return None
        job = _job(row)
        return Claim(job=job, token=token, worker_id=worker_id, attempt=job.attempts,
                     lease_expires_at=lease)

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
        params = {
            "state": state.value, "retry_at": retry_at,
            "last_error": None if state is JobState.COMPLETED else _text(result.error),
            "exit_code": result.exit_code, "now": now, "id": claim.job.id,
            "token": claim.token, "outcome": outcome, "signal": result.signal,
            "error": _text(result.error),
        }
        if retry_at is None:
            with self._cursor() as cur:  # one statement: job and attempt together
                row = cur.execute(self._q(_FINISH_SQL), params).fetchone()
        else:
            with self._tx() as cur:
                row = cur.execute(self._q(_FINISH_SQL), params).fetchone()
                if row is not None:
                    self._notify(cur)
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
            if rows:
                self._notify(cur)
        return [_job(r) for r in rows]

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
