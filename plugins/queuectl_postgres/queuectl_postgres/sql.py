"""The PostgreSQL store's statements, and the conversions between records
and rows.

``{s}`` in a statement stands for the quoted schema name (the store fills it
in). Column names come only from the records' declarations
(:mod:`queuectl_core.models`): the field names of a change are checked
against them (:func:`change_values`) before any is written into a
statement; values always travel as parameters.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from psycopg.rows import DictRow
from psycopg.types.json import Json

from queuectl_core.models import Attempt, Change, Job, JobState, WorkerInfo
from queuectl_core.storage import DEFAULT_CONCURRENCY_LIMIT, LIMITS_SETTING

JOB_FIELDS = Job.field_names()
JOB_COLUMNS = ", ".join(JOB_FIELDS)
_J_COLUMNS = ", ".join("j." + f for f in JOB_FIELDS)
JSON_FIELDS = frozenset(Job.json_fields())
ATTEMPT_FIELDS = Attempt.field_names()
ATTEMPT_COLUMNS = ", ".join(ATTEMPT_FIELDS)
TAIL_FIELDS = frozenset({"stdout_tail", "stderr_tail"})
WORKER_FIELDS = WorkerInfo.field_names()
WORKER_COLUMNS = ", ".join(WORKER_FIELDS)
#: The SQL type of each attempt column a change may write (all but
#: ``job_id``, which is the job's).
ATTEMPT_TYPES = {"number": "integer", "worker_id": "text", "started_at": "bigint",
                 "finished_at": "bigint", "outcome": "text", "exit_code": "integer",
                 "signal": "integer", "error": "text", "stdout_tail": "bytea",
                 "stderr_tail": "bytea"}


def quoted(schema: str) -> str:
    """``schema`` as an SQL identifier (the options allow only names that
    need no escaping; a doubled quote keeps any other one harmless)."""
    return '"' + schema.replace('"', '""') + '"'


# ---------------------------------------------------------------- claims

CLAIMABLE = "state IN ('pending', 'failed')"
#: Spelled out wherever finished jobs are read, so that the planner can use
#: ``jobs_finished``.
FINISHED = "state IN ('completed', 'dead', 'cancelled', 'skipped')"
#: The states that hold a job's unique key (``jobs_unique``).
UNFINISHED = "state IN ('pending', 'waiting', 'processing', 'failed')"
#: Not in a paused queue: the paused queues are read once per statement (an
#: InitPlan) and compared per row. Not ``queue <> ALL(...)``: with most jobs
#: in one queue, the planner's estimate for that is "no row passes", and it
#: then sorts every due job instead of walking ``jobs_ready`` in order; the
#: estimate for ``<@`` does not depend on the column's statistics.
NOT_PAUSED = "NOT (ARRAY[queue] <@ ARRAY(SELECT queue FROM {s}.paused_queues))"
#: Claims from any queue, one queue, several queues (see :func:`queue_choice`).
_QUEUE_FILTERS = ("", " AND queue = %(queue)s", " AND queue = ANY(%(queues)s::text[])")


def queue_choice(queues: Sequence[str] | None) -> tuple[int, dict[str, Any]]:
    """Which of three statements (any queue, one, several) serves
    ``queues``, with its queue parameter."""
    if queues is None:
        return 0, {}
    if len(queues) == 1:
        return 1, {"queue": queues[0]}
    return 2, {"queues": list(queues)}


# ---------------------------------------------------------------- limits
#
# A job with a concurrency key runs only while fewer jobs with that key are
# processing than the key's limit. Reading the count is not enough to keep
# it under concurrent claims (each transaction sees the others' claims only
# once they commit): keyed jobs are claimed by KEYED_CLAIM_SQLS, under a
# transaction-scoped advisory lock of the key taken by LOCK_KEY_SQL in the
# statement before (so that the count's snapshot sees every claim of the key
# made under the lock before). Elsewhere the count only tells which keyed
# jobs are worth trying: those whose key has a free slot (KEY_FREE), so that
# a key at its limit never holds back the jobs behind it.

#: The stored limits, read once per statement.
_LIMITS = f"(SELECT value::jsonb FROM {{s}}.settings WHERE key = '{LIMITS_SETTING}')"


def _limit_of(key: str) -> str:
    """The limit of the key ``key`` (SQL): an integer stored, else 1."""
    return (f"COALESCE(CASE WHEN ({_LIMITS} -> {key})::text ~ '^-?[0-9]+$'"
            f" THEN ({_LIMITS} ->> {key})::bigint END, {DEFAULT_CONCURRENCY_LIMIT})")


def _running(key: str) -> str:
    """How many jobs with the key ``key`` are processing (``jobs_keyed_running``)."""
    return (f"(SELECT count(*) FROM {{s}}.jobs AS r WHERE r.concurrency_key = {key}"
            " AND r.state = 'processing')")


#: A row of ``jobs`` without a key, or whose key has a free slot (as read).
KEY_FREE = ("(concurrency_key IS NULL OR"
            f" {_running('jobs.concurrency_key')} < {_limit_of('jobs.concurrency_key')})")
#: Taken before a keyed claim (parameters ``schema``, ``key``); held until commit.
LOCK_KEY_SQL = "SELECT pg_advisory_xact_lock(hashtext(%(schema)s), hashtext(%(key)s))"


def _due(queue_filter: str) -> str:
    return f"{CLAIMABLE} AND run_at <= %(now)s AND {NOT_PAUSED}{queue_filter} AND {KEY_FREE}"


def _next_due_sql(queue_filter: str, limit: str = "1", columns: str = "seq") -> str:
    return (f"SELECT {columns} FROM {{s}}.jobs WHERE {_due(queue_filter)}"
            f" ORDER BY priority DESC, run_at, seq LIMIT {limit} FOR UPDATE SKIP LOCKED")


#: The next due job in any queue that is not paused, in claim order
#: (parameter ``now``). Walks the partial index ``jobs_ready`` and stops at
#: the first row it can lock.
NEXT_DUE_SQL = _next_due_sql("")
#: The same in one queue (parameters ``now``, ``queue``): walks
#: ``jobs_ready_queue`` from that queue's first entry.
NEXT_DUE_IN_QUEUE_SQL = _next_due_sql(_QUEUE_FILTERS[1])


def _claim_sql(next_due: str, token: str = "%(token)s", keyed: bool = False) -> str:
    """Claim what ``next_due`` selects and open the attempts, in one
    statement: the change ``transitions.claimed`` describes, with the
    attempt numbered from ``attempt_records`` (read under the row lock).
    ``token`` is the SQL of each claim's token. Unless ``keyed``, it takes
    only the jobs without a concurrency key, and returns the keys of the
    others it selected as rows of their own (``wanted_key``), to claim
    next, one key at a time (KEYED_CLAIM_SQLS)."""
    if keyed:
        mine, wanted = "", "SELECT claimed.*, NULL::text AS wanted_key FROM claimed"
    else:
        mine = " AND next.concurrency_key IS NULL"
        wanted = ("SELECT claimed.*, keyed.key AS wanted_key FROM claimed FULL JOIN"
                  " (SELECT concurrency_key AS key FROM next WHERE concurrency_key IS NOT NULL)"
                  " AS keyed ON false")
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
     WHERE j.seq = next.seq{mine}
 RETURNING j.seq, j.attempt_records AS attempt_number, {_J_COLUMNS}
),
opened AS (
    INSERT INTO {{s}}.attempts (job_id, number, claim_token, worker_id, started_at, outcome)
    SELECT id, attempt_number, claim_token, %(worker)s, %(now)s, 'running' FROM claimed
)
{wanted}
"""


