"""The rules of recurring schedules (queuectl_core/schedules.py): ticks as
cronsim computes them in the schedule's zone (DST gaps and overlaps
included), intervals anchored to the start, and what a firing pass makes
for each catch-up and overlap mode."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime
from zoneinfo import ZoneInfo

import pytest
from cronsim import CronSim
from hypothesis import given, settings
from hypothesis import strategies as st

from queuectl_core.errors import UsageError
from queuectl_core.models import JobState
from queuectl_core.schedule_records import Schedule
from queuectl_core.schedules import (
    CATCHUP_CAP,
    declared_schedules,
    manual_fire,
    next_tick,
    parse_spec,
    paused,
    plan,
    sync_plan,
    ticks_through,
    upcoming,
)

T0 = 1_800_000_000_000
S = 1000


def ms(text: str) -> int:
    return int(datetime.fromisoformat(text).timestamp() * 1000)


def cron(expr: str, tz: str = "UTC", **fields: object) -> Schedule:
    return parse_spec({"name": "c", "cron": expr, "tz": tz, "command": "true", **fields},
                      now=T0)


def every(period: str = "1s", **fields: object) -> Schedule:
    return parse_spec({"name": "e", "every": period, "command": "true", "start": T0,
                       **fields}, now=T0)


def cronsim_answers(expr: str, tz: str, after: int, count: int) -> list[int]:
    """The library's own ticks, for comparison."""
    it = CronSim(expr, datetime.fromtimestamp(after / 1000, ZoneInfo(tz)))
    return [round(next(it).timestamp() * 1000) for _ in range(count)]


# ------------------------------------------------------------ ticks

@pytest.mark.parametrize(("expr", "tz", "start"), [
    ("30 2 * * *", "Europe/Berlin", "2026-03-27T12:00:00+00:00"),   # spring gap
    ("30 2 * * *", "Europe/Berlin", "2026-10-23T12:00:00+00:00"),   # autumn overlap
    ("*/30 * * * *", "Europe/Berlin", "2026-10-24T23:00:00+00:00"),
    ("*/30 * * * *", "Europe/Berlin", "2026-03-28T23:00:00+00:00"),
    ("0 2 * * 0", "America/New_York", "2026-03-01T00:00:00+00:00"),
    ("15 1 * * *", "America/New_York", "2026-10-31T00:00:00+00:00"),
    ("0 9 * * 1-5", "Asia/Kolkata", "2026-06-01T00:00:00+00:00"),
])
def test_cron_ticks_are_cronsims_own_answers(expr: str, tz: str, start: str) -> None:
    after = ms(start)
    schedule = cron(expr, tz)
    assert upcoming(schedule, after, 8) == cronsim_answers(expr, tz, after, 8)


def test_a_tick_in_the_spring_gap_fires_once_when_the_gap_ends() -> None:
    # Europe/Berlin skips 02:00-03:00 on 2026-03-29: 02:30 fires at 03:00 CEST.
    [tick] = upcoming(cron("30 2 * * *", "Europe/Berlin"), ms("2026-03-28T12:00:00+00:00"), 1)
    assert tick == ms("2026-03-29T01:00:00+00:00")


def test_a_fixed_time_in_the_autumn_overlap_fires_once_a_wildcard_hour_twice() -> None:
    after = ms("2026-10-24T12:00:00+00:00")
    daily = upcoming(cron("30 2 * * *", "Europe/Berlin"), after, 2)
    assert daily == [ms("2026-10-25T00:30:00+00:00"), ms("2026-10-26T01:30:00+00:00")]
    halves = upcoming(cron("*/30 * * * *", "Europe/Berlin"), ms("2026-10-24T23:45:00+00:00"), 4)
    # 02:00 and 02:30 CEST, then 02:00 and 02:30 CET: every half hour of real time.
    assert [b - a for a, b in itertools.pairwise(halves)] == [1_800_000] * 3


