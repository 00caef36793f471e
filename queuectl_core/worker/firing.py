"""Firing recurring schedules from every worker (no leader).

Each worker keeps the time of the next tick of any schedule; when it comes
(an idle worker sleeps until then; a busy one looks at each housekeeping
beat) it reads the schedules, lets :func:`queuectl_core.schedules.plan`
decide each due one, and asks the store to make the fire, fenced on the
schedule's version. Workers racing for a tick all try; the store lets one
win and the others change nothing (see ``schedule_seam``)."""

from __future__ import annotations

import logging

from ..errors import TransientStorageError
from ..ledger import Ledger
from ..schedule_records import Fire
from ..schedules import declared_schedules, plan, sync_plan, wants_pass

# typing is not imported at run time.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable, Mapping
    from typing import Any

    from ..schedule_records import Schedule

log = logging.getLogger("queuectl.worker")

#: A worker reads the schedules at least this often (schedules added on
#: another machine, or by a command whose wake-up it missed).
REFRESH_MS = 5_000
#: While ticks wait behind a running job (overlap ``queue``), look this often.
QUEUED_POLL_MS = 1_000
#: Tries per schedule and pass when other workers change it meanwhile.
ROUNDS = 5


class ScheduleFirer:
    """One worker's part in firing schedules."""

    def __init__(self, ledger: Ledger, max_retries: Callable[[], int]) -> None:
        self.store = ledger.store
        self.enabled = bool(getattr(self.store, "supports_schedules", False))
        self._max_retries = max_retries
        #: When to read the schedules again (0: at the next chance).
        self.next_at = 0
        #: The YAML file's ``schedules:`` section, put into the store on the
        #: first pass (the file wins for the names it declares).
        self.declared: Mapping[str, Any] | None = None

    def due(self, now: int) -> bool:
        return self.enabled and now >= self.next_at

    def stale(self) -> None:
        """Something may have changed (a wake-up): read them next time."""
        self.next_at = 0

    def wait_ms(self, now: int) -> int | None:
        """How long an idle worker may sleep before the next tick."""
        return max(0, self.next_at - now) if self.enabled else None

    def run(self, now: int) -> int:
        """Fire what is due at ``now``; the number of jobs made. Storage
        outages propagate (the worker retries); anything else is logged."""
        if not self.enabled:
            return 0
        self.next_at = now + REFRESH_MS  # also if this pass fails
        try:
            return self._run(now)
        except TransientStorageError:
            raise
        except Exception as exc:  # never stop a worker (or its running job) for this
            log.error("firing schedules failed: %s", exc)
            return 0

    def _run(self, now: int) -> int:
        made = 0
        wake = now + REFRESH_MS
        if self.declared:
            self.sync(now)
        for schedule in self.store.list_schedules():
            try:
                latest = self._fire(schedule, now)
            except TransientStorageError:
                raise
            except Exception as exc:
                log.error("schedule %s: firing failed: %s", schedule.name, exc)
                continue
            made += latest[1]
            current = latest[0]
            if current is None or current.paused:
                continue
            wake = min(wake, current.next_run_at)
            if current.queued:
                wake = min(wake, now + QUEUED_POLL_MS)
        self.next_at = wake
        return made

    def sync(self, now: int) -> None:
        """Make the store hold the YAML file's schedules (once: other
        workers may race; the compare-and-set lets one win)."""
        assert self.declared is not None
        declared = declared_schedules(self.declared, now=now)
        self.declared = None
        stored = {s.name: s for s in self.store.list_schedules()}
        for schedule, expect in sync_plan(stored, declared, now):
            if self.store.put_schedule(schedule, expect):
                log.info("schedule %s %s from the YAML file", schedule.name,
                         "added" if expect is None else "updated")

    def _fire(self, schedule: Schedule, now: int) -> tuple[Schedule | None, int]:
        current: Schedule | None = schedule
        for _ in range(ROUNDS):
            if current is None or not wants_pass(current, now):
                return current, 0
            last = self.store.get(current.last_job_id) if current.last_job_id else None
            fire = plan(current, now, last, default_max_retries=self._max_retries())
            if fire is None:
                return current, 0
            if self.store.fire_schedule(fire):
                if fire.warning:
                    log.warning("%s", fire.warning)
                for job in fire.jobs:
                    log.info("schedule %s fired %s", current.name, job.id)
                return fire.schedule, len(fire.jobs)
            latest = self.store.get_schedule(current.name)
            if latest is not None and latest.version == current.version:
                return self._past_conflict(current, fire), 0
            current = latest  # another worker was first
        return current, 0

    def _past_conflict(self, current: Schedule, fire: Fire) -> Schedule | None:
        """The fire conflicted though the schedule had not changed: one of its
        ticks is recorded already, or a job has its id (someone enqueued it
        by hand). Those ticks are not fired again; the cursor moves past
        them, so the schedule is not stuck."""
        ticks = ", ".join(str(f.tick) for f in fire.firings) or "queued ticks"
        log.error("schedule %s: ticks %s were fired before or their job ids are taken; "
                  "skipping them", fire.schedule.name, ticks)
        moved = fire.schedule.replace(last_job_id=current.last_job_id)
        if self.store.fire_schedule(Fire(schedule=moved, expect_version=fire.expect_version)):
            return moved
        return self.store.get_schedule(fire.schedule.name)
