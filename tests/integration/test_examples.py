"""The "Usage Examples" of the original README, adapted to this CLI. Each is
run with the alias spellings the README uses (worker-start, worker-stop,
dlq-list, dlq-retry, config-get, config-set) and, where it matters, with the
canonical commands too.

They check the CLI's spellings and output, which do not depend on the
backend: they run on SQLite, the default (every backend runs the same flows
in test_jobs, test_workers and the other integration tests)."""

from __future__ import annotations

import pytest

from .conftest import Queue, iso_ms, now_ms

pytestmark = pytest.mark.backends("sqlite")


def test_example1_simple_job_processing(queue: Queue) -> None:
    queue.run("config-set", "worker_idle_delay", "50")
    group = queue.start_workers(1, alias=True)
    assert group.stdout.startswith("Starting 1 worker process...\n")
    for i in (1, 2, 3):
        out = queue.run("enqueue", f'{{"id":"job{i}","command":"echo Job {i} completed"}}').stdout
        assert out == f"Job enqueued with ID: job{i}\n"

    status = queue.wait_counts(completed=3)
    assert status == {"pending": 0, "processing": 0, "completed": 3, "failed": 0, "dead": 0,
                      "cancelled": 0, "waiting": 0, "skipped": 0, "active_workers": 1,
                      "paused_queues": [], "queue": None}
    human = queue.run("status").stdout
    assert "completed" in human and "Active workers: 1" in human
    for i in (1, 2, 3):
        job = queue.show(f"job{i}")
        assert (job["state"], job["attempts"], job["exit_code"]) == ("completed", 1, 0)
        log = queue.home / "logs" / "jobs" / f"job{i}" / "attempt-1.out"
        assert log.read_text() == f"Job {i} completed\n"

    out = queue.stop_workers(alias=True)
    assert out == "Stopping all workers...\nAll workers stopped.\n"
    assert queue.status()["active_workers"] == 0


@pytest.mark.slow
def test_example2_retry_and_dlq(queue: Queue) -> None:
    queue.run("config-set", "max_retries", "2")
    # backoff 1.2 s then 1.44 s instead of 2 s and 4 s: same path, faster.
    queue.run("config-set", "backoff_base", "1.2")
    queue.run("config-set", "worker_idle_delay", "50")
    queue.enqueue({"id": "fail1", "command": "exit 1"})
    queue.start_workers(1, alias=True)

    def dead() -> list[dict[str, object]]:
        return [j for j in queue.json("dlq-list") if j["id"] == "fail1"]

    [entry] = queue.wait_until(dead, 20, "fail1 in the DLQ")
    assert entry["command"] == "exit 1"
    assert entry["state"] == "dead"
    assert entry["attempts"] == 3
    assert entry["max_retries"] == 2
    assert entry["last_error"]
    assert "fail1" in queue.run("dlq-list").stdout
    assert [a["outcome"] for a in queue.show("fail1")["attempts_history"]] == ["failed"] * 3
    assert queue.status()["dead"] == 1

    # Stop first: with a worker running, the retried job would be claimed at once.
    queue.stop_workers(alias=True)
    out = queue.run("dlq-retry", "fail1").stdout
    assert out == "Job 'fail1' moved back to queue for retry.\n"
    [pending] = queue.jobs("pending")
    assert pending["id"] == "fail1"
    assert pending["attempts"] == 0
    assert pending["max_retries"] == 2
    assert queue.json("dlq", "list") == []
    assert "empty" in queue.run("dlq", "list").stdout

    # Retrying a job that is not dead is refused.
    res = queue.run("dlq", "retry", "fail1", check=False)
    assert res.returncode == 1 and res.stderr.startswith("Error"), res


