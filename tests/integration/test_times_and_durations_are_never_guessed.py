"""Times and durations are never guessed (issue 21, items 1, 2 and 7).

- A ``run_at`` number that would be a date before 2001 as epoch
  milliseconds is refused: it is almost surely epoch seconds (``date +%s``),
  which used to be stored as January 1970 and run at once.
- ``purge --older-than`` needs a unit (a bare ``7`` used to mean 7 seconds
  and purge everything); ``purge`` and ``dlq purge`` take ``--dry-run``.
- Every option and field that takes a duration parses it the same way:
  ``ms``, ``s``, ``m``, ``h``, ``d``, ``w`` and combinations (``1h30m``,
  ``1.5s``); a bare number keeps its documented unit.
"""

from __future__ import annotations

import json
import os
import subprocess
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from .conftest import QUEUECTL, Queue, iso_ms, now_ms

pytestmark = pytest.mark.backends("sqlite")

SECONDS_HINT = "this looks like seconds since the epoch; give milliseconds or ISO-8601"
BAD = "use a number with a unit (ms, s, m, h, d, w), e.g. 500ms, 30s, 1.5m, 1h30m, 7d"
DAY_MS = 86_400_000


def day_of(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, tz=UTC).strftime("%Y-%m-%d")


def iso(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, tz=UTC).strftime("%Y-%m-%dT%H:%M:%S.") + \
        f"{ms % 1000:03d}Z"


def refused(res: subprocess.CompletedProcess[str], message: str) -> None:
    """Exit 2, nothing on stdout, exactly ``Error: message`` on stderr."""
    assert (res.returncode, res.stdout, res.stderr) == (2, "", f"Error: {message}\n"), res


# ------------------------------------------------------------------ run_at

def test_epoch_seconds_as_run_at_are_refused_in_every_form(queue: Queue) -> None:
    seconds = now_ms() // 1000 + 3600  # what $(date -d '+1 hour' +%s) prints
    day = day_of(seconds)
    assert day == "1970-01-21"
    refused(queue.run("enqueue", "-c", "echo x", "--run-at", str(seconds), check=False),
            f"--run-at: {seconds} would be {day} in epoch milliseconds: {SECONDS_HINT}")
    refused(queue.run("enqueue", json.dumps({"command": "echo x", "run_at": seconds}),
                      check=False),
            f"run_at: {seconds} would be {day} in epoch milliseconds: {SECONDS_HINT}")
    lines = (json.dumps({"command": "echo a", "run_at": seconds * 1000}) + "\n"
             + json.dumps({"command": "echo b", "run_at": seconds}) + "\n")
    refused(queue.run("enqueue", "--file", "-", stdin=lines, check=False),
            f"line 2: run_at: {seconds} would be {day} in epoch milliseconds: {SECONDS_HINT}")
    refused(queue.run("enqueue", "-c", "echo x", "--run-at", "0", check=False),
            f"--run-at: 0 would be 1970-01-01 in epoch milliseconds: {SECONDS_HINT}")
    assert queue.jobs() == [], "nothing stored"


def test_milliseconds_from_2001_and_written_out_times_are_taken_as_given(queue: Queue) -> None:
    first = 978_307_200_000  # 2001-01-01T00:00:00Z
    refused(queue.run("enqueue", "-c", "true", "--run-at", str(first - 1), check=False),
            f"--run-at: {first - 1} would be 2000-12-31 in epoch milliseconds: {SECONDS_HINT}")
    queue.run("enqueue", "-c", "true", "--id", "y2001", "--run-at", str(first))
    queue.enqueue({"id": "json", "command": "true", "run_at": first})
    later = now_ms() + 3_600_000
    queue.run("enqueue", "-c", "true", "--id", "in-an-hour", "--run-at", str(later))
    queue.enqueue({"id": "y1999", "command": "true", "run_at": "1999-12-31T00:00:00Z"})
    assert queue.show("y2001")["run_at"] == queue.show("json")["run_at"] == \
        "2001-01-01T00:00:00.000Z"
    assert iso_ms(queue.show("in-an-hour")["run_at"]) == later
    assert queue.show("y1999")["run_at"] == "1999-12-31T00:00:00.000Z"