_WITH_KEY = "seq, concurrency_key"
_BATCH_TOKEN = "%(token)s || '.' || j.seq"
#: One claim (parameters ``now``, ``worker``, ``token``, ``lease`` and the
#: queue parameter), for any queue, one queue, several queues.
CLAIM_SQLS = tuple(_claim_sql(_next_due_sql(f, columns=_WITH_KEY)) for f in _QUEUE_FILTERS)
#: Up to ``limit`` claims in one statement, each with its own token:
#: ``<random>.<seq>``. The rows come back in no particular order; the
#: caller sorts them into claim order.
CLAIM_BATCH_SQLS = tuple(_claim_sql(_next_due_sql(f, "%(limit)s", _WITH_KEY), _BATCH_TOKEN)
                         for f in _QUEUE_FILTERS)
#: Up to ``limit`` claims of jobs with the key ``key``, as many as the key
#: has free slots: under the key's lock (LOCK_KEY_SQL), from ``jobs_keyed_ready``.
KEYED_CLAIM_SQLS = tuple(_claim_sql(
    f"SELECT seq FROM {{s}}.jobs WHERE concurrency_key = %(key)s AND {CLAIMABLE}"
    f" AND run_at <= %(now)s AND {NOT_PAUSED}{f} ORDER BY priority DESC, run_at, seq"
    f" LIMIT LEAST(%(limit)s, GREATEST(0, {_limit_of('%(key)s')} - {_running('%(key)s')}))"
    " FOR UPDATE SKIP LOCKED", _BATCH_TOKEN, keyed=True) for f in _QUEUE_FILTERS)
