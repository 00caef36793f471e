"""The SQLite store's schema, its versions and the upgrades between them."""

from __future__ import annotations

import contextlib
import os
import sqlite3

from .damage import Connection

#: Version 1: the first release. Version 2: named queues (and pausing them),
#: cancellation, per-job timeout/cwd/env/retry, output tails on attempts,
#: attempt numbers over a job's whole history, purge. Version 3: jobs that
#: run after others (``waiting``, ``skipped``), concurrency keys, unique keys.
SCHEMA_VERSION = 3

CLAIMABLE = "state IN ('pending', 'failed')"
FINISHED = "state IN ('completed', 'dead', 'cancelled', 'skipped')"
UNFINISHED = "state IN ('pending', 'waiting', 'processing', 'failed')"
#: When a finished job finished, for ``purge`` (imported jobs may lack
#: ``finished_at``). Queries must spell it exactly so to use jobs_finished.
DONE_AT = "coalesce(finished_at, updated_at)"

#: Indexes (and the paused queues) of schema version 2: a new store and the
#: 1 -> 2 upgrade both run these. Partial indexes hold only the rows their
#: queries can want, so finished jobs piling up slow neither claims,
#: ``next_run_at`` nor a retention purge. Queries name them with INDEXED BY:
#: without statistics the planner could pick jobs_state and sort every
#: claimable job on each claim.
_V2_OBJECTS = f"""
CREATE INDEX IF NOT EXISTS jobs_ready ON jobs (queue, priority DESC, run_at, seq)
    WHERE {CLAIMABLE};
CREATE INDEX IF NOT EXISTS jobs_due ON jobs (queue, run_at) WHERE {CLAIMABLE};
CREATE INDEX IF NOT EXISTS jobs_leases ON jobs (lease_expires_at) WHERE state = 'processing';
CREATE INDEX IF NOT EXISTS jobs_state ON jobs (state, seq);
CREATE INDEX IF NOT EXISTS attempts_job ON attempts (job_id, rowid);
CREATE TABLE IF NOT EXISTS paused_queues (queue TEXT PRIMARY KEY) WITHOUT ROWID;
"""

#: Version 3: the edges of the dependency graph (children by parent, for the
#: release of a parent's children; by child, for a purge), the index that
#: keeps unique keys unique among unfinished jobs, the running jobs by
#: concurrency key (claims count them), and jobs_finished with ``skipped``.
_V3_OBJECTS = f"""
CREATE TABLE IF NOT EXISTS job_parents (
    parent_id TEXT NOT NULL,
    child_id  TEXT NOT NULL,
    PRIMARY KEY (parent_id, child_id)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS job_parents_child ON job_parents (child_id);
CREATE UNIQUE INDEX IF NOT EXISTS jobs_unique ON jobs (unique_key)
    WHERE unique_key IS NOT NULL AND {UNFINISHED};
CREATE INDEX IF NOT EXISTS jobs_keyed_running ON jobs (concurrency_key)
    WHERE concurrency_key IS NOT NULL AND state = 'processing';
CREATE INDEX IF NOT EXISTS jobs_finished ON jobs (state, {DONE_AT}, seq) WHERE {FINISHED};
"""

#: A new store. The columns added in version 2 come last, in the order the
#: upgrade from version 1 adds them, so both give the same tables.
SCHEMA = """
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
    cancel_requested_at INTEGER,
    after            TEXT,
    after_mode       TEXT,
    concurrency_key  TEXT,
    unique_key       TEXT,
    waiting_on       INTEGER NOT NULL DEFAULT 0,
    dependents       INTEGER NOT NULL DEFAULT 0
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
""" + _V2_OBJECTS + _V3_OBJECTS

