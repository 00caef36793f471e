"""cancel (waiting jobs, running jobs here and elsewhere, never a group that is
not the job's) and wait exit codes, in process."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import threading
import time

from queuectl_core.models import ExecResult, JobState, WorkerInfo
from queuectl_core.timeutil import now_ms
from tests.unit.cli_harness import Cli, one_error_line

# ------------------------------------------------------------------ wait

def finish_later(cli: Cli, delay: float, job_id: str, ok: bool) -> threading.Thread:
    claim = cli.claim()
    assert claim.job.id == job_id

    def finish() -> None:
        time.sleep(delay)
        if ok:
            cli.store.complete(claim, ExecResult(exit_code=0), now_ms())
        else:
            cli.store.fail(claim, ExecResult(exit_code=2, error="it broke"), now_ms(), None)

    thread = threading.Thread(target=finish)
    thread.start()
    return thread


# ------------------------------------------------------------------ export / import, config


def test_cancel_pending_failed_finished_and_unknown(cli: Cli) -> None:
    cli.add("p")
    cli.add("f", max_retries=2)
    claim = cli.claim()
    assert claim.job.id == "p"
    cli.store.complete(claim, ExecResult(exit_code=0), now_ms())
    cli.store.fail(cli.claim(), ExecResult(exit_code=1, error="x"), now_ms(), now_ms() + 10**6)
    cli.add("q")
    res = cli("cancel", "f", "nope", "p", "q", "f")
    assert res.code == 1
    assert res.out == "Cancelled job f.\nCancelled job q.\n"
    assert res.err.splitlines() == ["Error: no job with id 'nope'",
                                    "Error: job 'p' is completed already"]
    assert cli.store.get("f").state is JobState.CANCELLED  # type: ignore[union-attr]
    res = cli("cancel", "q", "--json")
    assert res.code == 1 and json.loads(res.out) == []
    res = cli("cancel")  # click's own usage error: exit 2, no traceback
    assert res.code == 2 and "Missing argument" in res.err


def test_cancel_running_job_on_this_machine_signals_its_group(cli: Cli) -> None:
    cli.add("r", "sleep 60")
    claim = cli.claim(f"{socket.gethostname()}:{os.getpid()}:t")
    proc = subprocess.Popen(["sleep", "60"], start_new_session=True,
                            env={**os.environ, "QUEUECTL_JOB_ID": "r"})
    try:
        now = now_ms()
        cli.store.register_worker(WorkerInfo(id=claim.worker_id, hostname=socket.gethostname(),
                                             pid=os.getpid(), started_at=now, heartbeat_at=now,
                                             current_job="r", job_pgid=proc.pid))
        res = cli.ok("cancel", "r")
        assert res.out == (f"Cancelling job r: sent SIGTERM to its command (process group "
                           f"{proc.pid}) on this machine; its worker records it as cancelled.\n")
        assert proc.wait(timeout=10) == -signal.SIGTERM
        job = cli.store.get("r")
        assert job is not None and job.state is JobState.PROCESSING
        assert job.cancel_requested_at is not None
        # The worker's part: the killed command fails; the store makes it cancelled.
        cli.store.fail(claim, ExecResult(signal=15, error="killed"), now_ms(), now_ms())
        assert cli.store.get("r").state is JobState.CANCELLED  # type: ignore[union-attr]
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_cancel_never_signals_a_group_that_is_not_the_jobs(cli: Cli) -> None:
    cli.add("r", "sleep 60")
    claim = cli.claim(f"{socket.gethostname()}:1:t")
    other = subprocess.Popen(["sleep", "60"], start_new_session=True)
    try:
        now = now_ms()
        # A stale record: the worker is pid 1 (not other's parent), and other
        # does not carry QUEUECTL_JOB_ID=r.
        cli.store.register_worker(WorkerInfo(id=claim.worker_id, hostname=socket.gethostname(),
                                             pid=1, started_at=now, heartbeat_at=now,
                                             current_job="r", job_pgid=other.pid))
        res = cli.ok("cancel", "r")
        assert res.out.startswith("Cancel requested for job r: its worker stops it at its "
                                  "next lease renewal"), res.out
        assert other.poll() is None
    finally:
        other.kill()
        other.wait()


def test_cancel_running_job_elsewhere(cli: Cli) -> None:
    cli.add("r")
    claim = cli.claim("far:7:w")
    now = now_ms()
    cli.store.register_worker(WorkerInfo(id=claim.worker_id, hostname="far", pid=7,
                                         started_at=now, heartbeat_at=now, current_job="r",
                                         job_pgid=7))
    res = cli.ok("cancel", "r")
    assert res.out == ("Cancel requested for job r: its worker on far stops it at its next "
                       "lease renewal (within about 5 s) and records it as cancelled.\n")
    [data] = cli.ok("cancel", "r", "--json").json()
    assert data["state"] == "processing" and data["cancel_requested_at"]


def test_wait_exit_codes(cli: Cli) -> None:
    cli.add("a", max_retries=0)
    thread = finish_later(cli, 0.3, "a", ok=True)
    started = time.monotonic()
    res = cli.ok("wait", "a")
    thread.join()
    assert res.out == "Job a completed.\n"
    assert time.monotonic() - started < 10

    cli.add("b", max_retries=0)
    thread = finish_later(cli, 0.2, "b", ok=False)
    res = cli("wait", "a", "b")
    thread.join()
    assert res.code == 1
    assert res.out == "Job a completed.\nJob b is dead (in the DLQ): it broke\n"
    assert res.err == "Error: 1 of 2 job(s) did not complete: b (dead)\n"

    cli.add("c")
    started = time.monotonic()
    res = cli("wait", "a", "c", "--timeout", "0.3")
    assert res.code == 124, res
    assert 0.3 <= time.monotonic() - started < 10
    assert res.err == "Error: timed out after 0.3s; still unfinished: c (pending)\n"
    res = cli("wait", "c", "--timeout", "0", "--json")
    assert res.code == 124
    data = res.json()
    assert data["outcome"] == "timeout" and [j["id"] for j in data["jobs"]] == ["c"]

    one_error_line(cli("wait", "a", "nope"), 1, "nope")
    one_error_line(cli("wait", "a", "--timeout", "x"), 2, "--timeout")
    cli.store.cancel("c", now_ms())
    res = cli("wait", "c", "--json")
    assert res.code == 1 and res.json()["outcome"] == "failed" and not res.err