@pytest.mark.slow
def test_example3_delayed_job(queue: Queue) -> None:
    queue.fast()
    run_at = now_ms() + 3000
    queue.run("enqueue", f'{{"id":"delayed","command":"echo Delayed execution",'
                         f'"run_at":{run_at}}}')
    assert queue.status()["pending"] == 1
    [job] = queue.jobs("pending")
    assert job["id"] == "delayed" and iso_ms(job["run_at"]) == run_at
    queue.start_workers(1, alias=True)
    queue.wait_active_workers(1)

    # Until run_at, every look finds it pending and never started. (A look
    # that returns after run_at, a slow `show` on a loaded machine, may
    # rightly find it started: it does not count.)
    while now_ms() < run_at - 250:
        job = queue.show("delayed")
        if now_ms() >= run_at:
            break
        assert job["state"] == "pending", job
        assert job["attempts_history"] == []

    done = queue.wait_state("delayed", "completed", timeout=15)
    assert done["attempts"] == 1
    started = iso_ms(done["attempts_history"][0]["started_at"])
    assert started >= run_at, f"started {run_at - started} ms before run_at"
    assert queue.json("status") == {"pending": 0, "processing": 0, "completed": 1, "failed": 0,
                                    "dead": 0, "cancelled": 0, "waiting": 0, "skipped": 0,
                                    "active_workers": 1, "paused_queues": [], "queue": None}
    queue.stop_workers(alias=True)


@pytest.mark.slow
def test_example4_multiple_workers(queue: Queue) -> None:
    queue.fast()
    for i in range(1, 11):
        queue.run("enqueue", f'{{"id":"job{i}","command":"echo Job {i}"}}')
    group = queue.start_workers(3, alias=True)
    assert len(set(group.workers)) == 3
    queue.wait_active_workers(3)
    queue.wait_counts(completed=10)
    assert queue.jobs("processing") == []
    completed = queue.jobs("completed")
    assert sorted(j["id"] for j in completed) == sorted(f"job{i}" for i in range(1, 11))
    assert all(j["attempts"] == 1 for j in completed)
    assert queue.stop_workers(alias=True).endswith("All workers stopped.\n")
    assert queue.status()["active_workers"] == 0


def test_example5_configuration(queue: Queue) -> None:
    defaults = queue.run("config-get").stdout
    assert defaults == ("max_retries: 3\nbackoff_base: 2\nworker_idle_delay: 2000\n"
                        "lease_seconds: 15\nmax_delay: 0\njitter: 0\njob_timeout: 0\n"
                        "output_max_bytes: 10485760\noutput_tail_bytes: 4096\n"
                        "retention_days: 0\n")
    assert queue.run("config-set", "max_retries", "5").stdout == (
        "Config updated: max_retries = 5\n")
    assert queue.run("config-set", "backoff_base", "3").stdout == (
        "Config updated: backoff_base = 3\n")
    out = queue.run("config-get").stdout
    assert "max_retries: 5\n" in out and "backoff_base: 3\n" in out
    assert queue.run("config-get", "max_retries").stdout == "max_retries: 5\n"
    assert queue.run("config", "get", "backoff_base").stdout == "backoff_base: 3\n"
    assert queue.json("config", "get") == {"max_retries": 5, "backoff_base": 3.0,
                                           "worker_idle_delay": 2000, "lease_seconds": 15,
                                           "max_delay": 0.0, "jitter": 0.0,
                                           "job_timeout": 0.0, "output_max_bytes": 10485760,
                                           "output_tail_bytes": 4096, "retention_days": 0.0}
    assert queue.json("config-get", "max-retries") == {"max_retries": 5}

    # "Now failing jobs will retry with delays: 3, 9, 27, 81 seconds": the
    # first retry is scheduled backoff_base ** 1 = 3 s after attempt 1 ends.
    queue.run("config-set", "worker_idle_delay", "50")
    queue.enqueue({"id": "flaky", "command": "exit 3"})
    queue.start_workers(1)
    job = queue.wait_state("flaky", "failed")
    queue.stop_workers()
    assert job["max_retries"] == 5 and job["attempts"] == 1 and job["exit_code"] == 3
    assert iso_ms(job["run_at"]) - iso_ms(job["finished_at"]) == 3000
