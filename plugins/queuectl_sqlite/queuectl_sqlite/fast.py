"""The light half of the SQLite backend.

What both the store (``store.py``) and the CLI's fast path need: the schema
version, opening a connection with the store's settings, and the job insert.
On top of that, :func:`open_fast` gives the fast path (see
``queuectl_core/fastpath.py``) the one write and the few reads that
``queuectl enqueue`` and ``queuectl status`` make. Nothing here imports the
core's models or pluggy: a CLI call that goes through this module costs
little more than starting Python and loading ``sqlite3``.
"""

from __future__ import annotations

import json
import os
import sqlite3

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

#: Version 1: the first release. Version 2: named queues (and pausing them),
#: cancellation, per-job timeout/cwd/env/retry, output tails on attempts,
#: attempt numbers over a job's whole history, purge.
SCHEMA_VERSION = 2

#: Database file, relative to QUEUECTL_HOME (the ``path`` option's default).
DEFAULT_PATH = "queue.db"

#: One new job; parameters as :func:`job_row` gives them.
INSERT_JOB_SQL = (
    "INSERT INTO jobs (id, command, state, attempts, max_retries, priority,"
    " run_at, created_at, updated_at, queue, timeout, cwd, env, retry)"
    " VALUES (?, ?, 'pending', 0, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)


def json_text(value: dict[str, Any] | None) -> str | None:
    """How the ``env`` and ``retry`` objects are stored."""
    if value is None:
        return None
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def job_row(job: dict[str, Any]) -> tuple[Any, ...]:
    """Parameters of :data:`INSERT_JOB_SQL` for a new job given by the
    fields of ``queuectl_core.models.NewJob``."""
    return (job["id"], job["command"], job["max_retries"], job["priority"], job["run_at"],
            job["created_at"], job["created_at"], job["queue"], job["timeout"], job["cwd"],
            json_text(job["env"]), json_text(job["retry"]))


def connect(path: str | os.PathLike[str], *, synchronous: str = "full",
            busy_timeout_ms: int = 30_000) -> sqlite3.Connection:
    """A connection in autocommit mode (transactions are explicit), WAL
    journal, the given durability and lock wait. Raises sqlite3.Error;
    RuntimeError when the file cannot be put in WAL mode."""
    conn = sqlite3.connect(path, timeout=busy_timeout_ms / 1000, isolation_level=None,
                           check_same_thread=False)
    try:
        conn.execute(f"PRAGMA busy_timeout = {int(busy_timeout_ms)}")
        mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
        if str(mode).lower() != "wal":
            raise RuntimeError(f"cannot switch to WAL mode ({mode})")
        conn.execute(f"PRAGMA synchronous = {'FULL' if synchronous == 'full' else 'NORMAL'}")
    except BaseException:
        conn.close()
        raise
    return conn


class FastSqlite:
    """The fast path's view of an existing, current SQLite store."""

    def __init__(self, conn: sqlite3.Connection, path: str) -> None:
        self.conn = conn
        self.path = path

    def describe(self) -> str:
        return f"sqlite {self.path}"

    def stored_settings(self) -> dict[str, Any]:
        return {k: json.loads(v) for k, v in self.conn.execute("SELECT key, value FROM settings")}

    def enqueue(self, job: dict[str, Any]) -> bool:
        """Store one new job in its own transaction; False (nothing stored)
        when its id is taken."""
        self.conn.execute("BEGIN IMMEDIATE")
        try:
            self.conn.execute(INSERT_JOB_SQL, job_row(job))
        except sqlite3.IntegrityError:
            self.conn.execute("ROLLBACK")
            return False
        except BaseException:
            self.conn.execute("ROLLBACK")
            raise
        self.conn.execute("COMMIT")
        return True

    def counts(self, queue: str | None = None) -> dict[str, int]:
        if queue is None:
            rows = self.conn.execute("SELECT state, count(*) FROM jobs GROUP BY state")
        else:
            rows = self.conn.execute(
                "SELECT state, count(*) FROM jobs WHERE queue = ? GROUP BY state", (queue,))
        return dict(rows.fetchall())

    def worker_heartbeats(self) -> list[int]:
        return [r[0] for r in self.conn.execute("SELECT heartbeat_at FROM workers")]

    def paused_queues(self) -> list[str]:
        return sorted(r[0] for r in self.conn.execute("SELECT queue FROM paused_queues"))

    def close(self) -> None:
        self.conn.close()


def open_fast(options: dict[str, Any] | None, home: str) -> FastSqlite | None:
    """The store of this home, if the fast path can use it as it is: the file
    exists and has the current schema (else None, and the full command
    creates or upgrades it). ``options`` are the validated plugin options
    as JSON (``SqliteOptions``), or None for the defaults."""
    opts = options or {}
    path = os.path.join(home, opts.get("path", DEFAULT_PATH))
    if os.path.normpath(path) != path or not os.path.isfile(path):  # describe() as the store's
        return None
    conn = connect(path, synchronous=opts.get("synchronous", "full"),
                   busy_timeout_ms=opts.get("busy_timeout_ms", 30_000))
    if conn.execute("PRAGMA user_version").fetchone()[0] != SCHEMA_VERSION:
        conn.close()
        return None
    return FastSqlite(conn, path)
