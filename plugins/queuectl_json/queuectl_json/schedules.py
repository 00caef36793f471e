"""The JSON store's schedules (the optional seam of
``queuectl_core.schedule_seam``), kept in its state (schedule_ops.py). A
fire is one journal line under the exclusive lock, written only after the
schedule's version, its firing keys and its job ids are checked: the line
is the commit point of the schedule's new cursor, its firings and its jobs
together."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import AbstractContextManager
from typing import TYPE_CHECKING, Any

from .changes import Batch
from .records import ACTIVE_STATES, check_job, job_record
from .schedule_ops import check_schedule

if TYPE_CHECKING:
    from queuectl_core.schedule_records import Fire, Firing, Schedule

    from .state import State


def _firing(rec: dict[str, Any]) -> Firing:
    from queuectl_core.schedule_records import Firing

    return Firing(schedule=rec["schedule"], tick=rec["tick"], outcome=rec["outcome"],
                  job_id=rec.get("job_id"), at=rec["at"])


def _firing_rec(f: Firing) -> dict[str, Any]:
    return {"schedule": f.schedule, "tick": f.tick, "manual": f.manual, "outcome": f.outcome,
            "job_id": f.job_id, "at": f.at}


class JsonSchedules:
    """Mixed into JsonStorage."""

    supports_schedules = True
    if TYPE_CHECKING:
        @property
        def _state(self) -> State: ...

        def _locked(self, *, exclusive: bool, init: bool = False
                    ) -> AbstractContextManager[None]: ...
        def _batch(self) -> Batch: ...
        def _commit(self, batch: Batch) -> None: ...
        def _exists(self, job_id: str) -> bool: ...

    def list_schedules(self) -> list[Schedule]:
        from queuectl_core.schedule_records import Schedule

        with self._locked(exclusive=False):
            docs = [self._state.schedules[n] for n in sorted(self._state.schedules)]
        return [Schedule.from_doc(d) for d in docs]

    def get_schedule(self, name: str) -> Schedule | None:
        from queuectl_core.schedule_records import Schedule

        with self._locked(exclusive=False):
            doc = self._state.schedules.get(name)
        return None if doc is None else Schedule.from_doc(doc)

    def _version_is(self, name: str, expect_version: int | None) -> bool:
        doc = self._state.schedules.get(name)
        if expect_version is None:
            return doc is None
        return doc is not None and doc["version"] == expect_version

    def _one_line(self, op: dict[str, Any]) -> None:
        batch = self._batch()
        batch.ops.append(op)
        self._commit(batch)

    def put_schedule(self, schedule: Schedule, expect_version: int | None) -> bool:
        doc = check_schedule(schedule.to_doc())
        with self._locked(exclusive=True):
            if not self._version_is(schedule.name, expect_version):
                return False
            self._one_line({"op": "schedule", "put": doc})
        return True

    def remove_schedule(self, name: str) -> bool:
        with self._locked(exclusive=True):
            if name not in self._state.schedules:
                return False
            self._one_line({"op": "schedule", "remove": name})
        return True

    def fire_schedule(self, fire: Fire) -> bool:
        doc = check_schedule(fire.schedule.to_doc())
        firings = [_firing_rec(f) for f in fire.firings]
        with self._locked(exclusive=True):
            state = self._state
            if not self._version_is(fire.schedule.name, fire.expect_version):
                return False
            done = state.firings.get(fire.schedule.name, {})
            if any((f["tick"], f["manual"]) in done for f in firings):
                return False
            if any(self._exists(job.id) for job in fire.jobs):
                return False
            jobs = [check_job(job_record(job, seq, ()), ACTIVE_STATES)
                    for seq, job in enumerate(fire.jobs, start=state.next_seq)]
            self._one_line({"op": "fire", "schedule": doc, "firings": firings, "jobs": jobs})
        return True

    def schedule_firings(self, name: str, limit: int = 10) -> list[Firing]:
        with self._locked(exclusive=False):
            per = dict(self._state.firings.get(name, {}))
        return [_firing(per[k]) for k in sorted(per, reverse=True)[:limit]]

    def prune_firings(self, before: int, keep: int) -> int:
        with self._locked(exclusive=True):
            keys = list(_prunable(self._state, before, keep))
            if keys:
                self._one_line({"op": "prune_firings", "keys": keys})
        return len(keys)


def _prunable(state: State, before: int, keep: int) -> Iterator[list[Any]]:
    for name, per in state.firings.items():
        for tick, manual in sorted(per, reverse=True)[keep:]:
            if per[(tick, manual)]["at"] < before:
                yield [name, tick, manual]
