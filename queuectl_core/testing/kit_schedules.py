"""The conformance kit's schedule tests: the optional schedule methods of
the seam (:mod:`queuectl_core.schedule_seam`). Skipped, with the reason,
for a backend whose ``supports_schedules`` is False."""

from __future__ import annotations

import multiprocessing
from collections import Counter
from pathlib import Path

import pytest

from ..ledger import Ledger
from ..models import JobState
from ..schedule_records import Schedule
from ..schedules import CATCHUP_CAP, manual_fire, parse_spec, plan
from ..storage import Storage
from ..worker.firing import ScheduleFirer
from .kit import LEASE, OK, T0, KitBase

SECOND = 1000


def every_second(name: str = "s", **fields: object) -> Schedule:
    """A schedule firing at T0 + k seconds (k >= 1)."""
    return parse_spec({"name": name, "every": "1s", "command": f"echo {name}", "start": T0,
                       **fields}, now=T0)


def _fire_in_child(opener: KitBase, home: Path, ticks: int,
                   queue: multiprocessing.Queue[int]) -> None:
    store = opener.open_storage(home)
    made = 0
    try:
        firer = ScheduleFirer(Ledger(store), lambda: 0)
        for k in range(1, ticks + 1):
            for offset in (0, 1, 2):  # late and again: a tick is never fired twice
                made += firer.run(T0 + k * SECOND + offset)
    finally:
        store.close()
        queue.put(made)


