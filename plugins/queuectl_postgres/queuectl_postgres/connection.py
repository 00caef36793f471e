"""Connections to the server: their parameters, the text that names the
server without its password, errors mapped to queuectl's, reconnection,
fork safety, and the LISTEN connection that wakes idle workers.

A :class:`Session` is one store's working connection (autocommit; opened on
first use and again after it broke, each time checked by a ``prepare``
callback: the schema migration). A :class:`Listener` is its second
connection, which only LISTENs. Neither is ever used in another process
than the one that opened it. :func:`guarded` wraps a store method: a lost
or unreachable server raises TransientStorageError (and the next call
reconnects), any other database error a StorageError, both masked.

Every exchange with the server is bounded (:class:`BoundedConnection`): a
stalled connection (a paused network, a proxy that stopped forwarding, a
frozen server) gives up after the session's deadline, is dropped, and the
call raises TransientStorageError; workers narrow the deadline to a part of
their lease (``Storage.bound_calls``) so that they notice well before it ends.
"""

from __future__ import annotations

import functools
import logging
import os
import re
import select
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, Concatenate, ParamSpec, Protocol, TypeVar
from urllib.parse import quote

import psycopg
from psycopg.conninfo import conninfo_to_dict, make_conninfo
from psycopg.rows import DictRow, dict_row

from queuectl_core.errors import ConfigError, StorageError, TransientStorageError

from .dsn import mask_secrets

log = logging.getLogger("queuectl.postgres")

Conn = psycopg.Connection[DictRow]
P = ParamSpec("P")
R = TypeVar("R")

#: ``application_name`` of every connection, unless the DSN sets one.
APPLICATION_NAME = "queuectl"
DEFAULT_CONNECT_TIMEOUT_S = 5
#: Seconds one exchange with the server may take in a command (``enqueue``,
#: ``purge``...) before the connection counts as stalled; workers use less.
DEFAULT_CALL_TIMEOUT_S = 30.0
#: TCP keepalives (unless the DSN sets them): notice a silently dead peer (a
#: machine gone, a network cut) within about a minute instead of hanging on
#: it for hours.
KEEPALIVES = (("keepalives", "1"), ("keepalives_idle", "30"),
              ("keepalives_interval", "10"), ("keepalives_count", "3"))

#: Messages of connection failures that retrying will not fix.
_PERMANENT_CONNECT = re.compile(
    r"password authentication failed|authentication failed|no pg_hba\.conf entry"
    r"|does not exist|permission denied|no password supplied|invalid (?:connection|port|"
    r"sslmode|integer)|unsupported|certificate|could not translate host name",
    re.IGNORECASE,
)

#: SQLSTATE class 40, transaction rollback (serialization failure, deadlock):
#: the server undid the transaction; the connection is fine.
_ROLLED_BACK = "40"

#: Don't retry the LISTEN connection more often than this after it failed.
LISTEN_RETRY_S = 5.0
#: At most this many reads per drain.
_DRAIN_ROUNDS = 50


# ---------------------------------------------------------------- parameters

def connection_params(dsn: str, connect_timeout_s: int = DEFAULT_CONNECT_TIMEOUT_S,
                      application_name: str = APPLICATION_NAME) -> dict[str, Any]:
    """The libpq parameters of every connection a store opens: the DSN's,
    with queuectl's connect timeout (which wins over the DSN's), its
    application name, keepalives and TCP user timeout (which do not).
    Raises ConfigError, masked, when the DSN does not parse."""
    try:
        params = conninfo_to_dict(dsn)
    except psycopg.Error as exc:
        detail = "" if "pass" in dsn.lower() else f": {one_line(exc)}"
        raise ConfigError(mask_secrets(
            "the PostgreSQL DSN is not a valid connection string (use "
            f"postgresql://user@host:5432/dbname or key=value pairs){detail}"
        )) from None
    params["connect_timeout"] = str(connect_timeout_s)
    params.setdefault("application_name", application_name)
    for key, value in KEEPALIVES:
        params.setdefault(key, value)
    # Data sent and not acknowledged this long: the peer is gone.
    params.setdefault("tcp_user_timeout", str(int(DEFAULT_CALL_TIMEOUT_S * 1000)))
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