#: What a claim could take now, in claim order, without taking it (``due``).
DUE_SQLS = tuple(f"SELECT {JOB_COLUMNS} FROM {{s}}.jobs WHERE {_due(f)}"
                 " ORDER BY priority DESC, run_at, seq LIMIT %(limit)s"
                 for f in _QUEUE_FILTERS)
#: How many jobs a claim could take now, up to ``limit`` (``due_count``).
DUE_COUNT_SQLS = tuple(f"SELECT count(*) AS n FROM (SELECT 1 FROM {{s}}.jobs WHERE {_due(f)}"
                       " LIMIT %(limit)s) AS due" for f in _QUEUE_FILTERS)

#: The first (earliest ``run_at``) claimable job of each queue ``q.name``,
#: from ``jobs_due_queue``, outside paused queues.
_FIRST_DUE_PER_QUEUE = (
    "SELECT min(first.run_at) AS t FROM {queues} AS q(name)"
    " CROSS JOIN LATERAL (SELECT run_at FROM {s}.jobs"
    f" WHERE {CLAIMABLE} AND queue = q.name AND {KEY_FREE} ORDER BY run_at LIMIT 1) AS first"
    " WHERE q.name <> ALL(ARRAY(SELECT queue FROM {s}.paused_queues))"
)
#: When an idle worker of any queue should look again. The queues that have
#: claimable jobs are found by skipping through ``jobs_due_queue`` from one
#: queue to the next (a loose index scan), so the cost grows with the number
#: of queues, not of jobs, and a paused queue's backlog is never read.
NEXT_RUN_SQL = f"""
WITH RECURSIVE active(name) AS (
    (SELECT queue FROM {{s}}.jobs WHERE {CLAIMABLE} ORDER BY queue LIMIT 1)
    UNION ALL
    SELECT (SELECT queue FROM {{s}}.jobs WHERE {CLAIMABLE} AND queue > active.name
             ORDER BY queue LIMIT 1)
      FROM active WHERE active.name IS NOT NULL
)
{_FIRST_DUE_PER_QUEUE.replace("{queues}", "(SELECT name FROM active WHERE name IS NOT NULL)")}
"""
#: The same for chosen queues (parameter ``queues``).
NEXT_RUN_IN_QUEUES_SQL = _FIRST_DUE_PER_QUEUE.replace("{queues}", "unnest(%(queues)s::text[])")

# ---------------------------------------------------------------- reads

GET_SQL = f"SELECT {JOB_COLUMNS} FROM {{s}}.jobs WHERE id = %s"
ATTEMPTS_SQL = f"SELECT {ATTEMPT_COLUMNS} FROM {{s}}.attempts WHERE job_id = %s ORDER BY seq"
#: Processing jobs whose lease ended before ``now`` (``jobs_leases``).
EXPIRED_SQL = (f"SELECT {JOB_COLUMNS} FROM {{s}}.jobs"
               " WHERE state = 'processing' AND lease_expires_at < %(now)s ORDER BY seq")


