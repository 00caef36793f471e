"""Writes the store may refuse as a whole: a unique key held by another
unfinished job (the partial unique index ``jobs_unique`` says so; these
functions find the holder to name, after the rollback), and an atomic call
whose changes did not all apply (:class:`Undo`)."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import psycopg
from psycopg.rows import DictRow

from queuectl_core.errors import UniqueKeyError
from queuectl_core.models import UNFINISHED_STATES, Change, Job

from .sql import HOLDER_SQL, KEYS_OF_SQL

#: How often a write refused for a unique key whose holder is final by the
#: time it is looked up (so the key is free again) is tried again.
UNIQUE_ROUNDS = 3
#: The index that keeps unique keys unique (``schema``, version 3).
UNIQUE_INDEX = "jobs_unique"

Cursor = psycopg.Cursor[DictRow]
Quote = Callable[[str], str]


class Undo(Exception):
    """Raised inside a transaction to roll it back: an atomic call's change
    did not apply."""


def is_unique_key(exc: psycopg.errors.UniqueViolation) -> bool:
    """Was it the unique key (not a job id stored already)?"""
    return exc.diag.constraint_name == UNIQUE_INDEX


def batch_conflict(jobs: Sequence[Job]) -> UniqueKeyError | None:
    """Two unfinished jobs of one batch with the same unique key."""
    holders: dict[str, str] = {}
    for job in jobs:
        if job.unique_key is None or job.state not in UNFINISHED_STATES:
            continue
        if job.unique_key in holders:
            return UniqueKeyError(job.unique_key, holders[job.unique_key])
        holders[job.unique_key] = job.id
    return None


def _holder(cur: Cursor, q: Quote, key: str, other_than: str | None) -> UniqueKeyError | None:
    row = cur.execute(q(HOLDER_SQL), (key, other_than)).fetchone()
    return None if row is None else UniqueKeyError(key, str(row["id"]))


def holder_of_jobs(cur: Cursor, q: Quote, jobs: Sequence[Job]) -> UniqueKeyError | None:
    """The error naming the stored job that holds the key of one of ``jobs``
    (None: the holder finished meanwhile)."""
    for job in jobs:
        if job.unique_key is not None and job.state in UNFINISHED_STATES:
            taken = _holder(cur, q, job.unique_key, None)
            if taken is not None:
                return taken
    return None


def holder_of_changes(cur: Cursor, q: Quote, changes: Sequence[Change]
                      ) -> UniqueKeyError | None:
    """The error naming the job that holds the key one of ``changes`` would
    give an unfinished job: those that make a job unfinished or set its key
    (None: the holder finished meanwhile)."""
    risky = [c for c in changes if not c.delete and (
        "unique_key" in c.fields or c.fields.get("state") in UNFINISHED_STATES)]
    if not risky:
        return None
    stored = {str(r["id"]): str(r["unique_key"]) for r in cur.execute(
        q(KEYS_OF_SQL), ([c.job_id for c in risky],)).fetchall()}
    for change in risky:
        key = change.fields.get("unique_key", stored.get(change.job_id))
        if key is not None:
            taken = _holder(cur, q, key, change.job_id)
            if taken is not None:
                return taken
    return None