# ------------------------------------------------------------------ purge

def finished_job(job_id: str, state: str, finished_at: int) -> dict[str, Any]:
    """A job as ``export`` writes it, finished at ``finished_at``."""
    t = iso(finished_at)
    return {"id": job_id, "command": "true", "state": state, "attempts": 1,
            "max_retries": 0, "priority": 0, "run_at": t, "created_at": t, "updated_at": t,
            "started_at": t, "finished_at": t, "queue": "default"}


def load(queue: Queue, *jobs: dict[str, Any]) -> None:
    lines = "".join(json.dumps(job) + "\n" for job in jobs)
    queue.run("import", "-", stdin=lines)


def ids(queue: Queue) -> list[str]:
    return sorted(job["id"] for job in queue.jobs())


def test_purge_older_than_needs_a_unit(queue: Queue) -> None:
    now = now_ms()
    load(queue, finished_job("done", "completed", now - 60_000))
    for bare in ("7", "7.5", "0"):
        refused(queue.run("purge", "--older-than", bare, check=False),
                f"--older-than: '{bare}' needs a unit, e.g. 7d (days) or 7h (hours)")
    refused(queue.run("purge", "--older-than", "a week", check=False),
            f"--older-than: invalid duration 'a week': {BAD}")
    assert ids(queue) == ["done"], "nothing purged"
    assert queue.run("purge", "--older-than", "7d").stdout == "Purged 0 job(s).\n"
    assert queue.run("purge", "--older-than", "30s").stdout == "Purged 1 job(s).\n"


def test_purge_dry_run_says_what_would_go_and_deletes_nothing(queue: Queue) -> None:
    now = now_ms()
    load(queue, finished_job("old-done", "completed", now - 10 * DAY_MS),
         finished_job("new-done", "completed", now - 3_600_000),
         finished_job("old-cancelled", "cancelled", now - 20 * DAY_MS),
         finished_job("old-dead", "dead", now - 30 * DAY_MS))
    queue.enqueue({"id": "waiting", "command": "true", "run_at": "2999-01-01T00:00:00Z"})
    everything = ids(queue)

    # Oldest first: the order purge deletes them in.
    assert queue.run("purge", "--dry-run").stdout == \
        "Would purge 3 job(s): old-cancelled, old-done, new-done\n"
    assert queue.run("purge", "--dry-run", "--older-than", "1w").stdout == \
        "Would purge 2 job(s): old-cancelled, old-done\n"
    assert queue.run("purge", "--dry-run", "--state", "dead").stdout == \
        "Would purge 1 job(s): old-dead\n"
    assert queue.run("purge", "--dry-run", "--older-than", "100d").stdout == \
        "Would purge 0 job(s).\n"
    before = now_ms()
    data = queue.json("purge", "--dry-run", "--older-than", "7d")
    finished_before = iso_ms(data.pop("finished_before"))
    assert before - 7 * DAY_MS - 5_000 <= finished_before <= now_ms() - 7 * DAY_MS
    assert data == {"dry_run": True, "would_purge": 2, "ids": ["old-cancelled", "old-done"],
                    "states": ["completed", "cancelled", "skipped"]}
    assert queue.json("purge", "--dry-run") == {
        "dry_run": True, "would_purge": 3, "ids": ["old-cancelled", "old-done", "new-done"],
        "states": ["completed", "cancelled", "skipped"], "finished_before": None}
    assert ids(queue) == everything, "a dry run deletes nothing"

    # The real run: the same selection, its output as before.
    assert queue.run("purge", "--older-than", "1w").stdout == "Purged 2 job(s).\n"
    assert queue.json("purge") == {"purged": 1, "states": ["completed", "cancelled", "skipped"],
                                   "finished_before": None, "firings_pruned": 0}
    assert ids(queue) == ["old-dead", "waiting"]


