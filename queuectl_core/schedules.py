"""Recurring schedules, decided once: what a schedule spec may say, when
its ticks fall, and what one firing pass makes (pure functions; a store
makes a :class:`~queuectl_core.schedule_records.Fire` all or nothing).

* Ticks. ``cron``: evaluated by cronsim in the schedule's zone (zoneinfo);
  in a DST gap a tick fires when the gap ends, in a DST overlap a fixed
  time fires once (the first), a wildcard hour fires in both (cronsim's
  answers, as Debian's cron). ``every``: ``start_at + k * every``
  (``k >= 1``), anchored, so ticks never drift.
* Catch-up, when the cursor (``next_run_at``) is behind ``now``: ``none``
  fires the latest due tick only if it is on time (within
  :func:`grace_ms` of it); ``latest`` fires the latest whatever its age;
  ``all`` fires every due tick, the newest :data:`CATCHUP_CAP` of them.
* Overlap, while the schedule's previous job is active (pending, failed
  awaiting a retry, processing): ``skip`` records the tick as skipped;
  ``queue`` keeps the tick (``queued``) and makes its job when the previous
  one has finished; ``allow`` makes the job anyway.
"""

from __future__ import annotations

import os
from collections import deque
from datetime import UTC, datetime, tzinfo
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from cronsim import CronSim, CronSimError

from .errors import UsageError, shown
from .jobspec import parse_job_spec, queue_name_problem
from .models import Job, JobState
from .schedule_records import CATCHUP_MODES, OVERLAP_MODES, Fire, Firing, Schedule
from .timeutil import iso, parse_duration_ms, parse_timestamp_ms

# typing is not imported at run time.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Iterator, Mapping, Sequence
    from typing import Any

#: ``catchup: all`` fires at most this many missed ticks per pass; the
#: newest are kept, the older dropped with a warning. Also the number of
#: ticks ``overlap: queue`` holds.
CATCHUP_CAP = 100
#: A missed tick is still "on time" (fired with ``catchup: none``) within
#: this long of it, or within one period for faster schedules.
GRACE_MS = 60_000
MIN_EVERY_MS = 1000
#: Fields of the JSON form (and of the YAML ``schedules:`` entries).
SPEC_KEYS = ("name", "cron", "every", "command", "queue", "priority", "timeout",
             "max_retries", "tz", "overlap", "catchup", "paused", "start", "cwd")
#: The fields that define a schedule (what ``--replace`` and the YAML sync compare).
DEFINITION = ("cron", "every", "command", "queue", "priority", "timeout", "max_retries",
              "tz", "overlap", "catchup", "cwd")
#: Job states in which a schedule's previous job still overlaps the next.
ACTIVE_STATES = (JobState.PENDING, JobState.FAILED, JobState.PROCESSING)
#: Searching a cron expression further than this many ticks gives up.
_MAX_SCAN = 2_000_000


# ------------------------------------------------------------ specs

def name_problem(name: object) -> str | None:
    """Why ``name`` cannot name a schedule (the queue names' rule), or None."""
    return queue_name_problem(name)


def zone(name: str) -> tzinfo:
    """The time zone ``name`` (an IANA key such as ``Europe/Berlin``).
    Raises UsageError."""
    if name == "UTC":
        return UTC
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        raise UsageError(f"unknown time zone {shown(name)!r} (use an IANA name such as "
                         "Europe/Berlin or UTC)") from None


def check_cron(expr: str) -> None:
    """Raise UsageError for an expression cronsim does not accept."""
    try:
        CronSim(expr, datetime(2026, 1, 1, tzinfo=UTC))
    except CronSimError as exc:
        raise UsageError(f"invalid cron expression {shown(expr)!r}: {exc}") from None


def every_ms(schedule: Schedule) -> int:
    assert schedule.every is not None
    return parse_duration_ms(schedule.every)


