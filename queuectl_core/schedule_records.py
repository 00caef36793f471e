"""The records of recurring schedules: a schedule, one firing of it, and a
fire (what a store makes in one transaction).

Declared like the job records (:mod:`.models`): each field's check and
whether it is a time, so that ``--json``, the stores' documents and
:func:`~queuectl_core.models.record_from_dict` come from one declaration.
The rules (ticks, catch-up, overlap) are in :mod:`.schedules`; this module
is light enough for a store to import.
"""

from __future__ import annotations

from .models import Entry, Job, _field, _float, _int, _str, record_from_dict
from .records import Record
from .timeutil import iso

# typing is not imported at run time.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

OVERLAP_MODES = ("skip", "queue", "allow")
CATCHUP_MODES = ("none", "latest", "all")
#: ``fired``: a job was made for the tick; ``skipped``: overlap ``skip``
#: found the previous job still active; ``run``: ``schedule run`` (a
#: firing outside the cadence, at the time of the command).
FIRING_OUTCOMES = ("fired", "skipped", "run")


def _one_of(choices: tuple[str, ...]) -> Any:
    def check(value: object) -> str:
        if value not in choices:
            raise ValueError(f"must be one of: {', '.join(choices)}")
        return str(value)
    return check


def _bool(value: object) -> bool:
    if type(value) is not bool:
        raise ValueError("must be true or false")
    return value


def _ticks(value: object) -> list[int]:
    if not isinstance(value, list):
        raise ValueError("must be a list of epoch milliseconds")
    return [_int(v) for v in value]


class Schedule(Entry, kw_only=True):
    """A recurring schedule as stored. ``next_run_at`` is its cursor: the
    next tick to fire; ``version`` fences every change (compare-and-set)."""

    name: str = _field(_str)
    cron: str | None = _field(_str, None)
    #: The interval as given (``90s``, ``1h``); ticks are ``start_at + k * every``.
    every: str | None = _field(_str, None)
    command: str = _field(_str)
    queue: str = _field(_str, "default")
    priority: int = _field(_int, 0)
    timeout: float | None = _field(_float, None)
    #: The jobs' working directory (where ``schedule add`` ran; None: the worker's).
    cwd: str | None = _field(_str, None)
    #: None: the ``max_retries`` setting when a job is made.
    max_retries: int | None = _field(_int, None)
    tz: str = _field(_str, "UTC")
    overlap: str = _field(_one_of(OVERLAP_MODES), "skip")
    catchup: str = _field(_one_of(CATCHUP_MODES), "none")
    paused: bool = _field(_bool, False)
    #: The anchor of ``every`` ticks (and when the schedule was made).
    start_at: int = _field(_int, time=True)
    next_run_at: int = _field(_int, time=True)
    last_run_at: int | None = _field(_int, None, time=True)
    last_job_id: str | None = _field(_str, None)
    #: Ticks waiting for the previous job to finish (overlap ``queue``).
    queued: list[int] = _field(_ticks, None, json=True)
    #: Where it was declared: ``cli`` or ``yaml`` (workers sync the YAML file).
    source: str = _field(_one_of(("cli", "yaml")), "cli")
    created_at: int = _field(_int, time=True)
    updated_at: int = _field(_int, time=True)
    version: int = _field(_int, 1, internal=True)

    def __post_init__(self) -> None:
        if self.queued is None:
            object.__setattr__(self, "queued", [])

    def to_doc(self) -> dict[str, Any]:
        """Every field as stored (epoch ms; the version included)."""
        return {**self.as_dict(), "queued": list(self.queued)}

    @classmethod
    def from_doc(cls, doc: object) -> Schedule:
        """A schedule from a store's document (strictly checked)."""
        return record_from_dict(cls, doc)

    def to_json(self) -> dict[str, Any]:
        data = Entry.to_json(self)
        data["queued"] = [iso(t) for t in self.queued]
        return data


class Firing(Entry, kw_only=True):
    """One tick of a schedule, recorded once: unique on (schedule, tick,
    outcome is ``run``)."""

    schedule: str = _field(_str)
    tick: int = _field(_int, time=True)
    outcome: str = _field(_one_of(FIRING_OUTCOMES))
    job_id: str | None = _field(_str, None)
    at: int = _field(_int, time=True)

    @property
    def manual(self) -> bool:
        return self.outcome == "run"


class Fire(Record):
    """What one firing pass of one schedule makes, all or nothing: the
    schedule's new state (``schedule``, version ``expect_version + 1``), if
    it is still at ``expect_version``; the firing records, none of whose
    (schedule, tick) may exist yet; the jobs, none of whose ids may exist."""

    schedule: Schedule
    expect_version: int
    firings: tuple[Firing, ...] = ()
    jobs: tuple[Job, ...] = ()
    #: For the log (catch-up capped): not stored.
    warning: str | None = None