def test_dlq_purge_dry_run_says_what_would_go_and_deletes_nothing(queue: Queue) -> None:
    now = now_ms()
    load(queue, finished_job("d-new", "dead", now - 60_000),
         finished_job("d-old", "dead", now - DAY_MS),
         finished_job("done", "completed", now - DAY_MS))
    assert queue.run("dlq", "purge", "--all", "--dry-run").stdout == \
        "Would purge 2 dead job(s): d-old, d-new\n"
    assert queue.json("dlq", "purge", "--all", "--dry-run") == {
        "dry_run": True, "would_purge": 2, "ids": ["d-old", "d-new"]}
    res = queue.run("dlq", "purge", "d-new", "done", "nope", "--dry-run", check=False)
    assert (res.returncode, res.stdout, res.stderr) == (
        1, "Would purge 1 dead job(s): d-new\n",
        "Error: job 'done' is completed, not dead; not purged\n"
        "Error: no job with id 'nope'\n")
    assert ids(queue) == ["d-new", "d-old", "done"], "a dry run deletes nothing"
    assert queue.run("dlq", "purge", "--all").stdout == "Purged 2 dead job(s).\n"
    assert queue.json("dlq", "purge", "--all", "--dry-run") == {
        "dry_run": True, "would_purge": 0, "ids": []}
    assert queue.run("dlq", "purge", "--all", "--dry-run").stdout == \
        "Would purge 0 dead job(s).\n"


# ------------------------------------------------------------------ durations

def test_durations_take_units_and_combinations_everywhere(queue: Queue) -> None:
    for timeout in ("10s", "1m30s", "30", "0.5", "250ms"):
        res = queue.run("worker", "stop", "--timeout", timeout)
        assert res.stdout == "No workers are running.\n", res

    queue.run("enqueue", "-c", "true", "--id", "later", "--delay", "1h30m",
              "--timeout", "1h30m")
    job = queue.show("later")
    gap = iso_ms(job["run_at"]) - iso_ms(job["created_at"])
    assert 5_400_000 - 10_000 < gap <= 5_400_000, gap
    assert job["timeout"] == 5400.0

    queue.enqueue({"id": "json", "command": "true", "timeout": "1.5s",
                   "retry": {"policy": "linear", "max_delay": "2m"}})
    job = queue.show("json")
    assert (job["timeout"], job["retry"]) == (1.5, {"policy": "linear", "max_delay": 120})
    lines = json.dumps({"id": "f1", "command": "true", "timeout": "2h"}) + "\n"
    queue.run("enqueue", "--file", "-", "--timeout", "1m", stdin=lines)
    queue.run("enqueue", "--file", "-", "--timeout", "1m",
              stdin=json.dumps({"id": "f2", "command": "true"}) + "\n")
    assert (queue.show("f1")["timeout"], queue.show("f2")["timeout"]) == (7200.0, 60.0)

    res = queue.run("wait", "later", "--timeout", "100ms", check=False)
    assert (res.returncode, res.stderr) == (
        124, "Error: timed out after 0.1s; still unfinished: later (pending)\n")

    for key, value, shown in (("job_timeout", "1h30m", "5400"), ("max_delay", "10m", "600"),
                              ("retention_days", "12h", "0.5"),
                              ("worker_idle_delay", "1.5s", "1500"),
                              ("lease_seconds", "2m", "120"), ("job_timeout", "45", "45")):
        assert queue.run("config", "set", key, value).stdout == \
            f"Config updated: {key} = {shown}\n"
        assert queue.run("config", "get", key).stdout == f"{key}: {shown}\n"


