"""The SQLite store's queries: claims, due jobs, wake-up times, purge order.

Claim cost: a claim looks at claimable jobs only (partial indexes), one
queue at a time: for each queue it may take from (those asked for, or every
queue that has claimable jobs, found by a loose index scan), less the paused
ones, it seeks the best due job in that queue, then takes the best of those
few. Finished jobs, and waiting jobs in paused or other queues, therefore
cost nothing; the cost grows only with the number of queues that have
waiting jobs (one index seek or two each).
"""

from __future__ import annotations

from queuectl_core.storage import DEFAULT_CONCURRENCY_LIMIT, LIMITS_SETTING

from .schema import CLAIMABLE, DONE_AT, FINISHED

#: Concurrency limits: the setting that holds them (an object of key: N), and
#: the condition a claimable row of ``jobs`` must meet: no key, or fewer of
#: its key running than the key's limit (1 when none is set).
KEY_FREE = f"""(jobs.concurrency_key IS NULL OR (
    SELECT count(*) FROM jobs AS running INDEXED BY jobs_keyed_running
    WHERE running.concurrency_key = jobs.concurrency_key AND running.state = 'processing'
  ) < coalesce((SELECT CAST(lim.value AS INTEGER)
                FROM settings, json_each(settings.value) AS lim
                WHERE settings.key = '{LIMITS_SETTING}' AND lim.key = jobs.concurrency_key),
               {DEFAULT_CONCURRENCY_LIMIT}))"""

# The queues a claim (or next_run_at) may take from, as the CTE ``open_q``:
# the queues named in the JSON array parameter :queues, or every queue with
# claimable jobs (a loose index scan over jobs_due: one seek per queue), in
# both cases less the paused ones.

_ANY_QUEUE_CTE = f"""WITH RECURSIVE
  seen(name) AS (
    SELECT (SELECT queue FROM jobs INDEXED BY jobs_due WHERE {CLAIMABLE}
            ORDER BY queue LIMIT 1)
    UNION ALL
    SELECT (SELECT queue FROM jobs INDEXED BY jobs_due WHERE {CLAIMABLE} AND queue > seen.name
            ORDER BY queue LIMIT 1)
    FROM seen WHERE seen.name IS NOT NULL
  ),
  open_q(name) AS (
    SELECT name FROM seen
    WHERE name IS NOT NULL AND name NOT IN (SELECT queue FROM paused_queues)
  )
"""

_LISTED_QUEUE_CTE = """WITH
  open_q(name) AS (
    SELECT DISTINCT value FROM json_each(:queues)
    WHERE value NOT IN (SELECT queue FROM paused_queues)
  )
"""

#: The best due job (parameter :now) of each open queue, then the best of
#: those, in claim order.
_PICK = f"""SELECT seq FROM jobs WHERE seq IN (
    SELECT (SELECT seq FROM jobs INDEXED BY jobs_ready
            WHERE {CLAIMABLE} AND queue = open_q.name AND run_at <= :now AND {KEY_FREE}
            ORDER BY priority DESC, run_at, seq LIMIT 1)
    FROM open_q)
  ORDER BY priority DESC, run_at, seq LIMIT 1"""

#: The next due job, in claim order, from any queue that is not paused
#: (parameter :now) or only from those in :queues (a JSON array).
NEXT_DUE_SQL = _ANY_QUEUE_CTE + _PICK
NEXT_DUE_LISTED_SQL = _LISTED_QUEUE_CTE + _PICK

_EARLIEST = f"""SELECT min((SELECT run_at FROM jobs INDEXED BY jobs_due
                    WHERE {CLAIMABLE} AND queue = open_q.name AND {KEY_FREE}
                    ORDER BY run_at LIMIT 1))
  FROM open_q"""
NEXT_RUN_AT_SQL = _ANY_QUEUE_CTE + _EARLIEST
NEXT_RUN_AT_LISTED_SQL = _LISTED_QUEUE_CTE + _EARLIEST

#: How many jobs are due now (:now) in the open queues, up to :limit.
_DUE = f"""SELECT count(*) FROM (SELECT 1 FROM jobs INDEXED BY jobs_due
    WHERE {CLAIMABLE} AND queue IN (SELECT name FROM open_q) AND run_at <= :now
    AND {KEY_FREE} LIMIT :limit)"""
DUE_COUNT_SQL = _ANY_QUEUE_CTE + _DUE
DUE_COUNT_LISTED_SQL = _LISTED_QUEUE_CTE + _DUE

_CLAIM_SET = (
    "UPDATE jobs SET state = 'processing', attempts = attempts + 1,"
    " worker_id = :worker, claim_token = :token, lease_expires_at = :lease,"
    " started_at = :now, finished_at = NULL, updated_at = :now"
)
#: The claim: one statement, picking and taking the job (the same change as
#: ``queuectl_core.transitions.claimed``; the conformance kit compares).
CLAIM_SQL = f"{_CLAIM_SET} WHERE seq = ({NEXT_DUE_SQL}) RETURNING *"
CLAIM_LISTED_SQL = f"{_CLAIM_SET} WHERE seq = ({NEXT_DUE_LISTED_SQL}) RETURNING *"

