"""dlq show/retry --all/purge, purge by state, age and batch with the jobs'
logs, and export/import of every field, in process."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from queuectl_core.cli import control
from queuectl_core.joblogs import job_log_dir
from queuectl_core.models import ExecResult, JobState
from queuectl_core.timeutil import now_ms
from tests.unit.cli_harness import Cli, one_error_line

# ------------------------------------------------------------------ dlq and purge

def make_dead(cli: Cli, job_id: str) -> None:
    cli.add(job_id, "false", max_retries=0, queue=f"only-{job_id}")
    claim = cli.claim(queue=f"only-{job_id}")
    cli.store.fail(claim, ExecResult(exit_code=1, error="nope"), now_ms(), None)
    (cli.log_dir(job_id) / "attempt-1.out").write_text("x")


# ------------------------------------------------------------------ export / import, config


def test_dlq_show_retry_all_and_purge(cli: Cli) -> None:
    make_dead(cli, "d1")
    make_dead(cli, "d2")
    make_dead(cli, "d3")
    cli.add("alive")
    assert "Job d1" in cli.ok("dlq", "show", "d1").out
    assert cli.ok("dlq", "show", "d1", "--json").json()["state"] == "dead"
    one_error_line(cli("dlq", "show", "alive"), 1, "pending, not dead")
    one_error_line(cli("dlq", "show", "nope"), 1, "nope")

    res = cli("dlq", "retry", "d1", "alive", "d2")
    assert res.code == 1
    assert res.out == ("Job 'd1' moved back to queue for retry.\n"
                       "Job 'd2' moved back to queue for retry.\n")
    assert res.err == ("Error: job 'alive' is pending, not dead; only jobs in the DLQ can be "
                       "retried\n")
    make_dead(cli, "d4")
    res = cli.ok("dlq", "retry", "--all", "--json")
    assert sorted(j["id"] for j in res.json()) == ["d3", "d4"]
    assert cli.ok("dlq", "retry", "--all").out == "The dead letter queue is empty.\n"
    one_error_line(cli("dlq", "retry", "d1", "--all"), 2, "not both")
    one_error_line(cli("dlq", "retry"), 2, "--all")
    # One id keeps the original behaviour: an error, no output.
    one_error_line(cli("dlq", "retry", "d1"), 1, "not dead")

    for job_id in ("d1", "d2", "d3", "d4"):
        cli.store.cancel(job_id, now_ms())
    make_dead(cli, "e1")
    make_dead(cli, "e2")
    make_dead(cli, "e3")
    res = cli("dlq", "purge", "e1", "d1", "nope", "e1")
    assert res.code == 1
    assert res.out == "Purged 1 dead job(s).\n"
    assert res.err.splitlines() == ["Error: job 'd1' is cancelled, not dead; not purged",
                                    "Error: no job with id 'nope'"]
    assert not job_log_dir(cli.home / "logs" / "jobs", "e1").exists()
    assert job_log_dir(cli.home / "logs" / "jobs", "e2").exists()
    assert cli.ok("dlq", "purge", "--all", "--json").json() == {"purged": 2,
                                                               "ids": ["e2", "e3"]}
    assert not job_log_dir(cli.home / "logs" / "jobs", "e2").exists()
    assert cli.store.list_jobs(JobState.DEAD) == []
    assert cli.ok("dlq", "purge", "--all").out == "Purged 0 dead job(s).\n"


def test_purge_states_age_batches_and_logs(cli: Cli, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(control, "PURGE_BATCH", 2)
    for i in range(5):
        cli.add(f"c{i}")
        claim = cli.claim()
        cli.store.complete(claim, ExecResult(exit_code=0), now_ms())
        (cli.log_dir(f"c{i}") / "attempt-1.out").write_text("out")
    cli.add("x")
    cli.store.cancel("x", now_ms())
    make_dead(cli, "dead1")
    cli.add("waiting")

    one_error_line(cli("purge", "--state", "pending"), 2, "pending", "only completed")
    one_error_line(cli("purge", "--state", "completed", "--state", "failed"), 2, "failed")
    one_error_line(cli("purge", "--older-than", "a while"), 2, "--older-than")
    assert cli.ok("purge", "--older-than", "7d").out == "Purged 0 job(s).\n"
    data = cli.ok("purge", "--older-than", "1d", "--json").json()
    assert data["purged"] == 0 and data["states"] == ["completed", "cancelled", "skipped"]
    assert data["finished_before"].endswith("Z")
    assert cli.ok("purge").out == "Purged 6 job(s).\n"
    assert not (cli.home / "logs" / "jobs" / "c3").exists()
    assert [j.id for j in cli.store.list_jobs()] == ["dead1", "waiting"]
    assert cli.ok("purge", "--state", "dead", "--json").json()["purged"] == 1


def test_export_import_round_trip_keeps_the_new_fields(cli: Cli, tmp_path: Path) -> None:
    cli.ok("enqueue", json.dumps({"id": "full", "command": "true", "queue": "q",
                                  "timeout": 2.5, "env": {"A": "1"},
                                  "retry": {"policy": "linear", "jitter": 0.5}}))
    cli.add("gone")
    cli.store.cancel("gone", now_ms())
    cli.add("stopping")
    claim = cli.claim()
    assert claim.job.id == "full"
    cli.store.complete(claim, ExecResult(exit_code=0, stdout_tail="o", stderr_tail="e"),
                       now_ms())
    claim = cli.claim()
    assert claim.job.id == "stopping"
    cli.store.cancel("stopping", now_ms())
    dump = tmp_path / "dump.jsonl"
    cli.ok("export", "-o", str(dump))
    records = [json.loads(line) for line in dump.read_text().splitlines()]
    assert [r["state"] for r in records] == ["completed", "cancelled", "processing"]

    other = Cli(tmp_path / "other", cli.capsys, cli.monkeypatch)
    assert other.ok("import", str(dump)).out == "Imported 3 jobs.\n"
    full = other.store.get("full")
    assert full is not None
    assert (full.queue, full.timeout, full.env, full.retry, full.cwd) == (
        "q", 2.5, {"A": "1"}, {"policy": "linear", "jitter": 0.5}, str(tmp_path / "work"))
    assert other.store.attempts("full")[0].stdout_tail == "o"
    gone = other.store.get("gone")
    assert gone is not None and gone.state is JobState.CANCELLED
    assert gone.cancel_requested_at == cli.store.get("gone").cancel_requested_at  # type: ignore[union-attr]
    stopping = other.store.get("stopping")
    assert stopping is not None and stopping.state is JobState.CANCELLED, \
        "a job being cancelled when exported ends cancelled"
    assert other.store.attempts("stopping")[0].outcome == "cancelled"
    again = [json.loads(line) for line in other.ok("export").out.splitlines()]
    assert again[:2] == records[:2]