@pytest.mark.parametrize(("args", "message"), [
    (["worker", "stop", "--timeout", "10x"], f"--timeout: invalid duration '10x': {BAD}"),
    (["worker", "stop", "--timeout", "-1"], f"--timeout: invalid duration '-1': {BAD}"),
    (["enqueue", "-c", "true", "--delay", "1h30"], f"--delay: invalid duration '1h30': {BAD}"),
    (["enqueue", "-c", "true", "--timeout", "soon"],
     f"--timeout: invalid duration 'soon': {BAD}"),
    (["enqueue", "-c", "true", "--timeout", "0s"], "--timeout: must be more than 0"),
    (["wait", "x", "--timeout", "soon"], f"--timeout: invalid duration 'soon': {BAD}"),
    (["purge", "--older-than", "30m1h"], f"--older-than: invalid duration '30m1h': {BAD}"),
    (["enqueue", '{"command": "true", "timeout": "soon"}'],
     f"invalid job: timeout: invalid duration 'soon': {BAD}"),
    (["enqueue", '{"command": "true", "timeout": true}'],
     'invalid job: timeout: must be a number of seconds or a duration such as "90s"'),
    (["enqueue", '{"command": "true", "timeout": "31d"}'],
     "invalid job: timeout: must be more than 0 seconds and at most 30 days (2592000)"),
    (["enqueue", '{"command": "true", "retry": {"max_delay": "1y"}}'],
     f"invalid job: retry.max_delay: invalid duration '1y': {BAD}"),
    (["config", "set", "job_timeout", "soon"], f"job_timeout: invalid duration 'soon': {BAD}"),
    (["config", "set", "lease_seconds", "1.5s"],
     "lease_seconds: '1.5s' is not a whole number of seconds"),
    (["config", "set", "lease_seconds", "1s"], "lease_seconds: must be from 3 to 86400, got 1"),
])
def test_a_bad_duration_is_one_line_and_exit_2(queue: Queue, args: list[str],
                                               message: str) -> None:
    refused(queue.run(*args, check=False), message)
    assert queue.jobs() == []


def test_yaml_durations_take_units_too(queue: Queue) -> None:
    config = queue.home / "queuectl.yaml"
    queue.home.mkdir(parents=True, exist_ok=True)
    config.write_text(
        "backends:\n  sqlite:\n    busy_timeout_ms: 30s\n"
        "executors:\n  shell:\n    kill_grace_seconds: 500ms\n"
        "dlq:\n  command: 'true'\n  timeout: 1m\n"
        "defaults:\n  job_timeout: 90m\n  retention_days: 12h\n  worker_idle_delay: 1s\n"
        "  max_delay: 5m\n")
    values = queue.json("config", "get")
    assert (values["job_timeout"], values["retention_days"], values["worker_idle_delay"],
            values["max_delay"]) == (5400.0, 0.5, 1000, 300.0)

    config.write_text("defaults:\n  job_timeout: soon\n")
    refused(queue.run("status", check=False),
            f"config file {config}: defaults: job_timeout: invalid duration 'soon': {BAD}")
    config.write_text("dlq:\n  timeout: soon\n")
    refused(queue.run("status", check=False),
            f"config file {config}: dlq.timeout: invalid duration 'soon': {BAD}")
    config.write_text("backends:\n  sqlite:\n    busy_timeout_ms: 1h30\n")
    res = queue.run("status", check=False)
    assert res.returncode == 2 and res.stderr.count("\n") == 1, res
    assert f"busy_timeout_ms: invalid duration '1h30': {BAD}" in res.stderr, res.stderr


def test_a_duration_in_job_json_keeps_the_fast_path(tmp_path: Path) -> None:
    """``enqueue JSON`` with a duration string still skips click and pluggy."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("QUEUECTL_")}
    env.update(QUEUECTL_HOME=str(tmp_path / "home"), QUEUECTL_STARTUP_CACHE="debug")

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([str(QUEUECTL), *args], capture_output=True, text=True,
                              env=env, timeout=60, check=False)

    assert run("enqueue", '{"id": "a", "command": "true"}').returncode == 0  # writes the cache
    res = run("enqueue", '{"id": "b", "command": "true", "timeout": "1h30m"}')
    assert res.returncode == 0 and res.stderr.splitlines() == [
        "queuectl: start-up cache: used", "queuectl: start-up cache: loaded []"], res
    res = run("enqueue", json.dumps({"command": "true", "run_at": 1_767_225_600}))
    assert res.returncode == 2 and (
        f"Error: run_at: 1767225600 would be 1970-01-21 in epoch milliseconds: {SECONDS_HINT}"
        in res.stderr.splitlines()), res
    shown = json.loads(run("show", "b", "--json").stdout)
    assert shown["timeout"] == 5400.0
