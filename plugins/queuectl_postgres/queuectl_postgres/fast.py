"""The light half of the PostgreSQL backend.

What both the store (``store.py``) and the CLI's fast path need: the schema
version, the connection parameters, the text ``describe()`` shows, the
LISTEN/NOTIFY channel and the job insert. On top of that, :func:`open_fast`
gives the fast path (see ``queuectl_core/fastpath.py``) the one write and
the few reads that ``queuectl enqueue`` and ``queuectl status`` make.

Nothing here imports the core's models, pydantic, pluggy or ``store.py``:
a CLI call that goes through this module costs starting Python, importing
psycopg (most of it), one connection and a few statements.
"""

from __future__ import annotations

import json
import time
from urllib.parse import quote

import psycopg
from psycopg import errors as pg_errors
from psycopg.conninfo import conninfo_to_dict, make_conninfo
from psycopg.types.json import Json

from queuectl_core.errors import ConfigError

from .dsn import resolve_dsn

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

    from psycopg.rows import TupleRow

#: The schema version this code writes. ``store.MIGRATIONS`` is the source of
#: the schema itself; a unit test checks that its last step has this number
#: (importing ``store`` here is what the fast path avoids).
SCHEMA_VERSION = 2

#: Defaults of ``PostgresOptions`` (``options.py``; a unit test compares).
DEFAULT_SCHEMA = "queuectl"
DEFAULT_CONNECT_TIMEOUT_S = 5
#: The fields of ``PostgresOptions`` as the fast-path cache holds them (its
#: JSON dump, by attribute name). Options with any other field decline: an
#: option added to the model and not handled here must not be ignored.
OPTION_FIELDS = frozenset({"dsn", "schema_name", "connect_timeout_s"})
#: ``application_name`` of every connection, unless the DSN sets one.
APPLICATION_NAME = "queuectl"
#: TCP keepalives (unless the DSN sets them): notice a silently dead peer (a
#: machine gone, a network cut) within about a minute instead of hanging on
#: it for hours.
KEEPALIVES = (("keepalives", "1"), ("keepalives_idle", "30"),
              ("keepalives_interval", "10"), ("keepalives_count", "3"))

#: One new job (``{s}``: the quoted schema name); parameters as
#: :func:`job_row` gives them.
INSERT_JOB_SQL = (
    "INSERT INTO {s}.jobs (id, command, state, attempts, max_retries, priority,"
    " run_at, created_at, updated_at, queue, timeout, cwd, env, retry)"
    " VALUES (%s, %s, 'pending', 0, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)"
)

#: The fast path's enqueue: the insert and the wake-up of idle workers in one
#: statement, so one transaction and one round trip. The notification is
#: delivered only if the insert commits; a duplicate id stores nothing and
#: sends nothing. (Parameters: :func:`job_row`, then the channel.)
_ENQUEUE_SQL = (f"WITH new AS ({INSERT_JOB_SQL} RETURNING 1)"
                " SELECT pg_notify(%s, '') FROM new")


#: A connection the fast path waited for in vain, in this process:
#: ``(conninfo, error)`` (see :func:`failed_connection`).
_failed: tuple[str, psycopg.OperationalError] | None = None
#: A failed connection that took this long (seconds) is not tried again by
#: the full command: the server did not answer, rather than refused.
SLOW_FAILURE_S = 1.0


def failed_connection(conninfo: str) -> psycopg.OperationalError | None:
    """The error of this process's fast-path connection to ``conninfo``, if
    it failed after waiting :data:`SLOW_FAILURE_S` or more; once. The CLI
    runs the full command in the same process when the fast path declines:
    its store reports this error instead of waiting for the same timeout
    again. A quick failure (refused, bad password) is tried again: it costs
    nothing, and the full command's own error message is the reference."""
    global _failed
    failed, _failed = _failed, None
    if failed is not None and failed[0] == conninfo:
        return failed[1]
    return None


def json_value(value: dict[str, Any] | None) -> Json | None:
    """A dict for a ``json`` column (kept as written: key order and all)."""
    return None if value is None else Json(value)


def job_row(job: dict[str, Any]) -> tuple[Any, ...]:
    """Parameters of :data:`INSERT_JOB_SQL` for a new job given by the
    fields of ``queuectl_core.models.NewJob``."""
    return (job["id"], job["command"], job["max_retries"], job["priority"], job["run_at"],
            job["created_at"], job["created_at"], job["queue"], job["timeout"], job["cwd"],
            json_value(job["env"]), json_value(job["retry"]))


def quoted(schema: str) -> str:
    """``schema`` as an SQL identifier (the options allow only names that
    need no escaping; a doubled quote keeps any other one harmless)."""
    return '"' + schema.replace('"', '""') + '"'


def channel_for(schema: str) -> str:
    """The LISTEN/NOTIFY channel of the queue in ``schema`` (a valid,
    lower-case identifier of at most 63 bytes)."""
    name = f"queuectl_{schema}"
    if len(name) <= 63:
        return name
    import hashlib  # only for very long schema names

    return "queuectl_" + hashlib.sha256(schema.encode()).hexdigest()[:32]