def channel_for(schema: str) -> str:
    """The LISTEN/NOTIFY channel of the queue in ``schema`` (a valid,
    lower-case identifier of at most 63 bytes)."""
    name = f"queuectl_{schema}"
    if len(name) <= 63:
        return name
    import hashlib  # only for very long schema names

    return "queuectl_" + hashlib.sha256(schema.encode()).hexdigest()[:32]


def one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__


def _close_quietly(conn: Conn | None, what: str) -> None:
    if conn is None:
        return
    try:
        conn.close()
    except Exception:  # a broken connection may fail to close cleanly
        log.debug("closing %s failed", what, exc_info=True)


# ---------------------------------------------------------------- deadlines

class BoundedConnection(psycopg.Connection[DictRow]):
    """A connection on which every exchange with the server (one statement,
    a commit, a chunk of COPY) gives up after ``deadline_s``: the socket is
    closed (the protocol's state is unknown), ``stalled`` is set, and the
    exchange raises OperationalError. psycopg's own bounded waits (a cancel,
    a notification wait) keep their timeouts."""

    deadline_s: float | None = None
    stalled = False

    def wait(self, gen: Any, *args: Any, **kwargs: Any) -> Any:
        deadline = self.deadline_s
        if deadline is None or len(args) > 1 or kwargs.get("timeout") is not None:
            return super().wait(gen, *args, **kwargs)
        kwargs["timeout"] = deadline
        started = time.monotonic()
        try:
            return super().wait(gen, *args, **kwargs)
        except psycopg.OperationalError:
            if time.monotonic() - started >= deadline:
                self.stalled = True
                self.pgconn.finish()
            raise


def _server_timeouts(conn: Conn, deadline_s: float | None) -> None:
    """Have the server end a session that sits in a transaction, silent,
    for twice the deadline (a client stalled mid-transaction would
    otherwise hold its row and advisory locks until TCP gives up)."""
    ms = 0 if deadline_s is None else max(10_000, int(deadline_s * 2000))
    conn.execute("SELECT set_config('idle_in_transaction_session_timeout', %s, false)",
                 (str(ms),))


# ---------------------------------------------------------------- the session

