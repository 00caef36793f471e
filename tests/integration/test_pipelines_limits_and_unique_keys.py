"""Jobs that run after others, concurrency limits and unique keys, through
the real CLI with real workers, on every backend."""

from __future__ import annotations

import itertools
import json
import subprocess

from .conftest import QUEUECTL, Queue, iso_ms, one_error


def _attempt(queue: Queue, job_id: str) -> dict[str, object]:
    history = queue.show(job_id)["attempts_history"]
    assert history, f"{job_id} never ran"
    last: dict[str, object] = history[-1]
    return last


def test_a_pipeline_runs_in_order_and_its_failures_and_cancels_cascade(queue: Queue) -> None:
    queue.fast()
    flag = queue.workdir / "fixed"
    queue.run("pause", "parked")
    lines: list[dict[str, object]] = [
        {"id": "join", "command": "true", "after": ["left", "right"]},  # parents come later
        {"id": "top", "command": "true"},
        {"id": "left", "command": "sleep 0.3", "after": ["top"]},
        {"id": "right", "command": "true", "after": ["top"]},
        {"id": "bad", "command": f"test -f {flag}", "max_retries": 0},
        {"id": "kid", "command": "true", "after": ["bad"]},
        {"id": "grandkid", "command": "true", "after": ["kid"]},
        {"id": "anyway", "command": "true", "after": ["bad"], "after_mode": "finished"},
        {"id": "held", "command": "true", "queue": "parked"},
        {"id": "after-held", "command": "true", "after": ["held"]},
    ]
    queue.enqueue_many(lines)
    assert queue.status()["waiting"] == 7
    assert {j["id"] for j in queue.jobs("waiting")} == {
        "join", "left", "right", "kid", "grandkid", "anyway", "after-held"}

    refused = queue.run("enqueue", "-c", "true", "--after", "top,nobody", check=False)
    one_error(refused, 1, "nobody", "does not exist")
    assert sum(queue.status()[s] for s in ("pending", "waiting")) == 10, "nothing stored"

    queue.start_workers(2)
    queue.run("wait", "join", timeout=60)
    join = _attempt(queue, "join")
    for parent in ("left", "right"):
        assert iso_ms(str(join["started_at"])) >= iso_ms(str(_attempt(queue, parent)[
            "finished_at"])), f"join started before {parent} finished"
    shown = queue.show("join")
    assert shown["parents"] == [{"id": "left", "state": "completed"},
                                {"id": "right", "state": "completed"}]
    assert queue.show("top")["children"] == [{"id": "left", "state": "completed"},
                                             {"id": "right", "state": "completed"}]

    queue.wait_state("bad", "dead")
    kid = queue.wait_state("kid", "skipped")
    assert "'bad'" in kid["last_error"] and "dead" in kid["last_error"]
    queue.wait_state("grandkid", "skipped")
    queue.wait_state("anyway", "completed")
    waited = queue.run("wait", "grandkid", check=False)
    assert waited.returncode == 1 and "skipped" in waited.stderr

    queue.run("cancel", "held")
    queue.wait_state("after-held", "skipped")

    flag.touch()
    queue.run("dlq", "retry", "bad")
    queue.run("wait", "grandkid", timeout=60)
    assert queue.show("kid")["state"] == "completed"
    queue.stop_workers()


def test_a_limit_is_never_exceeded_with_two_supervisors(queue: Queue) -> None:
    queue.fast()
    queue.run("limit", "set", "gpu", "2")
    assert queue.json("limit", "list") == [{"key": "gpu", "limit": 2, "set": True,
                                            "running": 0}]
    slots = queue.workdir / "slots"
    slots.mkdir()
    seen = queue.workdir / "seen"
    # Each keyed job holds a file while it runs and records how many it sees.
    gpu = (f"touch {slots}/$QUEUECTL_JOB_ID; ls {slots} | wc -l >> {seen}; sleep 0.3; "
           f"rm {slots}/$QUEUECTL_JOB_ID")
    jobs = [{"id": f"g{i}", "command": gpu, "concurrency_key": "gpu"} for i in range(12)]
    jobs += [{"id": f"m{i}", "command": "sleep 0.1", "concurrency_key": "mutex"}
             for i in range(3)]
    jobs += [{"id": f"p{i}", "command": "true"} for i in range(8)]
    queue.start_workers(2)
    queue.start_workers(2)
    queue.wait_active_workers(4)
    queue.enqueue_many(jobs)
    queue.wait_counts(timeout=60, completed=len(jobs))
    counts = [int(n) for n in seen.read_text().split()]
    assert len(counts) == 12 and max(counts) <= 2, counts
    assert max(counts) == 2, "two gpu jobs should have run at once at some point"
    done = {j["id"]: iso_ms(j["finished_at"]) for j in queue.jobs()}
    assert max(done[f"p{i}"] for i in range(8)) < max(done[f"g{i}"] for i in range(12)), (
        "the plain jobs drained while gpu jobs waited for their slots")
    mutex = sorted((iso_ms(str(_attempt(queue, f"m{i}")["started_at"])),
                    iso_ms(str(_attempt(queue, f"m{i}")["finished_at"]))) for i in range(3))
    assert all(a[1] <= b[0] for a, b in itertools.pairwise(mutex)), "no limit set: a mutex"
    queue.stop_workers()


def test_one_of_eight_concurrent_enqueues_of_a_unique_key_wins(queue: Queue) -> None:
    queue.run("status")  # the store exists before the race
    procs = [subprocess.Popen([str(QUEUECTL), "enqueue", "-c", "true", "--unique-key",
                               "nightly"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True, env=queue.env, cwd=queue.workdir)
             for _ in range(8)]
    results = [(p.wait(60), p.communicate()) for p in procs]
    assert sorted(code for code, _ in results) == [0] + [1] * 7, results
    for code, (_, err) in results:
        if code:
            assert err.startswith("Error: unique key 'nightly' is held by job"), err
    [holder] = queue.jobs("pending")
    skip = queue.run("enqueue", "-c", "true", "--unique-key", "nightly", "--if-exists", "skip",
                     "--json")
    assert json.loads(skip.stdout) == {"enqueued": 0, "ids": [], "existing": holder["id"]}
    assert queue.status()["pending"] == 1
