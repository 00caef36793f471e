"""Job records, input validation, enqueue --file, ordering, and the
unknown-command path."""

from __future__ import annotations

import json
from importlib.metadata import version
from pathlib import Path
from typing import Any

import pytest

from .conftest import ISO_RE, Queue, iso_ms

JOB_KEYS = {"id", "command", "state", "attempts", "max_retries", "created_at", "updated_at",
            "last_error"}
TIME_KEYS = ("run_at", "created_at", "updated_at", "started_at", "finished_at",
             "lease_expires_at")


def assert_iso_times(record: dict[str, Any], keys: tuple[str, ...]) -> None:
    for key in keys:
        value = record[key]
        if value is not None:
            assert isinstance(value, str) and ISO_RE.match(value), (key, value)


def test_basic_completion_and_json_shapes(queue: Queue) -> None:
    queue.fast()
    queue.enqueue({"id": "hello", "command": "echo hello"})
    generated = queue.enqueue({"command": "true"})
    assert generated and generated != "hello"
    queue.start_workers(1)
    queue.wait_counts(completed=2)

    status = queue.json("status")
    assert set(status) == {"pending", "processing", "completed", "failed", "dead", "cancelled",
                           "waiting", "skipped", "active_workers", "paused_queues", "queue"}
    assert status["paused_queues"] == [] and status["queue"] is None
    counts = {k: v for k, v in status.items() if k not in ("paused_queues", "queue")}
    assert all(type(v) is int for v in counts.values()), status
    assert status["completed"] == 2

    jobs = queue.jobs()
    assert [j["id"] for j in jobs] == ["hello", generated]
    for job in jobs:
        assert set(job) >= JOB_KEYS, job
        assert job["state"] == "completed" and job["attempts"] == 1
        assert job["max_retries"] == 3 and job["last_error"] is None
        assert_iso_times(job, TIME_KEYS)
        assert iso_ms(job["created_at"]) <= iso_ms(job["started_at"]) <= iso_ms(
            job["finished_at"]) == iso_ms(job["updated_at"])

    shown = queue.show("hello")
    [attempt] = shown["attempts_history"]
    assert attempt["number"] == 1 and attempt["outcome"] == "completed"
    assert attempt["exit_code"] == 0 and attempt["worker_id"] == shown["worker_id"]
    assert_iso_times(attempt, ("started_at", "finished_at"))
    assert attempt["duration_ms"] == iso_ms(attempt["finished_at"]) - iso_ms(
        attempt["started_at"])
    assert "Job hello" in queue.run("show", "hello").stdout
    queue.stop_workers()


def test_unknown_command_goes_dead_and_worker_continues(queue: Queue) -> None:
    queue.fast()
    queue.start_workers(1)
    queue.enqueue({"id": "bad", "command": "nonexistent_command_xyz", "max_retries": 0})
    queue.enqueue({"id": "good", "command": "echo fine"})
    dead = queue.wait_state("bad", "dead")
    good = queue.wait_state("good", "completed")
    assert dead["attempts"] == 1 and dead["exit_code"] == 127
    assert "not found" in dead["last_error"], dead["last_error"]
    assert "not found" in dead["attempts_history"][0]["error"]
    [listed] = queue.json("dlq", "list")
    assert listed["id"] == "bad" and "not found" in listed["last_error"]
    # The same worker process ran both.
    assert good["worker_id"] == dead["worker_id"]
    assert queue.status()["active_workers"] == 1
    queue.stop_workers()


# ------------------------------------------------------------------ bad input

#: (args, exactly one "Error..." line on stderr?) -- click's own usage errors
#: print "Usage:" and "Error:" lines; those only need exit 2 and no traceback.
BAD_INPUT: list[tuple[list[str], bool]] = [
    (["enqueue", "{not json"], True),
    (["enqueue", '{"command":"echo x","max_retries":"3"}'], True),
    (["enqueue", '{"command":"echo x","max_retries":1.5}'], True),
    (["enqueue", '{"id":"nocmd"}'], True),
    (["enqueue", '{"command":"echo x","colour":"red"}'], True),
    (["enqueue", '["echo x"]'], True),
    (["enqueue", '{"command":"   "}'], True),
    (["enqueue", '{"command":"echo x","run_at":"tomorrow"}'], True),
    (["enqueue", "--command", "echo x", "--delay", "soon"], True),
    (["config", "set", "max_retries", "--", "-1"], True),
    (["config", "set", "max_retries", "lots"], True),
    (["config", "set", "backoff_base", "nan"], True),
    (["config", "set", "nope", "1"], True),
    (["config", "get", "nope"], True),
    (["config", "set", "max_retries", "-1"], False),
    (["list", "--state", "bogus"], False),
]


@pytest.mark.slow
def test_bad_input_exits_2_and_stores_nothing(queue: Queue) -> None:
    queue.enqueue({"id": "existing", "command": "echo keep", "run_at": "2999-01-01T00:00:00Z"})
    before = (queue.status(), queue.json("config", "get"))
    jobs_before = queue.jobs()

    problems: list[str] = []
    for args, one_line in BAD_INPUT:
        res = queue.run(*args, check=False)
        lines = res.stderr.splitlines()
        if res.returncode != 2:
            problems.append(f"{args}: exit {res.returncode} (stderr {res.stderr!r})")
        if "Traceback" in res.stderr or res.stdout:
            problems.append(f"{args}: stdout {res.stdout!r} stderr {res.stderr!r}")
        if one_line and not (len(lines) == 1 and lines[0].startswith("Error")):
            problems.append(f"{args}: stderr is not one 'Error' line: {res.stderr!r}")
        if not one_line and "Error" not in res.stderr:
            problems.append(f"{args}: no error message: {res.stderr!r}")
        # Check what the command could have changed: settings or jobs.
        if args[0] == "config":
            now = (before[0], queue.json("config", "get"))
        else:
            now = (queue.status(), before[1])
        if now != before:
            problems.append(f"{args}: state changed: {before} -> {now}")
            before = now
    assert (queue.status(), queue.json("config", "get")) == before
    assert queue.jobs() == jobs_before
    assert not problems, "\n".join(problems)