class Session:
    """One store's connections to the server at ``params``, for the queue in
    ``schema``. ``prepare(conn)`` runs on every new working connection."""

    def __init__(self, params: dict[str, Any], schema: str,
                 prepare: Callable[[Conn], None],
                 deadline_s: float | None = DEFAULT_CALL_TIMEOUT_S) -> None:
        password = params.get("password")
        self.secrets = [str(password)] if password else []
        self.conninfo = make_conninfo("", **params)
        self.where = display(params)
        self.schema = schema
        self.conn: BoundedConnection | None = None
        self.listener = Listener(self)
        self._prepare = prepare
        self._pid = os.getpid()
        #: Seconds one exchange with the server may take (None: unbounded).
        self.deadline_s = deadline_s
        self._connect_timeout_s = int(params.get("connect_timeout") or DEFAULT_CONNECT_TIMEOUT_S)

    def bound(self, deadline_s: float) -> None:
        """Narrow (or widen) the deadline of each exchange with the server,
        the connect timeout with it (a worker: a part of its lease)."""
        if deadline_s == self.deadline_s:
            return
        self.deadline_s = deadline_s
        timeout = max(2, min(self._connect_timeout_s, int(deadline_s)))
        self.conninfo = make_conninfo(self.conninfo, connect_timeout=str(timeout),
                                      tcp_user_timeout=str(int(deadline_s * 1000)))
        for conn in (self.conn, self.listener.conn):
            if conn is not None and not conn.closed:
                conn.deadline_s = deadline_s
        conn = self.conn
        if conn is not None and not conn.closed:
            try:
                _server_timeouts(conn, deadline_s)
            except psycopg.Error:  # the next call reconnects and sets it
                self.drop()

    def stalled(self) -> bool:
        """Whether the working connection gave up on a silent server."""
        return self.conn is not None and self.conn.stalled

    def new_connection(self) -> BoundedConnection:
        conn = BoundedConnection.connect(self.conninfo, autocommit=True, row_factory=dict_row)
        conn.deadline_s = self.deadline_s
        return conn

    def mask(self, text: str) -> str:
        return mask_secrets(text, self.secrets)

    def forget_after_fork(self) -> None:
        """Drop references to connections opened by the parent process,
        without closing them: closing would end the parent's sessions.
        (psycopg does not close a connection on garbage collection in
        another process than its own.)"""
        if self._pid != os.getpid():
            self.conn = None
            self.listener.forget()
            self._pid = os.getpid()

    def open(self) -> BoundedConnection:
        """A new autocommit connection; TransientStorageError when the server
        cannot be reached, StorageError when retrying will not help."""
        try:
            return self.new_connection()
        except psycopg.OperationalError as exc:
            message = one_line(exc)
            if _PERMANENT_CONNECT.search(message):
                raise StorageError(self.mask(
                    f"cannot connect to PostgreSQL {self.where}: {message}")) from None
            raise TransientStorageError(self.mask(
                f"cannot reach PostgreSQL {self.where}: {message}")) from None
        except psycopg.Error as exc:
            raise StorageError(self.mask(
                f"cannot connect to PostgreSQL {self.where}: {one_line(exc)}")) from None

    def connect(self) -> BoundedConnection:
        """The open working connection, (re)connecting (and preparing) if
        needed."""
        self.forget_after_fork()
        conn = self.conn
        if conn is not None and not conn.closed:
            return conn
        conn = self.open()
        try:
            _server_timeouts(conn, self.deadline_s)
            self._prepare(conn)
        except (psycopg.OperationalError, psycopg.InterfaceError) as exc:
            conn.close()
            what = (self.silence() if conn.stalled
                    else f"lost the connection while the schema was checked ({one_line(exc)})")
            raise TransientStorageError(self.mask(f"PostgreSQL {self.where} {what}")) from None
        except psycopg.Error as exc:
            conn.close()
            raise StorageError(self.mask(
                f"PostgreSQL {self.where}: cannot set up schema {self.schema!r}: "
                f"{one_line(exc)}")) from None
        except BaseException:
            conn.close()
            raise
        self.conn = conn
        return conn

    def silence(self) -> str:
        return (f"gave no answer within {self.deadline_s:g} s (a stalled connection or network, or "
                "an overloaded server); the connection was dropped")

    def drop(self) -> None:
        """Forget a (probably broken) connection; the next call reconnects."""
        self.forget_after_fork()
        conn, self.conn = self.conn, None
        _close_quietly(conn, "a broken connection")

    @contextmanager
    def transaction(self) -> Iterator[psycopg.Cursor[DictRow]]:
        """One transaction (rolled back on any error)."""
        conn = self.connect()
        with conn.transaction(), conn.cursor() as cur:
            yield cur

    def cursor(self) -> psycopg.Cursor[DictRow]:
        """A cursor for one autocommit statement (atomic on its own)."""
        return self.connect().cursor()

    def close(self) -> None:
        self.forget_after_fork()
        _close_quietly(self.conn, "a connection")
        self.conn = None
        self.listener.close()


