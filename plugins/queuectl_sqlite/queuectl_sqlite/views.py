"""What ``stats``, ``status``, the dashboard and the metrics read
(the optional view methods of the storage seam), from the maintained
counts (``job_counts``, see ``schema.VIEW_OBJECTS``) and indexes: each
costs the same whatever the number of stored jobs, except the window
reads of attempts, which grow with the attempts of the window only."""

from __future__ import annotations

import sqlite3

from queuectl_core.models import FinishedAttempt, Job, JobState

from .rows import job_from_row
from .schema import CLAIMABLE, DONE_AT, FINISHED

# typing is not imported at run time (the CLI's hot path).
TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Iterable
    from typing import Any

OLDEST_DUE_SQL = f"""
SELECT q.queue, (SELECT min(run_at) FROM jobs INDEXED BY jobs_due
                 WHERE jobs.queue = q.queue AND {CLAIMABLE})
FROM (SELECT DISTINCT queue FROM job_counts WHERE {CLAIMABLE} AND n > 0) AS q
"""

FINISHED_ATTEMPTS_SQL = """
SELECT a.job_id, j.queue, j.command, a.outcome, a.started_at, a.finished_at, a.exit_code,
       CASE WHEN a.outcome = 'completed' THEN j.run_at END AS due_at
FROM attempts AS a INDEXED BY attempts_finished JOIN jobs AS j ON j.id = a.job_id
WHERE a.finished_at >= :since AND (:queue IS NULL OR j.queue = :queue)
ORDER BY a.finished_at DESC LIMIT :limit
"""

OUTCOME_COUNTS_SQL = """
SELECT j.queue, a.outcome, count(*)
FROM attempts AS a INDEXED BY attempts_finished JOIN jobs AS j ON j.id = a.job_id
WHERE a.finished_at >= :since AND (:queue IS NULL OR j.queue = :queue)
GROUP BY j.queue, a.outcome
"""

DEAD_SINCE_SQL = f"""
SELECT queue, count(*) FROM jobs INDEXED BY jobs_finished
WHERE {FINISHED} AND state = 'dead' AND {DONE_AT} >= :since AND (:queue IS NULL OR queue = :queue)
GROUP BY queue
"""


def new_counts(jobs: Iterable[Job]) -> list[tuple[str, str, int]]:
    """(queue, state, how many) of new jobs, for ``schema.COUNT_NEW``."""
    found: dict[tuple[str, str], int] = {}
    for job in jobs:
        key = (job.queue, job.state.value)
        found[key] = found.get(key, 0) + 1
    return [(queue, state, n) for (queue, state), n in found.items()]


class SqliteViews:
    """The view methods of :class:`~queuectl_sqlite.store.SqliteStorage`."""

    conn: sqlite3.Connection
    #: False for a store opened read-only before its counts existed: then
    #: counts are read from the jobs themselves.
    counted = True

    def counts(self, queue: str | None = None) -> dict[JobState, int]:
        counts = dict.fromkeys(JobState, 0)
        table = "job_counts" if self.counted else "jobs"
        n = "sum(n)" if self.counted else "count(*)"
        if queue is None:
            rows = self.conn.execute(f"SELECT state, {n} FROM {table} GROUP BY state")
        else:
            rows = self.conn.execute(
                f"SELECT state, {n} FROM {table} WHERE queue = ? GROUP BY state", (queue,))
        for state, count in rows:
            counts[JobState(state)] = count
        return counts

    def queue_counts(self) -> dict[str, dict[JobState, int]]:
        if self.counted:
            rows = self.conn.execute("SELECT queue, state, n FROM job_counts WHERE n > 0")
        else:
            rows = self.conn.execute("SELECT queue, state, count(*) FROM jobs"
                                     " GROUP BY queue, state")
        found: dict[str, dict[JobState, int]] = {}
        for queue, state, n in rows:
            found.setdefault(queue, dict.fromkeys(JobState, 0))[JobState(state)] = n
        return found

    def oldest_due(self, now: int) -> dict[str, int]:
        if not self.counted:
            rows = self.conn.execute(f"SELECT queue, min(run_at) FROM jobs WHERE {CLAIMABLE}"
                                     " GROUP BY queue")
        else:
            rows = self.conn.execute(OLDEST_DUE_SQL)
        return {queue: at for queue, at in rows if at is not None and at <= now}

    def finished_attempts(self, since: int, queue: str | None = None,
                          limit: int = 10_000) -> list[FinishedAttempt]:
        rows = self.conn.execute(FINISHED_ATTEMPTS_SQL,
                                 {"since": since, "queue": queue, "limit": limit})
        return [FinishedAttempt(job_id=r[0], queue=r[1], command=r[2], outcome=r[3],
                                started_at=r[4], finished_at=r[5], exit_code=r[6], due_at=r[7])
                for r in rows]

    def outcome_counts(self, since: int, queue: str | None = None
                       ) -> dict[str, dict[str, int]]:
        params = {"since": since, "queue": queue}
        found: dict[str, dict[str, int]] = {}
        for name, outcome, n in self.conn.execute(OUTCOME_COUNTS_SQL, params):
            found.setdefault(name, {})[outcome] = n
        for name, n in self.conn.execute(DEAD_SINCE_SQL, params):
            found.setdefault(name, {})["dead"] = n
        return found

    def browse_jobs(self, *, state: JobState | None = None, queue: str | None = None,
                    text: str | None = None, before: str | None = None,
                    limit: int = 50) -> list[Job]:
        terms: list[str] = []
        params: list[Any] = []
        if state is not None:
            terms.append("state = ?")
            params.append(JobState(state).value)
        if queue is not None:
            terms.append("queue = ?")
            params.append(queue)
        if text:
            terms.append("(instr(id, ?) > 0 OR instr(command, ?) > 0)")
            params += [text, text]
        if before is not None:
            terms.append("seq < (SELECT seq FROM jobs WHERE id = ?)")
            params.append(before)
        where = f" WHERE {' AND '.join(terms)}" if terms else ""
        query = f"SELECT * FROM jobs{where} ORDER BY seq DESC LIMIT ?"
        return [job_from_row(r) for r in self.conn.execute(query, [*params, limit])]