def test_every_is_anchored_to_its_start_and_never_drifts() -> None:
    schedule = every("7s")
    assert next_tick(schedule, T0 - 10 * S) == T0 + 7 * S
    far = T0 + 10**9 + 123
    tick = next_tick(schedule, far)
    assert tick is not None and tick > far and (tick - T0) % (7 * S) == 0
    assert tick - far <= 7 * S


@given(start=st.integers(0, 10**6), period=st.integers(1, 90),
       first=st.integers(1, 200), span=st.integers(0, 400_000))
@settings(max_examples=200, deadline=None)
def test_ticks_through_counts_every_tick(start: int, period: int, first: int,
                                         span: int) -> None:
    schedule = every(f"{period}s").replace(start_at=T0 + start)
    lo = T0 + start + first * period * S
    newest, count = ticks_through(schedule, lo, lo + span)
    brute = list(range(lo, lo + span + 1, period * S))
    assert count == len(brute) and newest == brute[-CATCHUP_CAP:]


# ------------------------------------------------------------ decisions

def test_catchup_none_drops_late_ticks_latest_keeps_one_all_keeps_up_to_the_cap() -> None:
    late = T0 + 1500 * S + 90 * S  # 90 s after the fifth 5-minute tick
    for mode, fired in (("none", []), ("latest", [T0 + 1500 * S]),
                        ("all", [T0 + k * 300 * S for k in range(1, 6)])):
        fire = plan(every("5m", catchup=mode, overlap="allow"), late, None,
                    default_max_retries=0)
        assert fire is not None
        assert [j.scheduled_for for j in fire.jobs] == fired, mode
        assert fire.schedule.next_run_at == T0 + 1800 * S
    on_time = plan(every("5m"), T0 + 1500 * S + 59 * S, None, default_max_retries=0)
    assert on_time is not None and len(on_time.jobs) == 1, "within a minute: on time"
    capped = plan(every("1s", catchup="all", overlap="allow"), T0 + 1000 * S, None,
                  default_max_retries=0)
    assert capped is not None and len(capped.jobs) == CATCHUP_CAP
    assert capped.warning is not None and "1000 ticks missed" in capped.warning


def test_overlap_waits_for_pending_failed_and_running_jobs_only() -> None:
    first = plan(every(), T0 + S, None, default_max_retries=2)
    assert first is not None
    job = first.jobs[0]
    assert (job.id, job.max_retries, job.run_at) == ("e@2027-01-15T08:00:01.000Z", 2, T0 + S)
    for state, active in ((JobState.PENDING, True), (JobState.FAILED, True),
                          (JobState.PROCESSING, True), (JobState.COMPLETED, False),
                          (JobState.DEAD, False), (JobState.CANCELLED, False)):
        nxt = plan(first.schedule, T0 + 2 * S, job.replace(state=state), default_max_retries=0)
        assert nxt is not None
        assert [f.outcome for f in nxt.firings] == (["skipped"] if active else ["fired"])


def test_overlap_queue_holds_ticks_until_the_previous_job_finishes() -> None:
    s = every(overlap="queue")
    first = plan(s, T0 + S, None, default_max_retries=0)
    assert first is not None
    running = first.jobs[0].replace(state=JobState.PROCESSING)
    held = plan(first.schedule, T0 + 2 * S, running, default_max_retries=0)
    assert held is not None and held.jobs == () and held.schedule.queued == [T0 + 2 * S]
    assert plan(held.schedule, T0 + 2 * S + 500, running, default_max_retries=0) is None
    done = running.replace(state=JobState.COMPLETED)
    released = plan(held.schedule, T0 + 2 * S + 600, done, default_max_retries=0)
    assert released is not None
    assert [j.scheduled_for for j in released.jobs] == [T0 + 2 * S]
    assert released.schedule.queued == []


