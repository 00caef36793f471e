"""The tables, as a list of versioned migrations, and the upgrade that a
store runs on each new connection (:func:`migrate`)."""

from __future__ import annotations

import hashlib
import logging

from queuectl_core.errors import StorageError

from .connection import Conn
from .sql import quoted

log = logging.getLogger("queuectl.postgres")

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
    (3, """
-- Jobs that run after others (waiting, skipped), concurrency keys, unique keys.
ALTER TABLE {s}.jobs
    ADD COLUMN after           json,
    ADD COLUMN after_mode      text,
    ADD COLUMN concurrency_key text,
    ADD COLUMN unique_key      text,
    ADD COLUMN waiting_on      integer NOT NULL DEFAULT 0,
    ADD COLUMN dependents      integer NOT NULL DEFAULT 0,
    DROP CONSTRAINT jobs_state_check,
    ADD CONSTRAINT jobs_state_check CHECK (
        state IN ('pending', 'processing', 'completed', 'failed', 'dead', 'cancelled',
                  'waiting', 'skipped'));
-- The dependency graph's edges: children by parent (a parent's release),
-- parents by child (a deletion).
CREATE TABLE {s}.job_parents (
    parent_id text NOT NULL,
    child_id  text NOT NULL,
    PRIMARY KEY (parent_id, child_id)
);
CREATE INDEX job_parents_child ON {s}.job_parents (child_id, parent_id);
-- No two unfinished jobs share a unique key.
CREATE UNIQUE INDEX jobs_unique ON {s}.jobs (unique_key)
    WHERE unique_key IS NOT NULL AND state IN ('pending', 'waiting', 'processing', 'failed');
-- Claims count the running jobs of a key, and find the next job of a key.
CREATE INDEX jobs_keyed_running ON {s}.jobs (concurrency_key)
    WHERE concurrency_key IS NOT NULL AND state = 'processing';
CREATE INDEX jobs_keyed_ready ON {s}.jobs (concurrency_key, priority DESC, run_at, seq)
    WHERE concurrency_key IS NOT NULL AND state IN ('pending', 'failed');
-- Retention sweeps: skipped jobs are finished too.
DROP INDEX {s}.jobs_finished;
CREATE INDEX jobs_finished ON {s}.jobs ((COALESCE(finished_at, updated_at)), seq)
    WHERE state IN ('completed', 'dead', 'cancelled', 'skipped');
"""),
]


#: Recurring schedules (queuectl_core/schedules.py), added without a version
#: bump: ensure_schedule_objects creates them in a schema at version 2 when
#: a connection opens. ``doc`` is the schedule's JSON document; ``version``
#: fences its changes. A firing is unique on (schedule, tick, manual).
SCHEDULE_DDL = """
ALTER TABLE {s}.jobs
    ADD COLUMN IF NOT EXISTS schedule      text,
    ADD COLUMN IF NOT EXISTS scheduled_for bigint;
CREATE INDEX IF NOT EXISTS jobs_schedule ON {s}.jobs (schedule, seq)
    WHERE schedule IS NOT NULL;
CREATE TABLE IF NOT EXISTS {s}.schedules (
    name        text PRIMARY KEY,
    version     bigint NOT NULL,
    next_run_at bigint NOT NULL,
    doc         text NOT NULL
);
CREATE TABLE IF NOT EXISTS {s}.schedule_firings (
    schedule text NOT NULL,
    tick     bigint NOT NULL,
    manual   boolean NOT NULL,
    outcome  text NOT NULL,
    job_id   text,
    at       bigint NOT NULL,
    PRIMARY KEY (schedule, tick, manual)
);
"""


def ensure_schedule_objects(conn: Conn, schema: str) -> None:
    """Create the schedule objects unless they exist (one read when they do)."""
    s = quoted(schema)
    row = conn.execute("SELECT to_regclass(%s) AS t", (f"{s}.schedule_firings",)).fetchone()
    if row is not None and row["t"] is not None:
        return
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (_advisory_key(schema),))
        conn.execute(SCHEDULE_DDL.replace("{s}", s))


def schema_version() -> int:
    """The schema version this code writes (the last migration's)."""
    return MIGRATIONS[-1][0]


def _advisory_key(schema: str) -> int:
    digest = hashlib.sha256(f"queuectl-migrate:{schema}".encode()).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


def stored_version(conn: Conn, schema: str) -> int:
    """The version recorded in ``schema`` (0: no schema, or an empty one)."""
    row = conn.execute("SELECT to_regclass(%s) AS t", (f"{quoted(schema)}.meta",)).fetchone()
    if row is None or row["t"] is None:
        return 0
    row = conn.execute(f"SELECT value FROM {quoted(schema)}.meta"
                       " WHERE key = 'schema_version'").fetchone()
    return 0 if row is None else int(row["value"])


def migrate(conn: Conn, schema: str, where: str) -> None:
    """Create or upgrade ``schema``, one migration after another, under a
    transaction-scoped advisory lock so that concurrent starters do not
    race; refuse a schema written by a newer queuectl (a StorageError
    naming the server ``where``)."""
    latest = schema_version()
    version = stored_version(conn, schema)
    if version == latest:
        return
    s = quoted(schema)
    if version < latest:
        with conn.transaction():
            conn.execute("SELECT pg_advisory_xact_lock(%s)", (_advisory_key(schema),))
            conn.execute(f"CREATE SCHEMA IF NOT EXISTS {s}")
            conn.execute(f"CREATE TABLE IF NOT EXISTS {s}.meta"
                         " (key text PRIMARY KEY, value text NOT NULL)")
            version = stored_version(conn, schema)
            if version < latest:
                for step, ddl in MIGRATIONS:
                    if step > version:
                        log.info("upgrading schema %s to version %d", schema, step)
                        conn.execute(ddl.replace("{s}", s))
                conn.execute(f"INSERT INTO {s}.meta (key, value) VALUES ('schema_version', %s)"
                             " ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                             (str(latest),))
                return
    if version > latest:
        raise StorageError(
            f"PostgreSQL {where}: schema {schema!r} has version {version}, newer than this "
            f"queuectl understands ({latest}); upgrade queuectl (and queuectl-postgres) on "
            "this machine"
        )