def finished_sql(before: bool) -> str:
    """Finished jobs in ``states``, oldest first, at most ``limit`` (NULL:
    all), finished before ``before`` if that is given: read in order from
    ``jobs_finished``, so that a retention sweep costs the same whatever
    the number of finished jobs."""
    when = " AND COALESCE(finished_at, updated_at) < %(before)s" if before else ""
    return (f"SELECT {JOB_COLUMNS} FROM {{s}}.jobs"
            f" WHERE {FINISHED} AND state = ANY(%(states)s::text[]){when}"
            " ORDER BY COALESCE(finished_at, updated_at), seq LIMIT %(limit)s")


# ---------------------------------------------------------------- writes

_JOB_MARKS = ", ".join(["%s"] * (len(JOB_FIELDS) + 1))
#: A job with every field and its number of attempt records (parameters:
#: :func:`job_row`).
INSERT_JOB_SQL = f"INSERT INTO {{s}}.jobs ({JOB_COLUMNS}, attempt_records) VALUES ({_JOB_MARKS})"
#: One job and the wake-up of idle workers in one statement (one round trip,
#: as ``queuectl enqueue`` does): the notification is sent only if the
#: insert commits, and only for a job a claim could take (parameters:
#: :func:`job_row`, then the channel).
INSERT_ONE_JOB_SQL = (f"WITH new AS ({INSERT_JOB_SQL} RETURNING state)"
                      f" SELECT pg_notify(%s, '') FROM new WHERE new.{CLAIMABLE}")
INSERT_ATTEMPT_SQL = (
    "INSERT INTO {s}.attempts (job_id, number, claim_token, worker_id, started_at,"
    " finished_at, outcome, exit_code, signal, error, stdout_tail, stderr_tail)"
    " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)")
#: The first of the ids ``%s`` (in their order) that is stored already.
FIRST_EXISTING_SQL = ("SELECT u.id FROM unnest(%s::text[]) WITH ORDINALITY AS u(id, n)"
                      " JOIN {s}.jobs AS j ON j.id = u.id ORDER BY u.n LIMIT 1")
NOTIFY_SQL = "SELECT pg_notify(%s, '')"
#: The edges of the dependency graph (parameters: the parents' ids, the
#: children's ids, as arrays).
INSERT_EDGES_SQL = ("INSERT INTO {s}.job_parents (parent_id, child_id)"
                    " SELECT * FROM unnest(%s::text[], %s::text[]) ON CONFLICT DO NOTHING")
#: The jobs that run after one (parameter: its id), in enqueue order.
DEPENDENTS_SQL = (f"SELECT {_J_COLUMNS} FROM {{s}}.job_parents AS e"
                  " JOIN {s}.jobs AS j ON j.id = e.child_id WHERE e.parent_id = %s ORDER BY j.seq")
#: The unfinished job that holds a unique key, other than a given job
#: (parameters: the key, the id or NULL).
HOLDER_SQL = (f"SELECT id FROM {{s}}.jobs WHERE unique_key = %s AND {UNFINISHED}"
              " AND id IS DISTINCT FROM %s LIMIT 1")
#: The unique keys of stored jobs (parameter: their ids).
KEYS_OF_SQL = ("SELECT id, unique_key FROM {s}.jobs WHERE id = ANY(%s::text[])"
               " AND unique_key IS NOT NULL")

PUT_WORKER_SQL = (
    f"INSERT INTO {{s}}.workers ({WORKER_COLUMNS}) VALUES (%s, %s, %s, %s, %s, %s, %s)"
    " ON CONFLICT (id) DO UPDATE SET hostname = excluded.hostname, pid = excluded.pid,"
    " started_at = excluded.started_at, heartbeat_at = excluded.heartbeat_at,"
    " current_job = excluded.current_job, job_pgid = excluded.job_pgid")
LIST_WORKERS_SQL = f"SELECT {WORKER_COLUMNS} FROM {{s}}.workers ORDER BY started_at, id"


