"""The dead letter queue and purge end to end, on each backend: dlq show, retry
--all and purge; purge of finished jobs and their logs; a YAML retry policy
and DLQ command; export/import of every job field."""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import pytest

from .conftest import Queue, iso_ms, log_dir, one_error

# ------------------------------------------------------------------ fields, queues, pause


# ------------------------------------------------------------------ running: cwd, env, logs


# ------------------------------------------------------------------ cancel and wait


# ------------------------------------------------------------------ dlq and purge


# ------------------------------------------------------------------ timeouts


# ------------------------------------------------------------------ export / import


# ------------------------------------------------------------------ YAML: retry policy, DLQ command


@pytest.mark.slow
def test_dlq_show_retry_all_and_purge(queue: Queue) -> None:
    queue.fast()
    queue.enqueue({"id": "ok", "command": "echo fine"})
    for name in ("d1", "d2", "d3"):
        queue.enqueue({"id": name, "command": f"echo {name}; exit 1", "max_retries": 0})
    queue.start_workers(1)
    queue.wait_counts(completed=1, dead=3)
    queue.stop_workers()

    shown = queue.run("dlq", "show", "d1").stdout
    assert shown.startswith("Job d1\n") and "  state:       dead\n" in shown
    one_error(queue.run("dlq", "show", "ok", check=False), 1, "completed, not dead")

    out = queue.run("dlq", "retry", "--all").stdout
    assert out.endswith("Moved 3 dead job(s) back to the queue.\n"), out
    assert queue.status()["pending"] == 3
    queue.start_workers(1)
    queue.wait_counts(dead=3)
    queue.stop_workers()
    for name in ("d1", "d2", "d3"):
        numbers = [a["number"] for a in queue.show(name)["attempts_history"]]
        assert numbers == [1, 2], "a retried job's attempts keep their numbers"
    assert queue.run("logs", "d2", "--attempt", "1").stdout == "d2\n"

    res = queue.run("dlq", "purge", "d1", "ok", check=False)
    assert res.returncode == 1
    assert res.stdout == "Purged 1 dead job(s).\n"
    assert res.stderr == "Error: job 'ok' is completed, not dead; not purged\n"
    assert not log_dir(queue, "d1").exists() and log_dir(queue, "ok").exists()
    assert queue.json("dlq", "purge", "--all") == {"purged": 2, "ids": ["d2", "d3"]}
    assert queue.json("dlq", "list") == []
    assert [j["id"] for j in queue.jobs()] == ["ok"]


@pytest.mark.slow
def test_purge_finished_jobs_and_their_logs(queue: Queue) -> None:
    queue.fast()
    queue.enqueue_many([{"id": f"c{i}", "command": f"echo {i}"} for i in range(3)])
    queue.enqueue({"id": "dead", "command": "exit 1", "max_retries": 0})
    queue.enqueue({"id": "later", "command": "true", "run_at": "2999-01-01T00:00:00Z"})
    queue.run("cancel", "later")
    queue.enqueue({"id": "waiting", "command": "true", "queue": "held"})
    queue.run("pause", "held")
    queue.start_workers(1)
    queue.wait_counts(completed=3, dead=1)
    queue.stop_workers()
    assert log_dir(queue, "c0").is_dir()

    assert queue.run("purge", "--older-than", "1h").stdout == "Purged 0 job(s).\n"
    one_error(queue.run("purge", "--state", "failed", check=False), 2, "failed")
    one_error(queue.run("purge", "--older-than", "a week", check=False), 2, "--older-than")
    assert queue.run("purge").stdout == "Purged 4 job(s).\n"
    assert not log_dir(queue, "c0").exists()
    assert [j["id"] for j in queue.jobs()] == ["dead", "waiting"]
    data = queue.json("purge", "--state", "dead", "--older-than", "0s")
    assert data["purged"] == 1 and data["states"] == ["dead"]
    assert [j["id"] for j in queue.jobs()] == ["waiting"]
    # A purged id can be used again.
    queue.enqueue({"id": "c0", "command": "true"})