def parse_spec(data: object, *, now: int, source: str = "cli",
               base_dir: str | None = None) -> Schedule:
    """A new schedule from its JSON/YAML form (the CLI's options make the
    same dict). Raises UsageError with a one-line message."""
    if not isinstance(data, dict):
        raise UsageError('a schedule must be a JSON object, e.g. {"name": "nightly", '
                         '"cron": "0 3 * * *", "command": "backup.sh"}')
    for key in data:
        if key not in SPEC_KEYS:
            raise UsageError(f"invalid schedule: {shown(str(key))}: unknown field")
    name = data.get("name")
    problem = name_problem(name)
    if problem is not None:
        raise UsageError(f"invalid schedule name: {problem}")
    cron, every = data.get("cron"), data.get("every")
    if (cron is None) == (every is None):
        raise UsageError("a schedule needs exactly one of cron and every")
    job = {k: data[k] for k in ("command", "queue", "priority", "timeout", "max_retries",
                                "cwd") if data.get(k) is not None}
    if "command" not in job:
        raise UsageError("invalid schedule: command: is required")
    job = parse_job_spec(job)
    if base_dir is not None:
        cwd = job.get("cwd")
        job["cwd"] = base_dir if cwd is None else os.path.normpath(os.path.join(base_dir, cwd))
    tz = data.get("tz", "UTC")
    if type(tz) is not str:
        raise UsageError("invalid schedule: tz: must be a string")
    zone(tz)
    every = _checked_cadence(cron, every)
    for key, choices in (("overlap", OVERLAP_MODES), ("catchup", CATCHUP_MODES)):
        if key in data and data[key] not in choices:
            raise UsageError(f"invalid schedule: {key}: must be one of: {', '.join(choices)}")
    paused = data.get("paused", False)
    if type(paused) is not bool:
        raise UsageError("invalid schedule: paused: must be true or false")
    start = now // 1000 * 1000
    if data.get("start") is not None:
        start = parse_timestamp_ms(data["start"], "start")
    timeout = job.get("timeout")
    schedule = Schedule(
        name=str(name), cron=cron, every=every, command=job["command"],
        queue=job.get("queue", "default"), priority=job.get("priority", 0),
        timeout=None if timeout is None else float(timeout), cwd=job.get("cwd"),
        max_retries=job.get("max_retries"), tz=tz, overlap=data.get("overlap", "skip"),
        catchup=data.get("catchup", "none"), paused=paused, start_at=start,
        next_run_at=0, source=source, created_at=now, updated_at=now)
    first = next_tick(schedule, now)
    if first is None:
        raise UsageError(f"invalid schedule: cron expression {cron!r} never fires")
    return schedule.replace(next_run_at=first)


def _checked_cadence(cron: object, every: object) -> str | None:
    """Check the cron expression or the interval; the interval as text."""
    if cron is not None:
        if type(cron) is not str:
            raise UsageError("invalid schedule: cron: must be a string")
        check_cron(cron)
        return None
    if type(every) in (int, float):
        every = f"{every}s"
    if type(every) is not str:
        raise UsageError("invalid schedule: every: must be a duration such as 30s or 1h")
    if parse_duration_ms(every) < MIN_EVERY_MS:
        raise UsageError(f"invalid schedule: every: {every!r} is shorter than 1s")
    return every


def replaced(old: Schedule, new: Schedule, now: int) -> Schedule:
    """``new`` taking the place of ``old`` (``--replace``, the YAML sync):
    its history (last run, last job, queued ticks) kept, the cursor the next
    tick after now and after the last run, the version moved on."""
    after = max(now, old.last_run_at or 0)
    if all(getattr(old, k) == getattr(new, k) for k in (*DEFINITION, "start_at")):
        cursor: int | None = old.next_run_at
    else:
        cursor = next_tick(new, after)
    return new.replace(next_run_at=cursor if cursor is not None else new.next_run_at,
                       last_run_at=old.last_run_at, last_job_id=old.last_job_id,
                       queued=list(old.queued), created_at=old.created_at,
                       version=old.version + 1, updated_at=now)


def same_definition(a: Schedule, b: Schedule) -> bool:
    return all(getattr(a, k) == getattr(b, k) for k in DEFINITION)


# ------------------------------------------------------------ ticks

def _cron_ticks(schedule: Schedule, after: int) -> Iterator[int]:
    """The cron ticks strictly after ``after``, in order (cronsim's answers)."""
    assert schedule.cron is not None
    start = datetime.fromtimestamp(after / 1000, zone(schedule.tz))
    last = after
    for count, moment in enumerate(CronSim(schedule.cron, start)):
        if count > _MAX_SCAN:
            return
        tick = round(moment.timestamp() * 1000)
        if tick > last:
            last = tick
            yield tick