# ---------------------------------------------------------------- changes
#
# Changes are made in runs: consecutive changes of one shape (the same field
# names, expectations and kind of attempt change) to different jobs are one
# statement, whose parameters are arrays (one element per change, unnested
# into a relation ``i``). A single change is a run of one. Every job is
# found by id and every attempt by its claim token, so a run costs the same
# whatever the number of jobs stored.

#: The SQL type of each job column (the element type of its parameter array).
JOB_TYPES = {"id": "text", "command": "text", "state": "text", "attempts": "integer",
             "max_retries": "integer", "priority": "integer", "run_at": "bigint",
             "created_at": "bigint", "updated_at": "bigint", "started_at": "bigint",
             "finished_at": "bigint", "worker_id": "text", "lease_expires_at": "bigint",
             "last_error": "text", "exit_code": "integer", "queue": "text",
             "timeout": "double precision", "cwd": "text", "env": "json", "retry": "json",
             "cancel_requested_at": "bigint", "after": "json", "after_mode": "text",
             "concurrency_key": "text", "unique_key": "text", "waiting_on": "integer",
             "dependents": "integer", "claim_token": "text",
             "schedule": "text", "scheduled_for": "bigint"}

AttemptStep = Literal["open", "set", "drop"] | None


@dataclass(frozen=True)
class Shape:
    """What a change's statement depends on (its values aside)."""

    fields: tuple[str, ...]
    expect: tuple[str, ...]
    step: AttemptStep = None
    attempt_fields: tuple[str, ...] = ()
    delete: bool = False


#: A change's attempt record count, for jobs of schema version 1 that have
#: none stored (NULL): the rows.
_RECORDS = ("COALESCE(j.attempt_records,"
            " (SELECT count(*) FROM {s}.attempts AS a WHERE a.job_id = j.id))")


def _checked(names: Iterable[str], allowed: Iterable[str], record: str) -> tuple[str, ...]:
    names = tuple(names)
    unknown = sorted(set(names) - set(allowed))
    if unknown:
        raise ValueError(f"not a field of {record}: {', '.join(map(repr, unknown))}")
    return names


def _fence(name: str) -> str:
    if name in JSON_FIELDS:  # json has no equality; jsonb compares as Python dicts do
        return f" AND j.{name}::jsonb IS NOT DISTINCT FROM i.e_{name}::jsonb"
    return f" AND j.{name} IS NOT DISTINCT FROM i.e_{name}"


def _inputs(shape: Shape) -> dict[str, str]:
    """The columns of ``i`` (also the names of the parameters) and their
    SQL types."""
    columns = {"id": "text"}
    columns.update((f"e_{k}", JOB_TYPES[k]) for k in shape.expect)
    if shape.delete:
        return columns
    columns.update((f"f_{k}", JOB_TYPES[k]) for k in shape.fields)
    if shape.step is not None:
        columns["token"] = "text"
    names = ATTEMPT_TYPES if shape.step == "open" else shape.attempt_fields
    columns.update((f"a_{k}", ATTEMPT_TYPES[k]) for k in names)
    return columns


def notifies(shape: Shape) -> bool:
    """Does a run of this shape notify (when it leaves a job claimable)?"""
    return not shape.delete and bool(shape.fields or shape.step in ("open", "drop"))


