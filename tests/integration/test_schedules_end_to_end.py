"""Recurring schedules through the real CLI: each tick fired exactly once by
whichever of several supervisors (and, on PostgreSQL, machines) comes
first, none lost after SIGKILLs with ``catchup: all``, and bad input
refused with one line."""

from __future__ import annotations

import itertools
import os
import random
import signal
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from .conftest import Queue, WorkerGroup, iso_ms, one_error, pid_running
from .test_postgres_cluster import second_machine

SECOND = 1000


def scheduled(queue: Queue, name: str = "tick") -> list[dict[str, Any]]:
    jobs: list[dict[str, Any]] = queue.json("list", "--schedule", name)
    return jobs


def ticks_of(jobs: list[dict[str, Any]]) -> list[int]:
    return sorted(iso_ms(j["scheduled_for"]) for j in jobs)


def assert_each_tick_once(ticks: list[int]) -> None:
    twice = [t for t, n in Counter(ticks).items() if n > 1]
    assert not twice, f"ticks fired twice: {twice}"
    gaps = [(a, b) for a, b in itertools.pairwise(ticks) if b - a != SECOND]
    assert not gaps, f"ticks not consecutive (lost or doubled): {gaps[:5]}"


def test_every_second_fires_each_tick_once_with_two_supervisors(
        queue: Queue, tmp_path: Path) -> None:
    """2 supervisors of 2 workers each; on PostgreSQL the second runs in
    another QUEUECTL_HOME on the same database (another "machine")."""
    wanted = {"sqlite": 20, "json": 6, "postgres": 10}[queue.backend]
    queue.fast()
    queue.run("schedule", "add", "tick", "--every", "1s", "--command", "true",
              "--overlap", "allow", "--catchup", "all")
    other = second_machine(queue, tmp_path) if queue.backend == "postgres" else queue
    try:
        queue.start_workers(2)
        other.start_workers(2)
        queue.wait_until(lambda: len(scheduled(queue)) >= wanted, wanted + 20,
                         f"{wanted} ticks fired")
        queue.run("schedule", "pause", "tick")
        fired = queue.json("schedule", "show", "tick")
        queue.stop_workers()
        if other is not queue:
            other.stop_workers()
    finally:
        if other is not queue:
            other.cleanup()
    jobs = scheduled(queue)
    assert_each_tick_once(ticks_of(jobs))
    assert all(j["schedule"] == "tick" and j["id"] == f"tick@{j['scheduled_for']}"
               for j in jobs)
    by_job = {f["job_id"]: f for f in fired["firings"]}
    assert len(fired["firings"]) == min(10, len(jobs))  # show lists the last 10
    assert all(f["outcome"] == "fired" for f in by_job.values())
    assert set(by_job) <= {j["id"] for j in jobs}
    if other is not queue:
        workers = {j["worker_id"] for j in jobs if j["worker_id"]}
        assert workers, "jobs ran"
        assert len(jobs) == len(other.json("list", "--schedule", "tick")), "one database"


def kill_group(group: WorkerGroup) -> None:
    """SIGKILL a supervisor and its workers, as a power cut would."""
    for pid in (group.supervisor, *group.workers):
        if pid_running(pid):
            os.kill(pid, signal.SIGKILL)


@pytest.mark.backends("sqlite")
def test_sigkilled_supervisors_lose_no_tick_with_catchup_all(queue: Queue) -> None:
    """Supervisors SIGKILLed at random moments and started again: no tick
    fired twice, and with ``catchup: all`` none lost."""
    queue.fast()
    queue.run("schedule", "add", "tick", "--every", "1s", "--command", "true",
              "--overlap", "allow", "--catchup", "all")
    rng = random.Random(17)
    groups = [queue.start_workers(2), queue.start_workers(2)]
    for _ in range(2):
        seen = len(scheduled(queue))

        def more(seen: int = seen) -> bool:
            return len(scheduled(queue)) >= seen + 2

        queue.wait_until(more, 30, "more ticks")
        victim = groups.pop(rng.randrange(len(groups)))
        kill_group(victim)
        groups.append(queue.start_workers(2))
    queue.run("schedule", "pause", "tick")
    queue.stop_workers()
    ticks = ticks_of(scheduled(queue))
    assert len(ticks) >= 4
    assert_each_tick_once(ticks)
    show = queue.json("schedule", "show", "tick")
    assert Counter(f["tick"] for f in show["firings"]).most_common(1)[0][1] == 1


@pytest.mark.backends("sqlite")
def test_schedule_commands_refuse_bad_input_with_one_line(queue: Queue) -> None:
    def fails(code: int, *args: str, words: tuple[str, ...] = ()) -> None:
        one_error(queue.run("schedule", *args, check=False), code, *words)

    fails(2, "add", "x", "--cron", "61 * * * *", "--command", "true", words=("cron",))
    fails(2, "add", "x", "--cron", "0 3 * * *", "--tz", "Mars/Olympus", "--command", "true",
          words=("time zone",))
    fails(2, "add", "x", "--every", "5 parsecs", "--command", "true", words=("duration",))
    fails(2, "add", "x", "--every", "500ms", "--command", "true", words=("1s",))
    fails(2, "add", "x", "--cron", "* * * * *", "--every", "1m", "--command", "true",
          words=("exactly one",))
    fails(2, "add", "x", "--every", "1m", words=("command",))
    fails(2, "add", "--every", "1m", "--command", "true", "--", "-bad", words=("name",))
    fails(2, "add", '{"name": "x", "every": "1m", "command": "true", "color": 1}',
          words=("color",))
    queue.run("schedule", "add", "x", "--every", "1m", "--command", "true")
    fails(1, "add", "x", "--every", "1m", "--command", "true", words=("exists", "--replace"))
    for verb in ("show", "pause", "resume", "remove", "run"):
        fails(1, verb, "nope", words=("nope",))
    replaced = queue.json("schedule", "add", '{"name": "x", "cron": "0 3 * * *", '
                          '"tz": "Europe/Berlin", "command": "backup"}', "--replace")
    assert (replaced["cron"], replaced["tz"], replaced["every"]) == ("0 3 * * *",
                                                                     "Europe/Berlin", None)
    shown = queue.json("schedule", "show", "x")
    assert [iso_ms(t) % (3600 * SECOND) for t in shown["next_runs"]] == [0] * 5
    run = queue.json("schedule", "run", "x")
    assert run["schedule"] == "x" and queue.json("show", run["id"])["schedule"] == "x"
    assert queue.json("schedule", "remove", "x") == {"name": "x", "removed": True}
    assert queue.json("show", run["id"])["id"] == run["id"], "its jobs are kept"


@pytest.mark.backends("sqlite")
def test_yaml_schedules_are_synced_and_win(queue: Queue) -> None:
    queue.home.mkdir(parents=True, exist_ok=True)
    (queue.home / "queuectl.yaml").write_text(
        "schedules:\n  nightly:\n    cron: '0 3 * * *'\n    command: backup\n")
    queue.fast()
    queue.start_workers(1)
    queue.wait_until(lambda: queue.json("schedule", "list"), 15, "the YAML schedule synced")
    [listed] = queue.json("schedule", "list")
    assert (listed["name"], listed["source"], listed["command"]) == ("nightly", "yaml",
                                                                    "backup")
    one_error(queue.run("schedule", "add", "nightly", "--every", "1h", "--command", "x",
                        "--replace", check=False), 1, "YAML", "wins")
    one_error(queue.run("schedule", "remove", "nightly", check=False), 1, "YAML")
    queue.stop_workers()
