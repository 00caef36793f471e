"""What ``stats``, ``status``, the dashboard and the metrics read (the
optional view methods of the storage seam), and the objects behind them.

Counts per queue and state are maintained by triggers on ``jobs`` without
a hot row: every write appends its changes of the counts to
``job_count_deltas`` (insert only, so concurrent workers never wait for
one another there), and a fold moves them into ``job_counts`` now and then
(one statement in :data:`FOLD_EVERY`, at random), under a
transaction-scoped advisory lock that others skip rather than wait for. A
count is ``job_counts`` plus the deltas not folded yet, read in one
statement (one snapshot). These objects
are not versioned: :func:`ensure` creates them in any schema that lacks
them, with the first fill, in one transaction that holds writers off.
"""

from __future__ import annotations

import hashlib
from typing import TYPE_CHECKING, Any

from queuectl_core.models import FinishedAttempt, Job, JobState

from .connection import Conn, Session, guarded
from .sql import JOB_COLUMNS, job_from_row, quoted

if TYPE_CHECKING:
    from psycopg.rows import DictRow

#: A statement that changes jobs folds the deltas once in this many, on average
#: (a bulk insert runs one statement per job).
FOLD_EVERY = 128
CLAIMABLE = "state IN ('pending', 'failed')"
FINISHED = "state IN ('completed', 'dead', 'cancelled')"


def _fold_key(schema: str) -> int:
    digest = hashlib.sha256(f"queuectl-fold-counts:{schema}".encode()).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


def objects(schema: str) -> str:
    """The DDL of the view objects in ``schema`` (run once, by :func:`ensure`)."""
    s = quoted(schema)
    return f"""
LOCK TABLE {s}.jobs IN SHARE ROW EXCLUSIVE MODE;
CREATE TABLE {s}.job_counts (
    queue text NOT NULL, state text NOT NULL, n bigint NOT NULL, PRIMARY KEY (queue, state));
CREATE TABLE {s}.job_count_deltas (
    seq bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    queue text NOT NULL, state text NOT NULL, n bigint NOT NULL);
CREATE FUNCTION {s}.fold_job_counts() RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    IF pg_try_advisory_xact_lock({_fold_key(schema)}) THEN
        WITH gone AS (DELETE FROM {s}.job_count_deltas RETURNING queue, state, n)
        INSERT INTO {s}.job_counts (queue, state, n)
            SELECT queue, state, sum(n) FROM gone GROUP BY queue, state
            ON CONFLICT (queue, state) DO UPDATE SET n = {s}.job_counts.n + excluded.n;
    END IF;
END $$;
CREATE FUNCTION {s}.count_changed_job() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO {s}.job_count_deltas (queue, state, n)
        VALUES (OLD.queue, OLD.state, -1), (NEW.queue, NEW.state, 1);
    IF random() < {1 / FOLD_EVERY} THEN
        PERFORM {s}.fold_job_counts();
    END IF;
    RETURN NULL;
END $$;
CREATE FUNCTION {s}.count_new_jobs() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO {s}.job_count_deltas (queue, state, n)
        SELECT queue, state, count(*) FROM new_rows GROUP BY queue, state;
    IF random() < {1 / FOLD_EVERY} THEN
        PERFORM {s}.fold_job_counts();
    END IF;
    RETURN NULL;
END $$;
CREATE FUNCTION {s}.count_gone_jobs() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO {s}.job_count_deltas (queue, state, n)
        SELECT queue, state, -count(*) FROM old_rows GROUP BY queue, state;
    IF random() < {1 / FOLD_EVERY} THEN
        PERFORM {s}.fold_job_counts();
    END IF;
    RETURN NULL;
END $$;
CREATE TRIGGER job_counts_insert AFTER INSERT ON {s}.jobs
    REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION {s}.count_new_jobs();
CREATE TRIGGER job_counts_delete AFTER DELETE ON {s}.jobs
    REFERENCING OLD TABLE AS old_rows FOR EACH STATEMENT EXECUTE FUNCTION {s}.count_gone_jobs();
CREATE TRIGGER job_counts_update AFTER UPDATE OF state, queue ON {s}.jobs FOR EACH ROW
    WHEN (OLD.state IS DISTINCT FROM NEW.state OR OLD.queue IS DISTINCT FROM NEW.queue)
    EXECUTE FUNCTION {s}.count_changed_job();
INSERT INTO {s}.job_counts (queue, state, n)
    SELECT queue, state, count(*) FROM {s}.jobs GROUP BY queue, state;
CREATE INDEX attempts_finished ON {s}.attempts (finished_at);
"""


def _present(conn: Conn, schema: str) -> bool:
    """Is the last view object there? Read from pg_class with the
    statement's snapshot (``to_regclass`` may answer from a cache that a
    wait for an advisory lock does not refresh)."""
    return conn.execute(
        "SELECT 1 FROM pg_class AS c JOIN pg_namespace AS n ON n.oid = c.relnamespace"
        " WHERE n.nspname = %s AND c.relname = 'attempts_finished'", (schema,)
    ).fetchone() is not None


def ensure(conn: Conn, schema: str) -> None:
    """Create the view objects in ``schema`` unless they are there, under
    the migration's advisory lock, on a schema at the version this code
    writes (``schema.migrate`` has brought it there)."""
    from .schema import _advisory_key, schema_version, stored_version

    if _present(conn, schema) or stored_version(conn, schema) != schema_version():
        return
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (_advisory_key(schema),))
        if not _present(conn, schema):
            conn.execute(objects(schema))