@functools.lru_cache(maxsize=512)
def run_sql(shape: Shape, single: bool) -> str:
    """The statement of a run of changes of ``shape`` (names checked): each
    job's compare-and-set in ``done`` (a change without a row there was not
    made), each attempt's change only for a row of ``done``, a notification
    when a job is left claimable (delivered at commit). It returns ``n``
    (the change's place in the run, from 1) and the job as stored after the
    change (for a deletion: as it was).

    The parameters are arrays, or, for a ``single`` change, scalars: then
    the planner knows that ``i`` is one row before it sees the values, and
    the server can keep one plan for the statement (with arrays it plans
    every execution anew, which would double the cost of a completion)."""
    inputs = _inputs(shape)
    if single:
        row = ", ".join(f"%({c})s::{t} AS {c}" for c, t in inputs.items())
        head = f"WITH i AS (SELECT {row}, 1::bigint AS n), "
    else:
        arrays = ", ".join(f"%({c})s::{t}[]" for c, t in inputs.items())
        head = (f"WITH i AS (SELECT * FROM unnest({arrays}) WITH ORDINALITY"
                f" AS i({', '.join(inputs)}, n)), ")
    where = "j.id = i.id" + "".join(_fence(name) for name in shape.expect)
    if shape.delete:
        return (f"{head}done AS (DELETE FROM {{s}}.jobs AS j USING i WHERE {where}"
                f" RETURNING i.n, {_J_COLUMNS}),"
                " history AS (DELETE FROM {s}.attempts AS a USING done WHERE a.job_id = done.id),"
                " up AS (DELETE FROM {s}.job_parents AS e USING done WHERE e.child_id = done.id),"
                " down AS (DELETE FROM {s}.job_parents AS e USING done"
                " WHERE e.parent_id = done.id) SELECT * FROM done")
    sets = [f"{name} = i.f_{name}" for name in shape.fields]
    if shape.step == "open":
        sets.append(f"attempt_records = {_RECORDS} + 1")
    elif shape.step == "drop":
        sets.append(f"attempt_records = {_RECORDS} - 1")
    # A keyed job that stops processing frees a slot of its key: wake idle
    # workers then too (a claim may now take a job with that key).
    was = ", i.e_state AS was_state" if "state" in shape.expect else ""
    if sets:
        done = (f"UPDATE {{s}}.jobs AS j SET {', '.join(sets)} FROM i WHERE {where}"
                f" RETURNING i.n{was}, {_J_COLUMNS}")
    else:
        done = (f"SELECT i.n{was}, {_J_COLUMNS} FROM {{s}}.jobs AS j JOIN i ON {where}"
                " FOR UPDATE OF j")
    mine = "FROM done JOIN i ON i.n = done.n"
    held = "a.claim_token = i.token AND a.job_id = done.id"
    if shape.step == "open":
        names = ", ".join(ATTEMPT_TYPES)
        values = ", ".join(f"i.a_{n}" for n in ATTEMPT_TYPES)
        attempt = (f", attempt AS (INSERT INTO {{s}}.attempts (job_id, claim_token, {names})"
                   f" SELECT done.id, i.token, {values} {mine})")
    elif shape.step == "set":
        assignments = ", ".join(f"{n} = i.a_{n}" for n in shape.attempt_fields)
        attempt = (f", attempt AS (UPDATE {{s}}.attempts AS a SET {assignments}"
                   f" {mine} WHERE {held})")
    elif shape.step == "drop":
        attempt = (", attempt AS (DELETE FROM {s}.attempts AS a USING done"
                   f" JOIN i ON i.n = done.n WHERE {held})")
    else:
        attempt = ""
    freed = (" OR (done.concurrency_key IS NOT NULL AND done.was_state = 'processing'"
             " AND done.state <> 'processing')" if was else "")
    woke = (f", CASE WHEN done.{CLAIMABLE}{freed} THEN pg_notify(%(channel)s, '') END AS woke"
            if notifies(shape) else "")
    return f"{head}done AS ({done}){attempt} SELECT done.*{woke} FROM done"


def change_values(change: Change) -> tuple[Shape, dict[str, Any]]:
    """The shape of ``change`` and its values (by column of ``i``), as the
    columns take them. Raises ValueError for a name that is not a field of
    the record it names."""
    expect = _checked(change.expect, JOB_FIELDS, "Job")
    values: dict[str, Any] = {"id": change.job_id}
    values.update((f"e_{k}", job_value(k, v)) for k, v in change.expect.items())
    if change.delete:
        return Shape((), expect, delete=True), values
    fields = _checked(change.fields, JOB_FIELDS, "Job")
    values.update((f"f_{k}", job_value(k, v)) for k, v in change.fields.items())
    step: AttemptStep = None
    attempt_fields: tuple[str, ...] = ()
    if change.attempt is not None:
        opened = change.attempt.open
        if opened is not None:
            step = "open"
            values.update((f"a_{k}", attempt_value(k, getattr(opened, k)))
                          for k in ATTEMPT_TYPES)
        elif change.attempt.drop:
            step = "drop"
        elif change.attempt.fields:
            step = "set"
            attempt_fields = _checked(change.attempt.fields, ATTEMPT_TYPES, "Attempt")
            values.update((f"a_{k}", attempt_value(k, v))
                          for k, v in change.attempt.fields.items())
        if step is not None:
            values["token"] = change.attempt.token
    return Shape(fields, expect, step, attempt_fields), values