@given(gaps=st.lists(st.integers(1, 4000), min_size=1, max_size=40))
@settings(max_examples=100, deadline=None)
def test_passes_at_any_times_fire_each_tick_once_and_lose_none(gaps: list[int]) -> None:
    """catchup all, overlap allow: whatever the pass times, the jobs made are
    exactly the ticks up to the last pass, each once."""
    s = every(catchup="all", overlap="allow")
    now, made = T0, list[int | None]()
    for gap in gaps:
        now += gap
        fire = plan(s, now, None, default_max_retries=0)
        if fire is not None:
            made.extend(j.scheduled_for for j in fire.jobs)
            s = fire.schedule
    assert made == list(range(T0 + S, now + 1, S))


def test_paused_fires_nothing_and_resumes_from_the_next_tick() -> None:
    s = paused(every(), T0, True)
    assert plan(s, T0 + 10 * S, None, default_max_retries=0) is None
    resumed = paused(s, T0 + 10 * S + 1, False)
    assert resumed.next_run_at == T0 + 11 * S and resumed.version == s.version + 1


def test_manual_run_makes_one_job_and_keeps_the_cursor() -> None:
    s = every("1h")
    fire = manual_fire(s, T0 + 5, default_max_retries=1)
    assert [f.outcome for f in fire.firings] == ["run"]
    assert fire.jobs[0].id.startswith("e@run-") and fire.jobs[0].scheduled_for == T0 + 5
    assert fire.schedule.next_run_at == s.next_run_at


# ------------------------------------------------------------ input

@pytest.mark.parametrize(("spec", "words"), [
    ({"cron": "61 * * * *"}, "invalid cron expression"),
    ({"cron": "* * *"}, "invalid cron expression"),
    ({"cron": "0 0 30 2 *"}, "invalid cron expression"),
    ({"every": "1s", "tz": "Mars/Olympus"}, "unknown time zone"),
    ({"every": "soon"}, "invalid duration"),
    ({"every": "999ms"}, "shorter than 1s"),
    ({"every": "1s", "cron": "* * * * *"}, "exactly one of cron and every"),
    ({}, "exactly one of cron and every"),
    ({"every": "1s", "overlap": "sometimes"}, "overlap: must be one of"),
    ({"every": "1s", "catchup": "some"}, "catchup: must be one of"),
    ({"every": "1s", "paused": "yes"}, "paused: must be true or false"),
    ({"every": "1s", "queue": "a b"}, "queue"),
    ({"every": "1s", "when": 1}, "when: unknown field"),
])
def test_bad_specs_are_refused_with_one_line(spec: dict[str, object], words: str) -> None:
    with pytest.raises(UsageError) as err:
        parse_spec({"name": "x", "command": "true", **spec}, now=T0)
    assert words in str(err.value) and "\n" not in str(err.value)
    assert err.value.exit_code == 2


def test_yaml_schedules_win_over_cli_ones_and_keep_their_cursor() -> None:
    [declared] = declared_schedules({"n": {"every": "1m", "command": "a"}}, now=T0)
    assert declared.source == "yaml"
    assert sync_plan({}, [declared], T0) == [(declared, None)]
    assert sync_plan({"n": declared}, [declared], T0 + 5) == []
    cli = every("1m").replace(name="n", command="b", last_run_at=T0 + 60 * S, version=4)
    [(put, expect)] = sync_plan({"n": cli}, [declared], T0 + 70 * S)
    assert expect == 4 and put.source == "yaml" and put.command == "a"
    assert put.last_run_at == cli.last_run_at and put.version == 5
    with pytest.raises(UsageError, match="n: invalid schedule: every"):
        declared_schedules({"n": {"every": "0s", "command": "a"}}, now=T0)


def test_schedule_json_carries_the_documented_fields() -> None:
    data = cron("0 3 * * *", "Europe/Berlin").to_json()
    for key in ("name", "cron", "every", "command", "queue", "tz", "overlap", "catchup",
                "paused", "next_run_at", "last_run_at", "last_job_id"):
        assert key in data
    assert "version" not in data
    assert datetime.fromisoformat(data["next_run_at"]).tzinfo == UTC
