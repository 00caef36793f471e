"""cancel and wait end to end, on each backend: waiting and running jobs, a job
that ignores the signal, the cancel poke to workers holding claims ahead,
wait exit statuses."""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

import pytest

from .conftest import Queue, finish, one_error, pid_running, read_line, spawn, wait_until

# ------------------------------------------------------------------ fields, queues, pause


# ------------------------------------------------------------------ running: cwd, env, logs


# ------------------------------------------------------------------ cancel and wait


# ------------------------------------------------------------------ dlq and purge


# ------------------------------------------------------------------ timeouts


# ------------------------------------------------------------------ export / import


# ------------------------------------------------------------------ YAML: retry policy, DLQ command


@pytest.mark.slow
def test_cancel_pending_and_running_jobs(queue: Queue, tmp_path: Path) -> None:
    # A long lease: the worker's next renewal is 20 s away, so a running job
    # that stops within seconds was stopped by cancel's own SIGTERM.
    queue.fast(lease_seconds=60)
    queue.enqueue({"id": "later", "command": "true", "run_at": "2999-01-01T00:00:00Z"})
    assert queue.run("cancel", "later").stdout == "Cancelled job later.\n"
    later = queue.show("later")
    assert later["state"] == "cancelled" and later["last_error"] == "cancelled by request"

    pidfile = tmp_path / "pid"
    queue.enqueue({"id": "busy", "command": f"echo $$ > {pidfile}; exec sleep 60"})
    queue.start_workers(1)
    queue.wait_until(lambda: pidfile.exists() and pidfile.read_text().strip(), 15,
                     "the command to start")
    command_pid = int(pidfile.read_text())
    started = time.monotonic()
    res = queue.run("cancel", "busy", "later", "nope", check=False)
    assert res.returncode == 1, res
    assert res.stdout.startswith("Cancelling job busy: sent SIGTERM to its command "
                                 "(process group "), res.stdout
    errors = res.stderr.splitlines()
    assert len(errors) == 2, res.stderr
    assert errors[0].startswith("Error: job 'later' is cancelled already"), errors
    assert errors[1] == "Error: no job with id 'nope'"
    waited = queue.run("wait", "busy", "--timeout", "15", check=False)
    assert waited.returncode == 1 and waited.stdout == "Job busy was cancelled.\n", waited
    assert time.monotonic() - started < 10
    wait_until(lambda: not pid_running(command_pid), 5, message="the command to be gone")
    busy = queue.show("busy")
    assert busy["cancel_requested_at"] is not None
    assert [a["outcome"] for a in busy["attempts_history"]] == ["cancelled"]
    assert "cancel_requested_at: " in queue.run("show", "busy").stdout
    one_error(queue.run("cancel", "busy", check=False), 1, "cancelled already")
    assert queue.status()["cancelled"] == 2
    queue.stop_workers()


@pytest.mark.slow
def test_wait_exit_statuses(queue: Queue) -> None:
    queue.fast()
    queue.enqueue({"id": "ok", "command": "true"})
    queue.enqueue({"id": "bad", "command": "exit 4", "max_retries": 0})
    queue.enqueue({"id": "later", "command": "true", "run_at": "2999-01-01T00:00:00Z"})
    queue.start_workers(1)
    assert queue.run("wait", "ok", "--timeout", "30").stdout == "Job ok completed.\n"
    res = queue.run("wait", "ok", "bad", "--timeout", "30", check=False)
    assert res.returncode == 1 and "bad (dead)" in res.stderr, res
    started = time.monotonic()
    res = queue.run("wait", "ok", "later", "--timeout", "0.5", check=False)
    assert res.returncode == 124, res
    assert time.monotonic() - started >= 0.5
    assert res.stderr == "Error: timed out after 0.5s; still unfinished: later (pending)\n"
    res = queue.run("wait", "later", "ok", "--timeout", "0", "--json", check=False)
    assert res.returncode == 124 and res.stderr == ""
    data = json.loads(res.stdout)
    assert data["outcome"] == "timeout"
    assert [(j["id"], j["state"]) for j in data["jobs"]] == [("later", "pending"),
                                                             ("ok", "completed")]
    one_error(queue.run("wait", "ok", "ghost", check=False), 1, "ghost")

    # Ctrl-C: exit 130, quietly. (The first line shows it is waiting.)
    waiter = spawn(queue, "wait", "ok", "later")
    assert read_line(waiter.stdout, 15) == "Job ok completed.\n"
    os.killpg(waiter.pid, signal.SIGINT)
    out, err = finish(waiter, 10)
    assert (waiter.returncode, out, err) == (130, "", "")
    queue.stop_workers()


@pytest.mark.slow
def test_cancel_reaches_a_job_that_ignores_the_local_signal(queue: Queue, tmp_path: Path
                                                             ) -> None:
    """The path a cancel takes to a worker on another machine: the request is
    stored, and the worker sees it at its next lease renewal and stops the
    command itself (SIGTERM, then SIGKILL after the grace). Here the command
    ignores the SIGTERM that `cancel` sends locally, so only that path can
    stop it."""
    queue.fast(lease_seconds=3)  # a renewal (and cancel check) every second
    pidfile = tmp_path / "pid"
    queue.enqueue({"id": "stubborn",
                   "command": f"trap '' TERM; echo $$ > {pidfile}; sleep 60; sleep 60"})
    queue.start_workers(1)
    queue.wait_until(lambda: pidfile.exists() and pidfile.read_text().strip(), 15,
                     "the command to start")
    shell_pid = int(pidfile.read_text())
    started = time.monotonic()
    queue.run("cancel", "stubborn")
    queue.wait_state("stubborn", "cancelled", timeout=20)
    assert time.monotonic() - started < 15
    wait_until(lambda: not pid_running(shell_pid), 5, message="the command to be gone")
    [attempt] = queue.show("stubborn")["attempts_history"]
    assert attempt["outcome"] == "cancelled"
    assert "cancelled while running" in attempt["error"]
    queue.stop_workers()


@pytest.mark.backends("sqlite")
def test_cancel_of_a_processing_job_sends_a_cancel_poke(queue: Queue) -> None:
    """A worker holding the job claimed ahead learns of the cancel from its
    wake-up socket (docs/semantics.md, "Claiming ahead"): `cancel` of a
    processing job sends a cancel poke; `enqueue` only pokes for new work."""
    from queuectl_core.wakeup import WakeupListener
    from queuectl_sqlite.store import SqliteStorage

    queue.enqueue({"id": "held", "command": "true"})
    store = SqliteStorage(queue.home / "queue.db")
    listener = WakeupListener(queue.home)
    try:
        [claim] = store.claim("w", int(time.time() * 1000), 60_000)
        assert claim.job.id == "held"
        queue.enqueue({"id": "more", "command": "true"})
        assert listener.cancel_poked() is False
        queue.run("cancel", "held")
        assert listener.cancel_poked() is True
        assert queue.show("held")["cancel_requested_at"] is not None
    finally:
        listener.close()
        store.close()