def next_tick(schedule: Schedule, after: int) -> int | None:
    """The first tick strictly after ``after`` (None: a cron expression
    that never matches again)."""
    if schedule.every is not None:
        period = every_ms(schedule)
        k = max(1, (after - schedule.start_at) // period + 1)
        return schedule.start_at + k * period
    return next(_cron_ticks(schedule, after), None)


def upcoming(schedule: Schedule, after: int, count: int) -> list[int]:
    """The next ``count`` ticks after ``after``."""
    ticks: list[int] = []
    at: int | None = after
    while len(ticks) < count and at is not None:
        at = next_tick(schedule, at)
        if at is not None:
            ticks.append(at)
    return ticks


def ticks_through(schedule: Schedule, first: int, now: int, keep: int = CATCHUP_CAP
                  ) -> tuple[list[int], int]:
    """The ticks from ``first`` (a tick) to ``now`` inclusive: the newest
    ``keep`` of them, and how many there are."""
    if first > now:
        return [], 0
    if schedule.every is not None:
        period = every_ms(schedule)
        k_first = max(1, -((schedule.start_at - first) // period))
        k_last = (now - schedule.start_at) // period
        count = max(0, k_last - k_first + 1)
        ks = range(max(k_first, k_last - keep + 1), k_last + 1)
        return [schedule.start_at + k * period for k in ks], count
    newest: deque[int] = deque([first], maxlen=keep)
    count = 1
    for tick in _cron_ticks(schedule, first):
        if tick > now:
            break
        newest.append(tick)
        count += 1
    return list(newest), count


def grace_ms(latest: int, following: int | None) -> int:
    """How late the latest due tick may be fired with ``catchup: none``:
    GRACE_MS, or one period when ticks come faster."""
    if following is None:
        return GRACE_MS
    return min(GRACE_MS, following - latest)


# ------------------------------------------------------------ firing

def job_id_for(name: str, tick: int, *, manual: bool = False) -> str:
    """A scheduled job's id: one per tick, so a tick's job cannot be made
    twice even past the firing records (``nightly@2026-12-06T03:00:00.000Z``;
    ``nightly@run-...`` for ``schedule run``)."""
    return f"{name}@{'run-' if manual else ''}{iso(tick)}"


def job_for(schedule: Schedule, tick: int, now: int, *, default_max_retries: int,
            manual: bool = False) -> Job:
    """The job a tick makes: due at once (``run_at`` is the tick)."""
    retries = schedule.max_retries
    return Job.new(
        id=job_id_for(schedule.name, tick, manual=manual), command=schedule.command,
        max_retries=default_max_retries if retries is None else retries,
        priority=schedule.priority, run_at=min(tick, now), created_at=now,
        queue=schedule.queue, timeout=schedule.timeout, cwd=schedule.cwd,
    ).replace(schedule=schedule.name, scheduled_for=tick)


def is_active(job: Job | None) -> bool:
    return job is not None and job.state in ACTIVE_STATES


def wants_pass(schedule: Schedule, now: int) -> bool:
    """Could a firing pass over ``schedule`` do anything now? (A tick due,
    or ticks queued behind a job that may have finished.)"""
    if schedule.paused:
        return False
    return schedule.next_run_at <= now or bool(schedule.queued)


def plan(schedule: Schedule, now: int, last_job: Job | None, *,
         default_max_retries: int) -> Fire | None:
    """What a firing pass over ``schedule`` makes at ``now``, given its
    previous job as stored (``last_job_id``), or None when nothing is due.
    The store makes it only if the schedule is still at this version."""
    if schedule.paused:
        return None
    active = is_active(last_job)
    queued = list(schedule.queued)
    firings: list[Firing] = []
    jobs: list[Job] = []
    warnings: list[str] = []
    cursor = schedule.next_run_at
    last_run_at = schedule.last_run_at
    last_job_id = schedule.last_job_id

    def fire(tick: int) -> None:
        nonlocal active, last_job_id
        job = job_for(schedule, tick, now, default_max_retries=default_max_retries)
        jobs.append(job)
        firings.append(Firing(schedule=schedule.name, tick=tick, outcome="fired",
                              job_id=job.id, at=now))
        last_job_id, active = job.id, True

    if schedule.overlap == "queue" and queued and not active:
        fire(queued.pop(0))
    chosen: list[int] = []
    if schedule.next_run_at <= now:
        recent, count = ticks_through(schedule, schedule.next_run_at, now)
        following = next_tick(schedule, now)
        # A cron expression that never fires again parks at the end of time.
        cursor = following if following is not None else 2**62
        if recent:
            latest = recent[-1]
            if schedule.catchup == "all":
                chosen = recent
                if count > len(recent):
                    warnings.append(f"schedule {schedule.name}: {count} ticks missed; "
                                    f"firing the newest {len(recent)} (catchup: all is "
                                    f"capped at {CATCHUP_CAP})")
            elif schedule.catchup == "latest" or now - latest <= grace_ms(latest, following):
                chosen = [latest]
            last_run_at = latest if chosen else last_run_at
    for tick in chosen:
        if schedule.overlap == "allow" or not active:
            fire(tick)
        elif schedule.overlap == "skip":
            firings.append(Firing(schedule=schedule.name, tick=tick, outcome="skipped",
                                  at=now))
        else:
            queued.append(tick)
    if len(queued) > CATCHUP_CAP:
        warnings.append(f"schedule {schedule.name}: more than {CATCHUP_CAP} ticks queued "
                        "behind a running job; dropping the oldest")
        queued = queued[-CATCHUP_CAP:]
    if cursor == schedule.next_run_at and not firings and queued == schedule.queued:
        return None
    new = schedule.replace(next_run_at=cursor, last_run_at=last_run_at,
                           last_job_id=last_job_id, queued=queued,
                           version=schedule.version + 1, updated_at=now)
    return Fire(schedule=new, expect_version=schedule.version, firings=tuple(firings),
                jobs=tuple(jobs), warning="; ".join(warnings) or None)


def manual_fire(schedule: Schedule, now: int, *, default_max_retries: int) -> Fire:
    """``schedule run``: one job now, outside the cadence (whatever the
    overlap mode or pause; the cursor is not moved)."""
    job = job_for(schedule, now, now, default_max_retries=default_max_retries, manual=True)
    firing = Firing(schedule=schedule.name, tick=now, outcome="run", job_id=job.id, at=now)
    new = schedule.replace(last_job_id=job.id, version=schedule.version + 1, updated_at=now)
    return Fire(schedule=new, expect_version=schedule.version, firings=(firing,), jobs=(job,))


def paused(schedule: Schedule, now: int, pause: bool) -> Schedule:
    """``pause``/``resume``: a resumed schedule fires only ticks after now
    (none of the time it was paused)."""
    cursor = schedule.next_run_at
    if not pause and schedule.paused:
        cursor = next_tick(schedule, now) or cursor
    return schedule.replace(paused=pause, next_run_at=cursor, version=schedule.version + 1,
                            updated_at=now)


def describe_cadence(schedule: Schedule) -> str:
    if schedule.cron is not None:
        return f"cron {schedule.cron}" + ("" if schedule.tz == "UTC" else f" ({schedule.tz})")
    return f"every {schedule.every}"


def spec_of(schedule: Schedule) -> Mapping[str, Any]:
    """The JSON form that would make ``schedule`` again."""
    out = {k: getattr(schedule, k) for k in ("name", *DEFINITION, "paused")}
    return {k: v for k, v in out.items() if v is not None}


def declared_schedules(section: Mapping[str, Any], *, now: int) -> list[Schedule]:
    """The YAML file's ``schedules:`` section (name -> fields), checked.
    Raises UsageError naming the schedule."""
    out: list[Schedule] = []
    for name, fields in section.items():
        if not isinstance(fields, dict):
            raise UsageError(f"{shown(str(name))}: must be a mapping of fields")
        if "name" in fields and fields["name"] != name:
            raise UsageError(f"{shown(str(name))}: name: must be the key or absent")
        try:
            out.append(parse_spec({**fields, "name": name}, now=now, source="yaml"))
        except UsageError as exc:
            raise UsageError(f"{shown(str(name))}: {exc}") from None
    return out


def sync_plan(stored: Mapping[str, Schedule], declared: list[Schedule], now: int
              ) -> list[tuple[Schedule, int | None]]:
    """What a worker puts to make the store hold the YAML file's schedules:
    ``(schedule, expect_version)`` for each declared one missing or defined
    differently (the file wins over ``schedule add`` for its names; the
    cursor and history are kept). Schedules the file no longer declares are
    left alone (``schedule remove`` removes them)."""
    puts: list[tuple[Schedule, int | None]] = []
    for new in declared:
        old = stored.get(new.name)
        if old is None:
            puts.append((new, None))
        elif old.source != "yaml" or not same_definition(old, new):
            kept = replaced(old, new.replace(paused=old.paused), now)
            puts.append((kept, old.version))
    return puts


def schedule_view(schedule: Schedule, firings: Sequence[Firing], now: int) -> dict[str, Any]:
    """A schedule as ``schedule show --json`` (and the dashboard) give it:
    its fields, its next 5 fire times (none while paused) and ``firings``
    (its last ones, newest first)."""
    after = max(now, schedule.next_run_at - 1)
    following = [] if schedule.paused else upcoming(schedule, after, 5)
    return {**schedule.to_json(), "next_runs": [iso(t) for t in following],
            "firings": [f.to_json() for f in firings]}
