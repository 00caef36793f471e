"""Named queues end to end, on each backend: job fields and queues from the
command line, pause and resume, workers that serve only their queues."""

from __future__ import annotations

import time

import pytest

from .conftest import Queue, one_error

# ------------------------------------------------------------------ fields, queues, pause


# ------------------------------------------------------------------ running: cwd, env, logs


# ------------------------------------------------------------------ cancel and wait


# ------------------------------------------------------------------ dlq and purge


# ------------------------------------------------------------------ timeouts


# ------------------------------------------------------------------ export / import


# ------------------------------------------------------------------ YAML: retry policy, DLQ command


def test_job_fields_queues_and_pause_without_workers(queue: Queue) -> None:
    sub = queue.workdir / "sub"
    sub.mkdir()
    out = queue.run("enqueue", "-c", "echo hi", "--id", "mail1", "--queue", "mail",
                    "--timeout", "90s", "--cwd", "sub", "--env", "A=1", "--env", "B=x=y").stdout
    assert out == "Job enqueued with ID: mail1\n"
    queue.enqueue({"id": "plain", "command": "true",
                   "retry": {"policy": "linear", "max_delay": 30, "jitter": 0.1}})
    mail1 = queue.show("mail1")
    assert (mail1["queue"], mail1["timeout"], mail1["cwd"], mail1["env"]) == (
        "mail", 90.0, str(sub), {"A": "1", "B": "x=y"})
    assert mail1["cancel_requested_at"] is None and mail1["retry"] is None
    plain = queue.show("plain")
    assert plain["queue"] == "default" and plain["cwd"] == str(queue.workdir)
    assert plain["retry"] == {"policy": "linear", "max_delay": 30, "jitter": 0.1}
    text = queue.run("show", "mail1").stdout
    assert "  queue:       mail\n" in text and "  timeout:     90s\n" in text
    assert '  env:         {"A": "1", "B": "x=y"}\n' in text

    assert [j["id"] for j in queue.json("list", "--queue", "mail")] == ["mail1"]
    assert queue.run("list", "--queue", "empty").stdout == "No jobs in queue 'empty'.\n"
    assert queue.json("status", "--queue", "mail")["pending"] == 1

    assert queue.run("pause", "mail").stdout == (
        "Queue 'mail' paused: workers claim nothing more from it; running jobs finish.\n")
    assert queue.run("pause", "mail").stdout == "Queue 'mail' is already paused.\n"
    status = queue.json("status")
    assert status["paused_queues"] == ["mail"] and status["cancelled"] == 0
    assert "Paused queues: mail\n" in queue.run("status").stdout
    assert queue.json("resume", "mail") == {"queue": "mail", "paused": False, "changed": True}
    assert queue.json("status")["paused_queues"] == []

    one_error(queue.run("enqueue", "-c", "true", "--env", "NOVALUE", check=False), 2, "--env")
    one_error(queue.run("enqueue", "-c", "true", "--timeout", "later", check=False), 2,
              "--timeout")
    one_error(queue.run("enqueue", '{"command":"true","retry":{"policy":"fibonacci"}}',
                        check=False), 2, "fibonacci", "exponential", "linear")
    one_error(queue.run("pause", "no/slash", check=False), 2, "queue name")
    one_error(queue.run("purge", "--state", "pending", check=False), 2, "pending")
    assert [j["id"] for j in queue.jobs()] == ["mail1", "plain"]


@pytest.mark.slow
def test_paused_queue_is_not_claimed_until_resumed(queue: Queue) -> None:
    queue.fast()
    queue.run("pause", "later")
    queue.enqueue({"id": "held", "command": "true", "queue": "later"})
    queue.enqueue({"id": "free", "command": "true"})
    queue.start_workers(1)
    queue.wait_state("free", "completed")
    # Some idle polls (50 ms each) later, the paused job is still waiting.
    deadline = time.monotonic() + 1.0
    while time.monotonic() < deadline:
        assert queue.show("held")["state"] == "pending"
    out = queue.run("resume", "later").stdout
    assert out == "Queue 'later' resumed: workers claim its jobs again.\n"
    queue.wait_state("held", "completed", timeout=10)
    queue.stop_workers()


@pytest.mark.slow
def test_workers_serve_only_their_queues(queue: Queue) -> None:
    queue.fast()
    queue.enqueue({"id": "m1", "command": "true", "queue": "mail"})
    queue.enqueue({"id": "r1", "command": "true", "queue": "render"})
    queue.enqueue({"id": "d1", "command": "true"})
    out = queue.run("worker", "start", "--queue", "mail,render", timeout=30).stdout
    assert out.startswith("Starting 1 worker process for queues mail, render...\n"), out
    queue.wait_state("m1", "completed")
    queue.wait_state("r1", "completed")
    queue.stop_workers()
    assert queue.show("d1")["state"] == "pending", "the default queue is not served"
    bad = queue.run("worker", "start", "--queue", "ok,-bad", check=False)
    assert bad.returncode == 2 and "queue name '-bad'" in bad.stderr, bad