class Listener:
    """The LISTEN connection of a session: opened on first use, closed when
    it breaks, opened again at most every :data:`LISTEN_RETRY_S` seconds."""

    def __init__(self, session: Session) -> None:
        self.session = session
        self.channel = channel_for(session.schema)
        self.conn: BoundedConnection | None = None
        self.retry_at = 0.0
        self._fatal = False

    def forget(self) -> None:
        self.conn = None
        self.retry_at = 0.0

    def fileno(self) -> int | None:
        """The LISTEN socket, connecting if needed; None while it cannot."""
        self.session.forget_after_fork()
        listen = self.conn
        if listen is not None and not listen.closed:
            return listen.fileno()
        if time.monotonic() < self.retry_at:
            return None
        listen = None
        try:
            listen = self.session.new_connection()
            self._fatal = False
            listen.add_notice_handler(self._on_notice)
            listen.execute(f'LISTEN "{self.channel}"')
        except psycopg.Error as exc:
            _close_quietly(listen, "the LISTEN connection")
            log.debug("%s", self.session.mask(
                f"cannot LISTEN on {self.session.where}: {one_line(exc)}"))
            self.retry_at = time.monotonic() + LISTEN_RETRY_S
            return None
        self.conn = listen
        return listen.fileno()

    def _on_notice(self, diag: psycopg.errors.Diagnostic) -> None:
        # A server that ends an idle session (pg_terminate_backend, a
        # shutdown) says so with a FATAL message, which libpq hands to the
        # notice handler; the end of the stream may only show later.
        if diag.severity_nonlocalized in ("FATAL", "PANIC"):
            self._fatal = True

    def drain(self) -> None:
        """Read the pending notifications, never blocking; close the
        connection if it broke (a dead socket stays readable: the caller
        must not spin on it)."""
        self.session.forget_after_fork()
        listen = self.conn
        if listen is None:
            return
        pgconn = listen.pgconn
        try:
            # libpq reads what the socket holds and returns. A terminated
            # backend sends a FATAL message (see _on_notice) and then closes;
            # read again while the socket stays readable, to see the end of
            # the stream too (bounded, in case notifications keep coming).
            for _ in range(_DRAIN_ROUNDS):
                pgconn.consume_input()
                while pgconn.notifies() is not None:
                    pass
                if self._fatal or pgconn.status != psycopg.pq.ConnStatus.OK:
                    raise psycopg.OperationalError("the LISTEN connection was lost")
                if not select.select([pgconn.socket], [], [], 0)[0]:
                    break
        except (psycopg.Error, OSError, ValueError):
            self.conn = None
            self.retry_at = time.monotonic() + LISTEN_RETRY_S
            _close_quietly(listen, "the LISTEN connection")

    def close(self) -> None:
        _close_quietly(self.conn, "the LISTEN connection")
        self.conn = None


# ---------------------------------------------------------------- errors

class HasSession(Protocol):
    @property
    def session(self) -> Session: ...


S = TypeVar("S", bound=HasSession)


def guarded(method: Callable[Concatenate[S, P], R]) -> Callable[Concatenate[S, P], R]:
    """Map driver errors to queuectl's: a lost or unreachable server is
    transient (the connection is dropped; the next call reconnects), and so
    is a transaction the server rolled back (deadlock, serialization); any
    other database error is a StorageError. Messages are masked."""

    def wrapper(self: S, /, *args: P.args, **kwargs: P.kwargs) -> R:
        session = self.session
        try:
            return method(self, *args, **kwargs)
        except (psycopg.OperationalError, psycopg.InterfaceError) as exc:
            if (exc.sqlstate or "").startswith(_ROLLED_BACK):
                raise TransientStorageError(session.mask(
                    f"PostgreSQL {session.where} rolled the transaction back "
                    f"({one_line(exc)}); nothing was changed, try again")) from None
            what = (session.silence() if session.stalled()
                    else f"is unreachable or the connection was lost ({one_line(exc)})")
            session.drop()
            raise TransientStorageError(session.mask(
                f"PostgreSQL {session.where} {what}; nothing was changed unless it was "
                "committed whole, and the next call reconnects"
            )) from None
        except psycopg.Error as exc:
            raise StorageError(session.mask(f"PostgreSQL {session.where}: {one_line(exc)}")
                               ) from None

    functools.update_wrapper(wrapper, method)
    return wrapper