def test_duplicate_id_and_unknown_job(queue: Queue) -> None:
    queue.enqueue({"id": "dup", "command": "echo original"})
    res = queue.run("enqueue", '{"id":"dup","command":"echo replaced"}', check=False)
    assert res.returncode == 1
    lines = res.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error") and "dup" in lines[0], res.stderr
    [job] = queue.jobs()
    assert job["command"] == "echo original"

    res = queue.run("show", "nope", check=False)
    assert res.returncode == 1 and res.stderr.startswith("Error"), res
    assert "Traceback" not in res.stderr
    res = queue.run("dlq", "retry", "nope", check=False)
    assert res.returncode == 1 and res.stderr.startswith("Error"), res


# ------------------------------------------------------------------ enqueue --file

def write_lines(path: Path, jobs: list[Any]) -> Path:
    path.write_text("".join((j if isinstance(j, str) else json.dumps(j)) + "\n" for j in jobs))
    return path


def test_enqueue_file_is_all_or_nothing(queue: Queue, tmp_path: Path) -> None:
    bad = write_lines(tmp_path / "bad.jsonl", [
        {"id": "a", "command": "echo a"}, {"id": "b", "command": "echo b"}, '{"id": "c", ',
        {"id": "d", "command": "echo d"},
    ])
    res = queue.run("enqueue", "--file", str(bad), check=False)
    assert res.returncode == 2, res
    assert res.stderr.startswith("Error") and "line 3" in res.stderr, res.stderr
    assert len(res.stderr.splitlines()) == 1
    assert queue.jobs() == []

    # The same through stdin.
    res = queue.run("enqueue", "--file", "-", stdin=bad.read_text(), check=False)
    assert res.returncode == 2 and "line 3" in res.stderr, res
    assert queue.jobs() == []

    good = write_lines(tmp_path / "good.jsonl", [
        {"id": f"job-{i:03d}", "command": f"echo {i}"} for i in range(100)
    ])
    assert queue.run("enqueue", "--file", str(good)).stdout == "Enqueued 100 jobs.\n"
    assert queue.status()["pending"] == 100
    assert [j["id"] for j in queue.jobs()] == [f"job-{i:03d}" for i in range(100)]

    stdin_jobs = [{"id": f"in-{i}", "command": "true"} for i in range(3)]
    queue.enqueue_many(stdin_jobs)
    assert queue.status()["pending"] == 103

    # A duplicate inside the file, or of a stored job: nothing from the file is stored.
    dup_inside = write_lines(tmp_path / "dup1.jsonl", [
        {"id": "x1", "command": "true"}, {"id": "x2", "command": "true"},
        {"id": "x1", "command": "false"},
    ])
    dup_stored = write_lines(tmp_path / "dup2.jsonl", [
        {"id": "y1", "command": "true"}, {"id": "job-050", "command": "echo replaced"},
        {"id": "y2", "command": "true"},
    ])
    for path in (dup_inside, dup_stored):
        res = queue.run("enqueue", "--file", str(path), check=False)
        assert res.returncode == 1, res
        assert res.stderr.startswith("Error") and len(res.stderr.splitlines()) == 1, res
    assert queue.status()["pending"] == 103
    assert queue.show("job-050")["command"] == "echo 50"
    assert not {"x1", "x2", "y1", "y2"} & {j["id"] for j in queue.jobs()}


# ------------------------------------------------------------------ ordering

@pytest.mark.slow
def test_priority_then_fifo(queue: Queue, tmp_path: Path) -> None:
    queue.fast()
    order_file = tmp_path / "order"
    specs = [("p0-a", 0), ("p5-a", 5), ("p0-b", 0), ("p10", 10), ("neg", -1), ("p5-b", 5),
             ("p0-c", 0)]
    for job_id, prio in specs:
        cmd = f"echo {job_id} >> {order_file}"
        if prio % 2:  # both spellings: JSON and flags
            queue.enqueue({"id": job_id, "command": cmd, "priority": prio})
        else:
            queue.run("enqueue", "--id", job_id, "--priority", str(prio), "--command", cmd)
    assert queue.status()["pending"] == len(specs)

    queue.start_workers(1)
    queue.wait_counts(completed=len(specs))
    queue.stop_workers()

    expected = ["p10", "p5-a", "p5-b", "p0-a", "p0-b", "p0-c", "neg"]
    assert order_file.read_text().split() == expected
    jobs = {j: queue.show(j) for j in expected}
    starts = [iso_ms(jobs[j]["attempts_history"][0]["started_at"]) for j in expected]
    assert starts == sorted(starts)
    finishes = [iso_ms(jobs[j]["finished_at"]) for j in expected]
    assert finishes == sorted(finishes)


# ------------------------------------------------------------------ meta

def test_plugins_and_version(queue: Queue) -> None:
    out = queue.run("plugins").stdout
    assert "sqlite" in out and "shell" in out
    data = queue.json("plugins")
    names = {p["name"] for p in data["plugins"]}
    assert {"sqlite", "shell"} <= names
    assert data["failed"] == []
    assert queue.run("--version").stdout == f"queuectl, version {version('queuectl')}\n"