#: Counts per queue and state: the folded ones plus the deltas, one snapshot.
_COUNTED = """(SELECT queue, state, sum(n) AS n FROM (
    SELECT queue, state, n FROM {s}.job_counts
    UNION ALL SELECT queue, state, n FROM {s}.job_count_deltas) AS c
  GROUP BY queue, state)"""
QUEUE_COUNTS_SQL = f"SELECT queue, state, n FROM {_COUNTED} AS c WHERE n > 0"
COUNTS_SQL = f"SELECT state, sum(n) AS n FROM {_COUNTED} AS c GROUP BY state"
COUNTS_IN_QUEUE_SQL = f"SELECT state, n FROM {_COUNTED} AS c WHERE queue = %s"
OLDEST_DUE_SQL = f"""
SELECT q.queue, (SELECT min(run_at) FROM {{s}}.jobs
                 WHERE jobs.queue = q.queue AND {CLAIMABLE}) AS at
FROM {_COUNTED} AS q WHERE {CLAIMABLE} AND n > 0 GROUP BY q.queue
"""
FINISHED_ATTEMPTS_SQL = """
SELECT a.job_id, j.queue, j.command, a.outcome, a.started_at, a.finished_at, a.exit_code,
       CASE WHEN a.outcome = 'completed' THEN j.run_at END AS due_at
FROM {s}.attempts AS a JOIN {s}.jobs AS j ON j.id = a.job_id
WHERE a.finished_at >= %(since)s AND (%(queue)s::text IS NULL OR j.queue = %(queue)s)
ORDER BY a.finished_at DESC LIMIT %(limit)s
"""
OUTCOME_COUNTS_SQL = """
SELECT j.queue, a.outcome, count(*) AS n
FROM {s}.attempts AS a JOIN {s}.jobs AS j ON j.id = a.job_id
WHERE a.finished_at >= %(since)s AND (%(queue)s::text IS NULL OR j.queue = %(queue)s)
GROUP BY j.queue, a.outcome
"""
DEAD_SINCE_SQL = f"""
SELECT queue, count(*) AS n FROM {{s}}.jobs
WHERE {FINISHED} AND state = 'dead' AND COALESCE(finished_at, updated_at) >= %(since)s
  AND (%(queue)s::text IS NULL OR queue = %(queue)s)
GROUP BY queue
"""



def jobs_where(state: JobState | None, queue: str | None) -> tuple[str, list[Any]]:
    """The jobs in ``state`` and ``queue`` (each if given): a SELECT of every
    job column to extend with more conditions, and its parameters."""
    sql = f"SELECT {JOB_COLUMNS} FROM {{s}}.jobs WHERE true"
    params: list[Any] = []
    if state is not None:
        sql += " AND state = %s"
        params.append(JobState(state).value)
    if queue is not None:
        sql += " AND queue = %s"
        params.append(queue)
    return sql, params

class PostgresViews:
    """The view methods of :class:`~queuectl_postgres.store.PostgresStorage`."""

    session: Session

    def _q(self, template: str) -> str:
        raise NotImplementedError

    def _rows(self, sql: str, params: Any = None) -> list[DictRow]:
        with self.session.cursor() as cur:
            return cur.execute(self._q(sql), params).fetchall()

    @guarded
    def counts(self, queue: str | None = None) -> dict[JobState, int]:
        counts = dict.fromkeys(JobState, 0)
        rows = (self._rows(COUNTS_SQL) if queue is None
                else self._rows(COUNTS_IN_QUEUE_SQL, (queue,)))
        for row in rows:
            counts[JobState(row["state"])] = int(row["n"])
        return counts

    @guarded
    def queue_counts(self) -> dict[str, dict[JobState, int]]:
        found: dict[str, dict[JobState, int]] = {}
        for row in self._rows(QUEUE_COUNTS_SQL):
            per = found.setdefault(row["queue"], dict.fromkeys(JobState, 0))
            per[JobState(row["state"])] = int(row["n"])
        return found

    @guarded
    def oldest_due(self, now: int) -> dict[str, int]:
        return {row["queue"]: int(row["at"]) for row in self._rows(OLDEST_DUE_SQL)
                if row["at"] is not None and row["at"] <= now}

    @guarded
    def finished_attempts(self, since: int, queue: str | None = None,
                          limit: int = 10_000) -> list[FinishedAttempt]:
        rows = self._rows(FINISHED_ATTEMPTS_SQL, {"since": since, "queue": queue,
                                                  "limit": limit})
        return [FinishedAttempt(**row) for row in rows]

    @guarded
    def outcome_counts(self, since: int, queue: str | None = None
                       ) -> dict[str, dict[str, int]]:
        params = {"since": since, "queue": queue}
        found: dict[str, dict[str, int]] = {}
        for row in self._rows(OUTCOME_COUNTS_SQL, params):
            found.setdefault(row["queue"], {})[row["outcome"]] = int(row["n"])
        for row in self._rows(DEAD_SINCE_SQL, params):
            found.setdefault(row["queue"], {})["dead"] = int(row["n"])
        return found

    @guarded
    def browse_jobs(self, *, state: JobState | None = None, queue: str | None = None,
                    text: str | None = None, before: str | None = None,
                    limit: int = 50) -> list[Job]:
        sql, params = jobs_where(state, queue)
        if text:
            sql += " AND (strpos(id, %s) > 0 OR strpos(command, %s) > 0)"
            params += [text, text]
        if before is not None:
            sql += " AND seq < (SELECT seq FROM {s}.jobs WHERE id = %s)"
            params.append(before)
        sql += " ORDER BY seq DESC LIMIT %s"
        return [job_from_row(r) for r in self._rows(sql, [*params, limit])]