def connection_params(dsn: str, connect_timeout_s: int = DEFAULT_CONNECT_TIMEOUT_S,
                      application_name: str = APPLICATION_NAME) -> dict[str, Any]:
    """The libpq parameters of every connection a store opens: the DSN's,
    with queuectl's connect timeout (which wins over the DSN's), its
    application name and keepalives (which do not). Raises psycopg.Error
    when the DSN does not parse (its message may quote the DSN: mask it)."""
    params = conninfo_to_dict(dsn)
    params["connect_timeout"] = str(connect_timeout_s)
    params.setdefault("application_name", application_name)
    for key, value in KEEPALIVES:
        params.setdefault(key, value)
    return params


def display(params: dict[str, Any]) -> str:
    """``postgresql://user@host:port/db`` without the password."""
    user = params.get("user")
    host = str(params.get("host") or params.get("hostaddr") or "")
    if "/" in host:
        host = quote(host, safe="")
    port = params.get("port")
    db = params.get("dbname") or ""
    auth = f"{quote(str(user), safe='')}@" if user else ""
    return f"postgresql://{auth}{host}{f':{port}' if port else ''}/{db}"


def describe(params: dict[str, Any], schema: str) -> str:
    """What the store's ``describe()`` shows (``status``, ``worker start``)."""
    return f"postgres {display(params)} (schema {schema})"


class FastPostgres:
    """The fast path's view of an existing, current schema, over one
    autocommit connection (each statement is its own transaction)."""

    def __init__(self, conn: psycopg.Connection[TupleRow], schema: str,
                 description: str) -> None:
        self.conn = conn
        self.schema = schema
        self.channel = channel_for(schema)
        self.description = description

    def _q(self, template: str) -> str:
        return template.replace("{s}", quoted(self.schema))

    def describe(self) -> str:
        return self.description

    def stored_settings(self) -> dict[str, Any]:
        rows = self.conn.execute(self._q("SELECT key, value FROM {s}.settings")).fetchall()
        return {str(key): json.loads(value) for key, value in rows}

    def enqueue(self, job: dict[str, Any]) -> bool:
        """Store one new job and wake idle workers, in one statement; False
        (nothing stored, nobody woken) when its id is taken."""
        try:
            self.conn.execute(self._q(_ENQUEUE_SQL), (*job_row(job), self.channel))
        except pg_errors.UniqueViolation:
            return False
        return True

    def counts(self, queue: str | None = None) -> dict[str, int]:
        if queue is None:
            cur = self.conn.execute(
                self._q("SELECT state, count(*) FROM {s}.jobs GROUP BY state"))
        else:
            cur = self.conn.execute(
                self._q("SELECT state, count(*) FROM {s}.jobs WHERE queue = %s GROUP BY state"),
                (queue,))
        return {str(state): int(n) for state, n in cur.fetchall()}

    def worker_heartbeats(self) -> list[int]:
        rows = self.conn.execute(self._q("SELECT heartbeat_at FROM {s}.workers")).fetchall()
        return [int(r[0]) for r in rows]

    def paused_queues(self) -> list[str]:
        rows = self.conn.execute(self._q("SELECT queue FROM {s}.paused_queues")).fetchall()
        return sorted(str(r[0]) for r in rows)

    def close(self) -> None:
        self.conn.close()


def open_fast(options: dict[str, Any] | None, home: str) -> FastPostgres | None:
    """The store of these options, if the fast path can use it as it is: the
    DSN resolves and parses, the server answers and the schema has the
    current version (else None, and the full command reports the problem,
    or creates or upgrades the schema). ``options`` are the validated
    ``PostgresOptions`` as JSON (attribute names: ``schema_name``), or None
    for the defaults; ``home`` is not used (the queue is in the database)."""
    global _failed
    if options is None:
        dsn, schema, timeout = None, DEFAULT_SCHEMA, DEFAULT_CONNECT_TIMEOUT_S
    elif set(options) == OPTION_FIELDS:
        dsn, schema, timeout = (options["dsn"], options["schema_name"],
                                options["connect_timeout_s"])
    else:
        return None  # another version of the options: not sure what they mean
    if type(schema) is not str or type(timeout) is not int:
        return None
    try:
        params = connection_params(resolve_dsn(dsn), timeout)
    except (ConfigError, psycopg.Error):
        return None  # no DSN, or one that does not parse: the full command says so
    conninfo = make_conninfo("", **params)
    started = time.monotonic()
    try:
        conn = psycopg.connect(conninfo, autocommit=True)
    except psycopg.OperationalError as exc:
        # Unreachable, refused, wrong password...: the full command reports
        # it (its message, masked, has one source), and connects again
        # unless this one waited in vain (failed_connection).
        if time.monotonic() - started >= SLOW_FAILURE_S:
            _failed = (conninfo, exc)
        return None
    except psycopg.Error:
        return None
    try:
        row = conn.execute(
            f"SELECT value FROM {quoted(schema)}.meta WHERE key = 'schema_version'").fetchone()
    except psycopg.Error:  # no schema (or meta table) yet, no privileges...
        row = None
    if row is None or row[0] != str(SCHEMA_VERSION):
        conn.close()
        return None
    return FastPostgres(conn, schema, describe(params, schema))
