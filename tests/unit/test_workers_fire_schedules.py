"""A worker's part in firing schedules (queuectl_core/worker/firing.py):
it fires what is due, sleeps until the next tick, syncs the YAML file's
schedules once, and never stops for a schedule it cannot fire."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from queuectl_core.ledger import Ledger
from queuectl_core.models import Job
from queuectl_core.schedules import job_id_for, parse_spec
from queuectl_core.testing import MemoryStorage
from queuectl_core.worker.firing import REFRESH_MS, ScheduleFirer
from queuectl_sqlite.store import SqliteStorage

T0 = 1_800_000_000_000


@pytest.fixture
def store(tmp_path: Path) -> SqliteStorage:
    return SqliteStorage(tmp_path / "q.db")


def test_an_idle_worker_sleeps_until_the_next_tick_and_fires_it(store: SqliteStorage) -> None:
    store.put_schedule(parse_spec({"name": "s", "every": "2s", "command": "true",
                                   "start": T0}, now=T0), None)
    firer = ScheduleFirer(Ledger(store), lambda: 1)
    assert firer.run(T0 + 10) == 0
    assert firer.wait_ms(T0 + 10) == 2000 - 10, "until the first tick"
    assert not firer.due(T0 + 1999) and firer.due(T0 + 2000)
    assert firer.run(T0 + 2003) == 1
    [job] = store.list_jobs()
    assert (job.schedule, job.scheduled_for, job.max_retries) == ("s", T0 + 2000, 1)
    assert firer.next_at == T0 + 4000


def test_a_worker_looks_again_at_least_every_few_seconds(store: SqliteStorage) -> None:
    firer = ScheduleFirer(Ledger(store), lambda: 0)
    firer.run(T0)
    assert firer.next_at == T0 + REFRESH_MS
    firer.stale()
    assert firer.due(T0 + 1)


def test_a_backend_without_schedules_is_left_alone() -> None:
    firer = ScheduleFirer(Ledger(MemoryStorage()), lambda: 0)
    assert not firer.enabled and not firer.due(T0) and firer.wait_ms(T0) is None
    assert firer.run(T0) == 0


def test_a_broken_schedule_is_logged_not_raised(store: SqliteStorage,
                                                caplog: pytest.LogCaptureFixture) -> None:
    store.conn.execute("INSERT INTO schedules VALUES ('bad', 1, 0, '{\"name\": 1}')")
    firer = ScheduleFirer(Ledger(store), lambda: 0)
    with caplog.at_level(logging.ERROR, logger="queuectl.worker"):
        assert firer.run(T0) == 0
    assert "firing schedules failed" in caplog.text
    assert firer.next_at == T0 + REFRESH_MS


def test_the_yaml_schedules_are_put_once(store: SqliteStorage) -> None:
    firer = ScheduleFirer(Ledger(store), lambda: 0)
    firer.declared = {"y": {"cron": "0 3 * * *", "command": "backup"}}
    firer.run(T0)
    [stored] = store.list_schedules()
    assert (stored.name, stored.source, stored.version) == ("y", "yaml", 1)
    assert firer.declared is None
    other = ScheduleFirer(Ledger(store), lambda: 0)
    other.declared = {"y": {"cron": "0 3 * * *", "command": "backup"}}
    other.run(T0 + 5)
    assert store.list_schedules() == [stored], "an unchanged declaration puts nothing"


def test_a_tick_whose_job_id_is_taken_is_skipped_not_stuck(
        store: SqliteStorage, caplog: pytest.LogCaptureFixture) -> None:
    store.put_schedule(parse_spec({"name": "s", "every": "1s", "command": "true",
                                   "start": T0}, now=T0), None)
    taken = Job.new(id=job_id_for("s", T0 + 1000), command="mine", max_retries=0,
                    run_at=T0, created_at=T0)
    store.insert([(taken, [])])
    firer = ScheduleFirer(Ledger(store), lambda: 0)
    with caplog.at_level(logging.ERROR, logger="queuectl.worker"):
        assert firer.run(T0 + 1000) == 0
    assert "skipping them" in caplog.text
    after = store.get_schedule("s")
    assert after is not None and after.next_run_at == T0 + 2000
    assert firer.run(T0 + 2000) == 1, "the next tick fires"
    assert store.get(taken.id) == taken