class SchedulePromises(KitBase):
    """Schedules: compare-and-set, one fire all or nothing, each tick once."""

    @pytest.fixture
    def sched(self, store: Ledger) -> Storage:
        raw = store.store
        if not raw.supports_schedules:
            pytest.skip(f"{type(raw).__name__} does not support schedules "
                        "(supports_schedules is False)")
        return raw

    def fire_at(self, raw: Storage, name: str, now: int) -> bool:
        """One firing pass over ``name`` at ``now``, as a worker makes it."""
        current = raw.get_schedule(name)
        assert current is not None
        last = raw.get(current.last_job_id) if current.last_job_id else None
        fire = plan(current, now, last, default_max_retries=0)
        return fire is not None and raw.fire_schedule(fire)

    def scheduled_ticks(self, raw: Storage, name: str = "s") -> list[int]:
        return sorted(j.scheduled_for for j in raw.list_jobs()
                      if j.schedule == name and j.scheduled_for is not None)

    # ------------------------------------------------------------ storing
    def test_schedule_put_is_compare_and_set(self, sched: Storage) -> None:
        s = every_second()
        assert sched.put_schedule(s, None)
        assert not sched.put_schedule(s, None), "a second create of one name must fail"
        assert sched.get_schedule("s") == s and sched.list_schedules() == [s]
        changed = s.replace(command="echo new", version=s.version + 1)
        assert not sched.put_schedule(changed, s.version + 5), "a stale version must fail"
        assert sched.put_schedule(changed, s.version)
        assert sched.get_schedule("s") == changed
        assert sched.remove_schedule("s") and not sched.remove_schedule("s")
        assert sched.get_schedule("s") is None and sched.list_schedules() == []

    def test_fired_job_carries_its_schedule_and_tick(self, sched: Storage) -> None:
        sched.put_schedule(every_second(), None)
        assert self.fire_at(sched, "s", T0 + SECOND)
        [job] = sched.list_jobs()
        assert (job.schedule, job.scheduled_for, job.state) == ("s", T0 + SECOND,
                                                                JobState.PENDING)
        assert sched.get(job.id) == job
        [firing] = sched.schedule_firings("s")
        assert (firing.tick, firing.outcome, firing.job_id) == (T0 + SECOND, "fired", job.id)
        after = sched.get_schedule("s")
        assert after is not None and after.next_run_at == T0 + 2 * SECOND
        assert after.last_job_id == job.id

    def test_a_fire_from_a_stale_version_changes_nothing(self, sched: Storage) -> None:
        s = every_second(overlap="allow")
        sched.put_schedule(s, None)
        first = plan(s, T0 + SECOND, None, default_max_retries=0)
        second = plan(s, T0 + 2 * SECOND, None, default_max_retries=0)
        assert first is not None and second is not None
        assert sched.fire_schedule(first)
        assert not sched.fire_schedule(second), "the second fire read an old version"
        assert not sched.fire_schedule(first), "the same fire twice"
        assert self.scheduled_ticks(sched) == [T0 + SECOND]

    def test_a_fire_whose_job_exists_changes_nothing(self, sched: Storage) -> None:
        s = every_second()
        sched.put_schedule(s, None)
        fire = plan(s, T0 + SECOND, None, default_max_retries=0)
        assert fire is not None
        sched.insert([(fire.jobs[0], [])])
        assert not sched.fire_schedule(fire)
        assert sched.get_schedule("s") == s, "the schedule must not move on"
        assert sched.schedule_firings("s") == []

    def test_a_recorded_tick_is_never_fired_again(self, sched: Storage) -> None:
        s = every_second()
        sched.put_schedule(s, None)
        assert self.fire_at(sched, "s", T0 + SECOND)
        # Someone rewinds the cursor (an old document put back): the firing
        # record still stops the tick.
        current = sched.get_schedule("s")
        assert current is not None
        rewound = s.replace(version=current.version + 1)
        assert sched.put_schedule(rewound, current.version)
        stale = plan(rewound, T0 + SECOND, None, default_max_retries=0)
        assert stale is not None and not sched.fire_schedule(stale)
        assert self.scheduled_ticks(sched) == [T0 + SECOND]

    def test_each_tick_fired_once_by_concurrent_processes(self, home: Path,
                                                          sched: Storage) -> None:
        if not self.supports_processes:
            pytest.skip("store is confined to one process")
        ticks = 12
        sched.put_schedule(every_second(overlap="allow"), None)
        ctx = multiprocessing.get_context("fork")
        queue: multiprocessing.Queue[int] = ctx.Queue()
        procs = [ctx.Process(target=_fire_in_child, args=(self, home, ticks, queue))
                 for _ in range(4)]
        for p in procs:
            p.start()
        made = sum(queue.get(timeout=120) for _ in procs)
        for p in procs:
            p.join(timeout=30)
        assert [p.exitcode for p in procs] == [0] * len(procs)
        fired = self.scheduled_ticks(sched)
        twice = [t for t, n in Counter(fired).items() if n > 1]
        assert not twice and made == ticks, f"{made} jobs made for {ticks} ticks"
        assert fired == [T0 + k * SECOND for k in range(1, ticks + 1)]

    def test_manual_run_is_outside_the_cadence(self, sched: Storage) -> None:
        s = every_second()
        sched.put_schedule(s, None)
        fire = manual_fire(s, T0 + 500, default_max_retries=0)
        assert sched.fire_schedule(fire)
        assert self.fire_at(sched, "s", T0 + SECOND)  # overlap skip: recorded, not run
        outcomes = [(f.tick, f.outcome) for f in sched.schedule_firings("s")]
        assert outcomes == [(T0 + SECOND, "skipped"), (T0 + 500, "run")]

    # ------------------------------------------------------------ overlap
    def _run_last(self, store: Ledger, now: int) -> None:
        claim = store.claim("w1", now, LEASE)
        assert claim is not None
        store.complete(claim, OK, now)

    def test_overlap_skip_records_the_skipped_tick(self, store: Ledger,
                                                   sched: Storage) -> None:
        sched.put_schedule(every_second(), None)
        assert self.fire_at(sched, "s", T0 + SECOND)
        assert self.fire_at(sched, "s", T0 + 2 * SECOND)  # the first is pending
        self._run_last(store, T0 + 2 * SECOND + 1)
        assert self.fire_at(sched, "s", T0 + 3 * SECOND)
        assert self.scheduled_ticks(sched) == [T0 + SECOND, T0 + 3 * SECOND]
        assert [f.outcome for f in sched.schedule_firings("s")] == ["fired", "skipped",
                                                                   "fired"]

    def test_overlap_queue_makes_the_job_after_the_previous(self, store: Ledger,
                                                          sched: Storage) -> None:
        sched.put_schedule(every_second(overlap="queue"), None)
        assert self.fire_at(sched, "s", T0 + SECOND)
        assert self.fire_at(sched, "s", T0 + 2 * SECOND)
        queued = sched.get_schedule("s")
        assert queued is not None and queued.queued == [T0 + 2 * SECOND]
        assert self.scheduled_ticks(sched) == [T0 + SECOND]
        self._run_last(store, T0 + 2 * SECOND + 100)
        assert self.fire_at(sched, "s", T0 + 2 * SECOND + 200)
        assert self.scheduled_ticks(sched) == [T0 + SECOND, T0 + 2 * SECOND]

    def test_overlap_allow_runs_concurrently(self, sched: Storage) -> None:
        sched.put_schedule(every_second(overlap="allow"), None)
        for k in (1, 2, 3):
            assert self.fire_at(sched, "s", T0 + k * SECOND)
        assert self.scheduled_ticks(sched) == [T0 + k * SECOND for k in (1, 2, 3)]

    # ------------------------------------------------------------ catch-up
    def test_catchup_none_fires_only_an_on_time_tick(self, sched: Storage) -> None:
        sched.put_schedule(every_second(overlap="allow"), None)
        assert self.fire_at(sched, "s", T0 + 10 * SECOND + 500)  # late by 0.5 s: on time
        assert self.scheduled_ticks(sched) == [T0 + 10 * SECOND]
        sched.put_schedule(every_second("late", every="5m"), None)
        assert self.fire_at(sched, "late", T0 + 390 * SECOND)  # 90 s after the 5 m tick
        assert self.scheduled_ticks(sched, "late") == []
        after = sched.get_schedule("late")
        assert after is not None and after.next_run_at == T0 + 600 * SECOND

    def test_catchup_latest_fires_the_most_recent_missed_tick(self, sched: Storage) -> None:
        sched.put_schedule(every_second(catchup="latest", every="1m"), None)
        assert self.fire_at(sched, "s", T0 + 10 * 60 * SECOND + 30 * SECOND)
        assert self.scheduled_ticks(sched) == [T0 + 10 * 60 * SECOND]
        after = sched.get_schedule("s")
        assert after is not None and after.next_run_at == T0 + 11 * 60 * SECOND

    def test_catchup_all_fires_every_missed_tick_up_to_the_cap(self, sched: Storage) -> None:
        sched.put_schedule(every_second(catchup="all", overlap="allow"), None)
        assert self.fire_at(sched, "s", T0 + 5 * SECOND)
        assert self.scheduled_ticks(sched) == [T0 + k * SECOND for k in range(1, 6)]
        sched.put_schedule(every_second("many", catchup="all", overlap="allow"), None)
        assert self.fire_at(sched, "many", T0 + (CATCHUP_CAP + 50) * SECOND)
        ticks = self.scheduled_ticks(sched, "many")
        assert len(ticks) == CATCHUP_CAP and ticks[-1] == T0 + (CATCHUP_CAP + 50) * SECOND

    # ------------------------------------------------------------ retention
    def test_firings_listed_newest_first_and_pruned_outside_the_window(
            self, sched: Storage) -> None:
        sched.put_schedule(every_second(overlap="allow"), None)
        for k in range(1, 8):
            assert self.fire_at(sched, "s", T0 + k * SECOND)
        assert [f.tick for f in sched.schedule_firings("s", 3)] == [
            T0 + 7 * SECOND, T0 + 6 * SECOND, T0 + 5 * SECOND]
        assert sched.prune_firings(T0 + 100 * SECOND, keep=5) == 2
        assert [f.tick for f in sched.schedule_firings("s", 10)] == [
            T0 + k * SECOND for k in range(7, 2, -1)]
        assert sched.prune_firings(T0, keep=0) == 0, "nothing recorded before T0"