def test_yaml_retry_policy_and_dlq_command(queue: Queue) -> None:
    """`retry: {policy: constant}` spaces every retry by backoff_base, and
    `dlq.command` gets each dead job as JSON on stdin, from a real worker."""
    queue.home.mkdir(mode=0o700, parents=True, exist_ok=True)
    config = queue.home / "queuectl.yaml"
    before = config.read_text() if config.exists() else ""
    alerts = queue.workdir / "alerts.jsonl"
    config.write_text(before + "retry:\n  policy: constant\n"
                      f"dlq:\n  command: cat >> {alerts}; echo >> {alerts}\n  timeout: 10\n")
    config.chmod(0o600)
    queue.fast(backoff_base=1.5)
    queue.enqueue({"id": "doomed", "command": "echo no disk >&2; exit 3", "max_retries": 2})
    queue.enqueue({"id": "own", "command": "exit 1", "max_retries": 1,
                   "retry": {"policy": "linear", "backoff_base": 1.25}})
    queue.start_workers(1)
    queue.wait_state("doomed", "dead", timeout=30)
    queue.wait_state("own", "dead", timeout=30)

    def gaps(job_id: str) -> list[int]:
        attempts = queue.show(job_id)["attempts_history"]
        return [iso_ms(b["started_at"]) - iso_ms(a["finished_at"])
                for a, b in itertools.pairwise(attempts)]

    # Constant: 1.5 s each time (exponential would wait 1.5 then 2.25 s).
    assert all(1500 <= gap < 2200 for gap in gaps("doomed")), gaps("doomed")
    assert len(gaps("doomed")) == 2
    # A job's own retry object wins: linear, 1.25 * 1 s.
    [gap] = gaps("own")
    assert 1250 <= gap < 1950, gap

    def alerted() -> list[dict[str, object]] | None:
        if not alerts.exists():
            return None
        lines = [json.loads(x) for x in alerts.read_text().splitlines() if x.strip()]
        return lines if len(lines) == 2 else None

    got = queue.wait_until(alerted, 15, "two DLQ handler runs")
    by_id = {entry["job"]["id"]: entry for entry in got}  # type: ignore[index]
    assert set(by_id) == {"doomed", "own"}
    doomed = by_id["doomed"]
    assert doomed["event"] == "dead"
    assert doomed["job"]["last_error"] == "no disk"  # type: ignore[index]
    assert doomed["attempt"]["exit_code"] == 3  # type: ignore[index]
    handler_log = (queue.home / "logs" / "dlq-handler.log").read_text()
    assert handler_log.count("the DLQ handler finished") == 2
    queue.stop_workers()


def test_export_import_keeps_the_new_fields(queue: Queue, tmp_path: Path) -> None:
    queue.enqueue({"id": "rich", "command": "true", "queue": "q1", "timeout": 2.5,
                   "env": {"K": "v"}, "cwd": "/",
                   "retry": {"policy": "constant", "backoff_base": 3}})
    queue.enqueue({"id": "stopped", "command": "true", "run_at": "2999-01-01T00:00:00Z"})
    queue.run("cancel", "stopped")
    dump = tmp_path / "dump.jsonl"
    queue.run("export", "-o", str(dump))
    lines = [json.loads(line) for line in dump.read_text().splitlines()]
    assert lines[0]["env"] == {"K": "v"} and lines[0]["timeout"] == 2.5
    assert lines[1]["state"] == "cancelled"
    assert iso_ms(lines[1]["cancel_requested_at"]) > 0
    assert [r["id"] for r in (json.loads(x) for x in queue.run(
        "export", "--state", "cancelled").stdout.splitlines())] == ["stopped"]

    other = Queue(tmp_path / "other-home", queue.workdir, "sqlite")
    try:
        assert other.run("import", str(dump)).stdout == "Imported 2 jobs.\n"
        again = [json.loads(line) for line in other.run("export").stdout.splitlines()]
        assert again == lines
        status = other.json("status")
        assert (status["pending"], status["cancelled"]) == (1, 1)
    finally:
        other.cleanup()