def runs(changes: Sequence[Change], channel: str) -> list[tuple[str, dict[str, Any], int]]:
    """The runs that make ``changes`` in order: (statement, parameters,
    number of changes). A run ends where the shape changes or a job comes
    again (a later change of the same job must see the earlier one). Every
    change is checked before any statement is made."""
    found: list[tuple[Shape, list[dict[str, Any]]]] = []
    ids: set[str] = set()
    for change in changes:
        shape, values = change_values(change)
        if found and found[-1][0] == shape and change.job_id not in ids:
            found[-1][1].append(values)
        else:
            found.append((shape, [values]))
            ids = set()
        ids.add(change.job_id)
    made = []
    for shape, rows in found:
        single = len(rows) == 1
        params: dict[str, Any] = (dict(rows[0]) if single else
                                  {c: [row[c] for row in rows] for c in _inputs(shape)})
        if notifies(shape):
            params["channel"] = channel
        made.append((run_sql(shape, single), params, len(rows)))
    return made


# ---------------------------------------------------------------- values

def json_value(value: dict[str, Any] | list[str] | None) -> Json | None:
    """A dict or list for a ``json`` column (kept as written: key order and all)."""
    return None if value is None else Json(value)


def text(value: str | None) -> str | None:
    """PostgreSQL text holds neither NUL nor lone surrogates; error texts
    (from commands and exceptions) may contain them."""
    if value is None:
        return None
    return value.replace("\x00", "\\0").encode("utf-8", "replace").decode("utf-8")


def to_tail(value: str | None) -> bytes | None:
    """Command output for a ``bytea`` column, exactly (NUL and lone
    surrogates included, which PostgreSQL text cannot hold)."""
    return None if value is None else value.encode("utf-8", "surrogatepass")


def from_tail(value: bytes | memoryview | None) -> str | None:
    return None if value is None else bytes(value).decode("utf-8", "surrogatepass")


def job_value(name: str, value: Any) -> Any:
    """A job field's value as its column takes it."""
    if name == "state":
        return JobState(value).value
    if name in JSON_FIELDS:
        return json_value(value)
    if name == "last_error":
        return text(value)
    return value


def attempt_value(name: str, value: Any) -> Any:
    """An attempt field's value as its column takes it."""
    if name in TAIL_FIELDS:
        return to_tail(value)
    if name == "error":
        return text(value)
    return value


def job_row(job: Job, attempt_records: int) -> list[Any]:
    """The parameters of :data:`INSERT_JOB_SQL`."""
    return [*(job_value(name, getattr(job, name)) for name in JOB_FIELDS), attempt_records]


def attempt_row(attempt: Attempt, token: str) -> tuple[Any, ...]:
    """The parameters of :data:`INSERT_ATTEMPT_SQL`."""
    a = attempt
    return (a.job_id, a.number, token, a.worker_id, a.started_at, a.finished_at, a.outcome,
            a.exit_code, a.signal, text(a.error), to_tail(a.stdout_tail),
            to_tail(a.stderr_tail))


def job_from_row(row: DictRow) -> Job:
    return Job(**{k: row[k] for k in JOB_FIELDS})


def attempt_from_row(row: DictRow) -> Attempt:
    data = {k: row[k] for k in ATTEMPT_FIELDS}
    for key in TAIL_FIELDS:
        data[key] = from_tail(data[key])
    return Attempt(**data)
