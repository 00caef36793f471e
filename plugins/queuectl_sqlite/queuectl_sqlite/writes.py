"""The SQLite store's writes inside a transaction: the core's changes as
compare-and-set statements, the dependency graph's edges, and unique keys."""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from operator import attrgetter

from queuectl_core.errors import ChangedMeanwhile, UniqueKeyError
from queuectl_core.models import ATTEMPT_FIELDS, Change, Job

from .rows import (
    ATTEMPT_COLUMNS,
    INSERT_ATTEMPT,
    JOB_COLUMNS,
    JSON_FIELDS,
    checked_columns,
    job_from_row,
    json_text,
)
from .schema import UNFINISHED

#: The unfinished job holding a unique key.
HOLDER_SQL = f"SELECT id FROM jobs WHERE unique_key = ? AND {UNFINISHED} LIMIT 1"
#: The jobs that run after one (parameter: its id), in enqueue order.
DEPENDENTS_SQL = ("SELECT jobs.* FROM job_parents JOIN jobs ON jobs.id = job_parents.child_id"
                  " WHERE job_parents.parent_id = ? ORDER BY jobs.seq")


class Undo(Exception):
    """Raised inside a write transaction to roll it back."""


def unique_error(conn: sqlite3.Connection, keys: Sequence[str | None]) -> UniqueKeyError | None:
    """After an IntegrityError: the unique key taken, if that was it (read
    in the failed transaction's connection, before its rollback)."""
    for key in keys:
        if key is None:
            continue
        row = conn.execute(HOLDER_SQL, (key,)).fetchone()
        if row is not None:
            return UniqueKeyError(key, str(row[0]))
    return None


def insert_edges(conn: sqlite3.Connection, jobs: Sequence[Job]) -> None:
    """Record who runs after whom, for :data:`DEPENDENTS_SQL`."""
    edges = [(parent, job.id) for job in jobs for parent in job.after or ()]
    if edges:
        conn.executemany("INSERT OR IGNORE INTO job_parents (parent_id, child_id) VALUES (?, ?)",
                         edges)


def apply_changes(conn: sqlite3.Connection, changes: Sequence[Change], *, atomic: bool
                  ) -> list[Job | None]:
    """The changes in order; with ``atomic``, raises Undo unless all apply.
    A change that would give an unfinished job a taken unique key raises
    UniqueKeyError (the caller's transaction then rolls back)."""
    done: list[Job | None] = []
    for change in changes:
        try:
            job = apply_in(conn, change)
        except sqlite3.IntegrityError:
            error = unique_error(conn, [change.fields.get("unique_key")]) or _held_key(conn,
                                                                                       change)
            if error is None:
                raise
            raise error from None
        if job is None and atomic:
            raise Undo
        done.append(job)
    return done


def _held_key(conn: sqlite3.Connection, change: Change) -> UniqueKeyError | None:
    row = conn.execute("SELECT unique_key FROM jobs WHERE id = ?", (change.job_id,)).fetchone()
    if row is None or row[0] is None:
        return None
    holder = conn.execute(HOLDER_SQL, (row[0],)).fetchone()
    return None if holder is None else UniqueKeyError(row[0], str(holder[0]))


def guard(conn: sqlite3.Connection, changes: Sequence[Change]) -> None:
    """Make an insert's changes to stored jobs; ChangedMeanwhile unless all
    apply (the caller's transaction then rolls back)."""
    for change in changes:
        if apply_in(conn, change) is None:
            raise ChangedMeanwhile(f"job {change.job_id!r} changed meanwhile")


def apply_in(conn: sqlite3.Connection, change: Change) -> Job | None:
    """One compare-and-set, inside the caller's write transaction."""
    expect = checked_columns(list(change.expect), JOB_COLUMNS)
    where = "".join(f" AND {k} IS ?" for k in expect)
    params = [change.job_id, *(_value(k, change.expect[k]) for k in expect)]
    if change.delete:
        row = conn.execute(f"DELETE FROM jobs WHERE id = ?{where} RETURNING *",
                           params).fetchone()
        if row is not None:
            conn.execute("DELETE FROM attempts WHERE job_id = ?", (change.job_id,))
            conn.execute("DELETE FROM job_parents WHERE child_id = ?1 OR parent_id = ?1",
                         (change.job_id,))
        return None if row is None else job_from_row(row)
    names = checked_columns(list(change.fields), JOB_COLUMNS)
    values = [_value(k, change.fields[k]) for k in names]
    if names:
        sets = ", ".join(f"{k} = ?" for k in names)
        row = conn.execute(f"UPDATE jobs SET {sets} WHERE id = ?{where} RETURNING *",
                           [*values, *params]).fetchone()
    else:
        row = conn.execute(f"SELECT * FROM jobs WHERE id = ?{where}", params).fetchone()
    if row is None:
        return None
    step = change.attempt
    if step is not None:
        if step.open is not None:
            conn.execute(INSERT_ATTEMPT, (step.token, *attrgetter(*ATTEMPT_FIELDS)(step.open)))
        elif step.drop:
            conn.execute("DELETE FROM attempts WHERE claim_token = ?", (step.token,))
        elif step.fields:
            cols = checked_columns(list(step.fields), ATTEMPT_COLUMNS)
            conn.execute(
                f"UPDATE attempts SET {', '.join(f'{k} = ?' for k in cols)}"
                " WHERE claim_token = ?", [*(step.fields[k] for k in cols), step.token])
    return job_from_row(row)


def _value(name: str, value: object) -> object:
    return json_text(value) if name in JSON_FIELDS else value  # type: ignore[arg-type]