#: In-place upgrades, by the version they start from; each runs inside the
#: opening transaction, with the version bump. ``ALTER TABLE ... ADD COLUMN``
#: rewrites no rows; only the new and rebuilt indexes read the table.
UPGRADES: dict[int, str] = {
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
    2: """
ALTER TABLE jobs ADD COLUMN after TEXT;
ALTER TABLE jobs ADD COLUMN after_mode TEXT;
ALTER TABLE jobs ADD COLUMN concurrency_key TEXT;
ALTER TABLE jobs ADD COLUMN unique_key TEXT;
ALTER TABLE jobs ADD COLUMN waiting_on INTEGER NOT NULL DEFAULT 0;
ALTER TABLE jobs ADD COLUMN dependents INTEGER NOT NULL DEFAULT 0;
DROP INDEX IF EXISTS jobs_finished;
""" + _V3_OBJECTS,
}


#: Recurring schedules (queuectl_core/schedules.py), added without a version
#: bump: ensure_schedule_objects creates them in any version-2 store when it
#: opens. ``schedules.doc`` is the schedule's JSON document; ``version`` and
#: ``next_run_at`` are its columns too (fencing, the next wake-up). A firing
#: is unique on (schedule, tick, manual): the tick cannot be fired twice.
SCHEDULE_OBJECTS = """
ALTER TABLE jobs ADD COLUMN schedule TEXT;
ALTER TABLE jobs ADD COLUMN scheduled_for INTEGER;
CREATE INDEX IF NOT EXISTS jobs_schedule ON jobs (schedule, seq) WHERE schedule IS NOT NULL;
CREATE TABLE IF NOT EXISTS schedules (
    name        TEXT PRIMARY KEY,
    version     INTEGER NOT NULL,
    next_run_at INTEGER NOT NULL,
    doc         TEXT NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS schedule_firings (
    schedule TEXT NOT NULL,
    tick     INTEGER NOT NULL,
    manual   INTEGER NOT NULL,
    outcome  TEXT NOT NULL,
    job_id   TEXT,
    at       INTEGER NOT NULL,
    PRIMARY KEY (schedule, tick, manual)
) WITHOUT ROWID;
"""
#: True when the schedule objects exist (one read on every open).
HAS_SCHEDULE_OBJECTS = """
SELECT (SELECT count(*) FROM pragma_table_info('jobs') WHERE name = 'scheduled_for')
     + (SELECT count(*) FROM sqlite_master WHERE name = 'schedule_firings')
"""


def ensure_schedule_objects(conn: sqlite3.Connection) -> None:
    """Inside the caller's write transaction: add what schedules need."""
    if conn.execute(HAS_SCHEDULE_OBJECTS).fetchone()[0] == 2:
        return
    has_columns = conn.execute(
        "SELECT count(*) FROM pragma_table_info('jobs') WHERE name = 'scheduled_for'"
    ).fetchone()[0]
    for statement in SCHEDULE_OBJECTS.split(";"):
        if statement.strip() and not (has_columns and "ADD COLUMN" in statement):
            conn.execute(statement)


#: Objects the dashboard and ``status`` read, created when missing in any
#: store that opens (not versioned; each statement is idempotent):
#: ``job_counts``, the number of jobs per queue and state, kept in the same
#: transaction as every write, so ``status`` and the overview cost the same
#: at a million jobs as at none (SQLite has one writer at a time: no row of
#: it is a point of contention): by triggers on updates and deletes, and by
#: the store's ``insert`` itself, one row per queue and state of the batch
#: (:data:`COUNT_NEW`: a trigger's upsert per row slowed bulk enqueues by a
#: third); and an index of attempts by when they finished (``stats``'
#: window). The table is filled once, in the transaction that creates it.
COUNTS_TRIGGERS = "job_counts_update"
#: What ``insert`` adds to the counts: (queue, state, number of new jobs).
COUNT_NEW = ("INSERT INTO job_counts (queue, state, n) VALUES (?, ?, ?)"
             " ON CONFLICT (queue, state) DO UPDATE SET n = n + excluded.n")