#: The open queues (see above): those of :queues, or every queue with
#: claimable jobs, less the paused ones.
OPEN_QUEUES_SQL = _ANY_QUEUE_CTE + "SELECT name FROM open_q"
OPEN_LISTED_QUEUES_SQL = _LISTED_QUEUE_CTE + "SELECT name FROM open_q"

#: Several claims at once, in one statement: the jobs that ``{pick}``
#: selects, each with the token :prefix.<seq>. RETURNING gives no order:
#: the caller sorts.
_CLAIM_PICKED_SQL = (
    "UPDATE jobs SET state = 'processing', attempts = attempts + 1,"
    " worker_id = :worker, claim_token = :prefix || '.' || seq,"
    " lease_expires_at = :lease, started_at = :now, finished_at = NULL, updated_at = :now"
    " WHERE seq IN ({pick}) RETURNING *"
)
_DUE_PICKED_SQL = "SELECT * FROM jobs WHERE seq IN ({pick})"


def _best_due(queue: str, columns: str = "seq", keyed: str = "concurrency_key IS NULL"
              ) -> str:
    """The best :limit due jobs without a concurrency key of the queue named
    by the parameter ``queue``, in claim order: a seek in ``jobs_ready``,
    read in index order. (Keyed jobs are claimed one at a time, each
    counting the claims before it.)"""
    return (f"SELECT {columns} FROM jobs INDEXED BY jobs_ready WHERE {CLAIMABLE}"
            f" AND queue = {queue} AND run_at <= :now AND {keyed}"
            " ORDER BY priority DESC, run_at, seq LIMIT :limit")


#: Most open queues a batch claim takes from in one statement; with more,
#: it claims one job at a time.
MAX_BATCH_QUEUES = 8
_picks: dict[tuple[int, str], str] = {}


def _pick_sql(queues: int, keyed: str = "concurrency_key IS NULL") -> str:
    """The best :limit due jobs from ``queues`` open queues, named by the
    parameters :q0, :q1, ...: the best :limit of each, then the best :limit
    of those, which are the jobs that many single claims would take in
    turn. With one queue, its best :limit in index order."""
    pick = _picks.get((queues, keyed))
    if pick is None:
        if queues == 1:
            pick = _best_due(":q0", keyed=keyed)
        else:
            best = " UNION ALL ".join(
                f"SELECT * FROM ({_best_due(f':q{i}', 'seq, priority, run_at', keyed)})"
                for i in range(queues))
            pick = f"SELECT seq FROM ({best}) ORDER BY priority DESC, run_at, seq LIMIT :limit"
        _picks[queues, keyed] = pick
    return pick


def claim_batch_sql(queues: int) -> str:
    """Claim what :func:`_pick_sql` picks, in one statement."""
    return _CLAIM_PICKED_SQL.format(pick=_pick_sql(queues))


def due_batch_sql(queues: int) -> str:
    """Read what :func:`_pick_sql` picks, keyed jobs included where their
    key has a free slot (unsorted: the caller sorts)."""
    return _DUE_PICKED_SQL.format(pick=_pick_sql(queues, KEY_FREE))


#: The attempts of the jobs just claimed in a batch (their seqs in the JSON
#: array :seqs), numbered after each job's whole history.
OPEN_ATTEMPTS_SQL = (
    "INSERT INTO attempts (job_id, number, claim_token, worker_id, started_at, outcome)"
    " SELECT id, 1 + (SELECT count(*) FROM attempts AS a WHERE a.job_id = j.id),"
    " claim_token, :worker, :now, 'running'"
    " FROM jobs AS j WHERE seq IN (SELECT value FROM json_each(:seqs))"
    " RETURNING job_id, number"
)

#: The attempt a single claim opens.
OPEN_ATTEMPT_SQL = (
    "INSERT INTO attempts (job_id, number, claim_token, worker_id, started_at, outcome)"
    " VALUES (:job, 1 + (SELECT count(*) FROM attempts WHERE job_id = :job), :token,"
    " :worker, :now, 'running') RETURNING number"
)

#: Finished jobs in one state (:state), oldest first; with :before (epoch
#: ms) only those finished earlier. -1 as :limit: no limit.
FINISHED_BEFORE_SQL = (
    f"SELECT * FROM jobs INDEXED BY jobs_finished"
    f" WHERE {FINISHED} AND state = :state AND {DONE_AT} < :before"
    f" ORDER BY {DONE_AT}, seq LIMIT :limit"
)
FINISHED_SQL = (
    f"SELECT * FROM jobs INDEXED BY jobs_finished"
    f" WHERE {FINISHED} AND state = :state ORDER BY {DONE_AT}, seq LIMIT :limit"
)

#: Processing jobs whose lease ended before :now.
EXPIRED_SQL = ("SELECT * FROM jobs INDEXED BY jobs_leases WHERE state = 'processing'"
               " AND lease_expires_at < :now ORDER BY seq")
