"""How jobs and attempts become SQLite rows and back: the insert statements,
the columns a change may name, and the JSON columns (``env``, ``retry``)."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Sequence
from operator import attrgetter, itemgetter

from queuectl_core.models import ATTEMPT_FIELDS, JOB_FIELDS, Attempt, Job

# typing is not imported at run time (the CLI's hot path).
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

JSON_FIELDS = frozenset(Job.json_fields())
_JOB_VALUES = attrgetter(*JOB_FIELDS)
INSERT_JOB = (f"INSERT INTO jobs ({', '.join(JOB_FIELDS)})"
              f" VALUES ({', '.join('?' * len(JOB_FIELDS))})")
#: A job just enqueued sets only these columns (the rest are NULL or their
#: defaults): fewer parameters to bind on a bulk enqueue.
NEW_FIELDS = ("id", "command", "state", "max_retries", "priority", "run_at", "created_at",
              "updated_at", "queue", "timeout", "cwd", "env", "retry")
_NEW_VALUES = attrgetter(*NEW_FIELDS)
INSERT_NEW = (f"INSERT INTO jobs ({', '.join(NEW_FIELDS)})"
              f" VALUES ({', '.join('?' * len(NEW_FIELDS))})")
INSERT_ATTEMPT = (f"INSERT INTO attempts (claim_token, {', '.join(ATTEMPT_FIELDS)})"
                  f" VALUES (?, {', '.join('?' * len(ATTEMPT_FIELDS))})")
#: Columns a change may set or expect (never anything else in SQL text).
JOB_COLUMNS = frozenset(JOB_FIELDS)
ATTEMPT_COLUMNS = frozenset(ATTEMPT_FIELDS)


def json_text(value: dict[str, Any] | None) -> str | None:
    """How the ``env`` and ``retry`` objects are stored."""
    if value is None:
        return None
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


_JSON_AT = tuple(i for i, name in enumerate(JOB_FIELDS) if name in JSON_FIELDS)
_NEW_JSON_AT = tuple(i for i, name in enumerate(NEW_FIELDS) if name in JSON_FIELDS)
#: The columns that INSERT_NEW leaves out, with what they then hold.
_NEW_LEAVES = {name: Job.record_fields()[i].default for i, name in enumerate(JOB_FIELDS)
               if name not in NEW_FIELDS}


def job_row(job: Job, getter: Any = _JOB_VALUES, json_at: tuple[int, ...] = _JSON_AT
            ) -> list[Any]:
    """The values of INSERT_JOB (or, with the new-job getter, INSERT_NEW)."""
    values = list(getter(job))
    for i in json_at:
        if values[i] is not None:
            values[i] = json_text(values[i])
    return values


_LEAVES_OF = itemgetter(*_NEW_LEAVES)
_LEAVES_UNSET = tuple(_NEW_LEAVES.values())


def new_job_row(job: Job) -> list[Any]:
    """The values of INSERT_NEW."""
    return job_row(job, _NEW_VALUES, _NEW_JSON_AT)


def is_new(job: Job) -> bool:
    """Does ``job`` hold nothing but what INSERT_NEW stores?"""
    return bool(_LEAVES_OF(job.__dict__) == _LEAVES_UNSET)


def job_from_row(row: sqlite3.Row) -> Job:
    """The job a ``SELECT *`` or ``RETURNING *`` row of ``jobs`` holds."""
    data = {k: row[k] for k in JOB_FIELDS}
    for key in JSON_FIELDS:
        if data[key] is not None:
            data[key] = json.loads(data[key])
    if data["timeout"] is not None:
        # UPDATE ... RETURNING gives a whole REAL back as an integer.
        data["timeout"] = float(data["timeout"])
    return Job(**data)


def attempt_from_row(row: sqlite3.Row) -> Attempt:
    return Attempt(**{k: row[k] for k in ATTEMPT_FIELDS})


def checked_columns(names: Sequence[str], allowed: frozenset[str]) -> list[str]:
    """``names`` sorted, if each is one of ``allowed`` (so that only column
    names ever reach SQL text); else ValueError."""
    bad = [n for n in names if n not in allowed]
    if bad:
        raise ValueError(f"not a column: {', '.join(bad)}")
    return sorted(names)