VIEW_OBJECTS = (
    "CREATE TABLE IF NOT EXISTS job_counts (queue TEXT NOT NULL, state TEXT NOT NULL,"
    " n INTEGER NOT NULL, PRIMARY KEY (queue, state)) WITHOUT ROWID",
    "INSERT INTO job_counts (queue, state, n)"
    " SELECT queue, state, count(*) FROM jobs WHERE true GROUP BY queue, state"
    " ON CONFLICT (queue, state) DO UPDATE SET n = excluded.n",
    """CREATE TRIGGER IF NOT EXISTS job_counts_delete AFTER DELETE ON jobs BEGIN
    UPDATE job_counts SET n = n - 1 WHERE queue = OLD.queue AND state = OLD.state;
END""",
    f"""CREATE TRIGGER IF NOT EXISTS {COUNTS_TRIGGERS} AFTER UPDATE OF state, queue ON jobs
    WHEN OLD.state IS NOT NEW.state OR OLD.queue IS NOT NEW.queue BEGIN
    UPDATE job_counts SET n = n - 1 WHERE queue = OLD.queue AND state = OLD.state;
    INSERT INTO job_counts (queue, state, n) VALUES (NEW.queue, NEW.state, 1)
        ON CONFLICT (queue, state) DO UPDATE SET n = n + 1;
END""",
    "CREATE INDEX IF NOT EXISTS attempts_finished ON attempts (finished_at)",
)


def has_view_objects(conn: sqlite3.Connection) -> bool:
    """Are the :data:`VIEW_OBJECTS` there (the last one created is)?"""
    return conn.execute("SELECT 1 FROM sqlite_master WHERE type = 'index'"
                        " AND name = 'attempts_finished'").fetchone() is not None


def create_view_objects(conn: sqlite3.Connection) -> None:
    """Inside the caller's write transaction: create the view objects and
    fill the counts, unless another process did it meanwhile."""
    if not has_view_objects(conn):
        for statement in VIEW_OBJECTS:
            conn.execute(statement)


def run_script(conn: sqlite3.Connection, script: str) -> None:
    """Run ``;``-separated statements one by one (``executescript`` would
    commit the open transaction first)."""
    for statement in script.split(";"):
        if statement.strip():
            conn.execute(statement)


def create_or_upgrade(conn: sqlite3.Connection, version: int) -> None:
    """Inside the caller's write transaction: bring a store at ``version``
    (0: a new file) to SCHEMA_VERSION."""
    if version == 0:
        run_script(conn, SCHEMA)
    else:
        for step in range(version, SCHEMA_VERSION):
            run_script(conn, UPGRADES[step])
    ensure_schedule_objects(conn)
    conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")


def connect(path: str, *, synchronous: str = "full",
            busy_timeout_ms: int = 30_000) -> sqlite3.Connection:
    """A connection in autocommit mode (transactions are explicit), WAL
    journal, the given durability and lock wait. Raises sqlite3.Error;
    RuntimeError when the file cannot be put in WAL mode."""
    conn = sqlite3.connect(path, timeout=busy_timeout_ms / 1000, isolation_level=None,
                           check_same_thread=False, factory=Connection)
    conn.path = path  # for the message about a damaged file
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


def read_only_reason(path: str, exc: sqlite3.DatabaseError) -> str | None:
    """What to say when SQLite finds the database read-only although the
    file opened for writing: the directory, where SQLite must create
    ``-wal`` and ``-shm`` files beside it (every command, reads too), is not
    writable. None for any other error."""
    if getattr(exc, "sqlite_errorcode", 0) & 0xFF != sqlite3.SQLITE_READONLY:
        return None
    directory = os.path.dirname(path) or "."
    name = os.path.basename(path)
    why = "Permission denied"
    with contextlib.suppress(OSError):
        if os.statvfs(directory).f_flag & os.ST_RDONLY:
            why = "Read-only file system"
    return (f"cannot write in {directory}: {why} (SQLite keeps {name}-wal and {name}-shm "
            "next to the database, for reads too)")
