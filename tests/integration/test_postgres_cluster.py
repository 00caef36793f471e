"""Several machines on one PostgreSQL queue: two worker groups with their
own QUEUECTL_HOME (standing in for two machines) share one database; and
the database restarting in the middle of a run."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from .conftest import Queue, wait_until

pytestmark = [pytest.mark.backends("postgres"), pytest.mark.slow]


def marker_job(job_id: str, marks: Path, sleep: str = "0") -> dict[str, str]:
    # `set -C` makes `>` fail if the file exists: a second run of a job fails loudly.
    return {"id": job_id,
            "command": f"sleep {sleep}; set -C; echo $QUEUECTL_JOB_ID > {marks}/{job_id}"}


def second_machine(queue: Queue, tmp_path: Path) -> Queue:
    """Another QUEUECTL_HOME pointing at the same database schema."""
    other = Queue(tmp_path / "machine-b", queue.workdir, "postgres")
    other.pg_schema = None  # the first queue owns (and drops) the schema
    (other.home / "queuectl.yaml").write_text(
        f"backends:\n  postgres:\n    schema: {queue.pg_schema}\n")
    return other


def test_two_machines_run_every_job_exactly_once(queue: Queue, tmp_path: Path) -> None:
    marks = tmp_path / "marks"
    marks.mkdir()
    queue.fast()
    other = second_machine(queue, tmp_path)
    try:
        queue.start_workers(2)
        other.start_workers(2)
        total = 80
        queue.enqueue_many([marker_job(f"j{i:03d}", marks) for i in range(total)])
        queue.wait_counts(completed=total, timeout=90)
        jobs = other.jobs()  # the other machine sees the same queue
        assert len(jobs) == total and all(j["attempts"] == 1 for j in jobs)
        assert len(list(marks.iterdir())) == total
        workers = {j["worker_id"].split(":")[1] for j in jobs}
        assert len(workers) >= 2, "both machines took part"
        assert other.status()["active_workers"] == 4, "status shows the whole cluster"
    finally:
        other.cleanup()


def pg_restart() -> None:
    version = sorted(p.name for p in Path("/etc/postgresql").iterdir())[0]
    subprocess.run(["pg_ctlcluster", "--skip-systemctl-redirect", version, "main", "restart"],
                   check=True, capture_output=True, timeout=60)


@pytest.mark.restarts_postgres  # no other test uses the server meanwhile (conftest)
@pytest.mark.skipif(shutil.which("pg_ctlcluster") is None or not Path("/etc/postgresql").is_dir(),
                    reason="needs a local PostgreSQL cluster managed by pg_ctlcluster")
def test_database_restart_mid_run(queue: Queue, tmp_path: Path) -> None:
    marks = tmp_path / "marks"
    marks.mkdir()
    # Leases longer than any restart, however loaded the machine: this test is
    # about workers living through the outage and recording every result
    # once; a lease that expires meanwhile rightly runs a job again (the
    # crash suite's test_postgres_restart_mid_run covers that case).
    queue.fast(lease_seconds=120)
    total = 40
    queue.enqueue_many([marker_job(f"r{i:03d}", marks, "0.2") for i in range(total)])
    queue.start_workers(2)
    queue.wait_until(lambda: queue.status()["completed"] >= 5, 30, "some jobs done")
    pg_restart()
    queue.wait_counts(completed=total, timeout=120)
    jobs = queue.jobs()
    assert all(j["state"] == "completed" for j in jobs)
    assert len(list(marks.iterdir())) == total, "no job ran twice"
    log = (queue.home / "logs" / "workers.log").read_text()
    assert "storage unavailable" in log, "workers reported the outage"
    wait_until(lambda: queue.status()["active_workers"] == 2, 15, message="workers alive")
