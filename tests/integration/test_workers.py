"""Workers: exactly-once claiming, crash recovery, graceful stops, the
foreground supervisor and its signals, and the real backoff gaps."""

from __future__ import annotations

import itertools
import json
import os
import re
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from .conftest import (
    QUEUECTL,
    Queue,
    iso_ms,
    kill_hard,
    now_ms,
    pid_running,
    processes_with_home,
    read_line,
    wait_until,
)


def worker_pid(worker_id: str) -> int:
    """``host:pid:rand`` -> pid."""
    return int(worker_id.rsplit(":", 2)[1])


def processing_job(queue: Queue, job_id: str, timeout: float = 15.0) -> dict[str, Any]:
    """Wait until ``job_id`` is being processed; returns its list record."""

    def running() -> dict[str, Any] | None:
        return next((j for j in queue.jobs("processing") if j["id"] == job_id), None)

    return queue.wait_until(running, timeout, f"job {job_id} to be processing")


def command_started(queue: Queue, marks: Path, attempt: int = 1, timeout: float = 30.0) -> None:
    """Wait until a :func:`marked_job`'s command has started (its pid file
    exists): a file check, so that a short command is never missed between
    two ``queuectl list`` calls on a loaded machine."""
    queue.wait_until(lambda: (marks / f"pid-{attempt}").exists(), timeout,
                     f"attempt {attempt}'s command to start")


def marked_job(marks: Path, seconds: int, *, first: int | None = None) -> str:
    """A command that records its pid and, only if it is not killed, that it
    finished: ``marks/pid-N`` at the start and ``marks/done-N`` after the
    sleep (N = the attempt).

    ``first`` makes attempt 1 sleep that long instead. A test that kills
    attempt 1's worker gives it far longer than the test can last, so a
    ``done-1`` can only mean the command survived, never that a slow machine
    let it finish before the kill."""
    sleep = (f"sleep {seconds}" if first is None else
             f'if [ "$QUEUECTL_ATTEMPT" = 1 ]; then sleep {first}; else sleep {seconds}; fi')
    return (f"echo $$ > {marks}/pid-$QUEUECTL_ATTEMPT; {sleep}; "
            f"echo done > {marks}/done-$QUEUECTL_ATTEMPT")


def kill_leftover(queue: Queue, *pids: int) -> None:
    """Clean up after a failed check: a surviving command (and its process
    group) must not outlive its test. Only a process of this test's home:
    a pid whose command ended may already be another test's job (pid_max
    can be 32768, and the suite starts tens of thousands of processes)."""
    mine = processes_with_home(queue.home)
    for pid in pids:
        if pid in mine:
            kill_hard(pid)


# ------------------------------------------------------------------ exactly once

@pytest.mark.slow
def test_each_job_runs_exactly_once_across_supervisors(queue: Queue, tmp_path: Path) -> None:
    queue.fast()
    marks = tmp_path / "marks"
    marks.mkdir()
    groups = [queue.start_workers(2) for _ in range(3)]
    assert len({g.supervisor for g in groups}) == 3
    queue.wait_active_workers(6)

    ids = [f"job-{i:02d}" for i in range(60)]
    # set -C: '>' fails if the marker exists, so a second run of a job fails it.
    queue.enqueue_many([{"id": i, "command": f"set -C; echo $QUEUECTL_JOB_ID > {marks}/{i}"}
                        for i in ids])
    queue.wait_counts(timeout=60, completed=60)
    queue.stop_workers()

    jobs = queue.jobs()
    assert len(jobs) == 60
    assert {j["state"] for j in jobs} == {"completed"}
    assert all(j["attempts"] == 1 for j in jobs), [j for j in jobs if j["attempts"] != 1]
    assert sorted(p.name for p in marks.iterdir()) == ids
    assert all((marks / i).read_text() == f"{i}\n" for i in ids)
    assert len({j["worker_id"] for j in jobs}) > 1, "one worker took every job"


# ------------------------------------------------------------------ persistence

@pytest.mark.slow
def test_state_and_config_survive_restart(queue: Queue) -> None:
    queue.fast(max_retries=5, backoff_base=3)
    queue.enqueue({"id": "first", "command": "echo first"})
    queue.enqueue({"id": "later", "command": "echo later", "run_at": "2999-01-01T00:00:00Z"})
    queue.start_workers(1)
    queue.wait_state("first", "completed")
    queue.stop_workers()

    # A new process, no workers: everything is still there.
    settings = queue.json("config", "get")
    assert settings["max_retries"] == 5 and settings["backoff_base"] == 3.0
    assert settings["worker_idle_delay"] == 50
    assert {j["id"]: j["state"] for j in queue.jobs()} == {"first": "completed",
                                                           "later": "pending"}
    assert queue.show("later")["max_retries"] == 5
    queue.enqueue({"id": "second", "command": "echo second"})
    assert queue.status() == {"pending": 2, "processing": 0, "completed": 1, "failed": 0,
                              "dead": 0, "active_workers": 0, "cancelled": 0, "waiting": 0,
                              "skipped": 0, "paused_queues": [], "queue": None}

    queue.start_workers(1)
    queue.wait_state("second", "completed")
    assert queue.json("config", "get") == settings
    assert queue.show("first")["attempts"] == 1
    assert queue.show("later")["state"] == "pending"
    queue.stop_workers()
    assert queue.status() == {"pending": 1, "processing": 0, "completed": 2, "failed": 0,
                              "dead": 0, "active_workers": 0, "cancelled": 0, "waiting": 0,
                              "skipped": 0, "paused_queues": [], "queue": None}


# ------------------------------------------------------------------ crashes

@pytest.mark.slow
def test_sigkilled_worker_job_runs_again(queue: Queue, tmp_path: Path) -> None:
    queue.fast(lease_seconds=3)
    marks = tmp_path / "marks"
    marks.mkdir()
    queue.start_workers(1)
    queue.enqueue({"id": "long", "command": marked_job(marks, 1, first=120)})
    running = processing_job(queue, "long")
    victim = worker_pid(running["worker_id"])
    wait_until(lambda: (marks / "pid-1").exists(), 10, message="attempt 1 to start")
    command_pid = int((marks / "pid-1").read_text())

    os.kill(victim, signal.SIGKILL)
    try:
        done = queue.wait_state("long", "completed", timeout=30)

        assert done["attempts"] == 2
        first, second = done["attempts_history"]
        assert first["outcome"] == "lost" and first["worker_id"] == running["worker_id"]
        assert second["outcome"] == "completed" and second["worker_id"] != first["worker_id"]
        assert not pid_running(command_pid), "the killed worker's command kept running"
        assert not (marks / "done-1").exists()
        assert (marks / "done-2").exists()
        queue.stop_workers()
    finally:
        kill_leftover(queue, command_pid)


@pytest.mark.slow
def test_sigkilled_supervisor_workers_exit_on_their_own(queue: Queue, tmp_path: Path) -> None:
    """kill -9 on the supervisor: its workers notice, the busy one finishes
    its job (as on a graceful stop), both exit, and nothing runs twice. A
    later `worker start` serves the queue again."""
    queue.fast(lease_seconds=3)
    marks = tmp_path / "marks"
    marks.mkdir()
    group = queue.start_workers(2)
    run_file = queue.home / "run" / f"supervisor-{group.supervisor}.json"
    recorded = json.loads(run_file.read_text())
    assert recorded["pid"] == group.supervisor
    assert sorted(recorded["workers"]) == sorted(group.workers)
    queue.wait_active_workers(2)

    queue.enqueue({"id": "long", "command": marked_job(marks, 3)})
    command_started(queue, marks)
    running = queue.show("long")  # its worker_id stays once it completes
    command_pid = int((marks / "pid-1").read_text())

    os.kill(group.supervisor, signal.SIGKILL)
    wait_until(lambda: not any(pid_running(p) for p in group.workers), 10,
               message=lambda: f"orphaned workers {group.workers} to exit; "
                               f"{queue.diagnostics()}")
    assert not pid_running(command_pid), "a command outlived its worker"
    assert queue.status()["active_workers"] == 0

    queue.start_workers(1)
    queue.enqueue({"id": "after", "command": "true"})
    queue.wait_state("after", "completed")
    done = queue.wait_state("long", "completed", timeout=30)
    queue.stop_workers()
    # It ran to completion exactly once, under the worker that claimed it.
    assert sorted(p.name for p in marks.iterdir() if p.name.startswith("done-")) == ["done-1"]
    assert done["attempts"] == 1
    assert [a["outcome"] for a in done["attempts_history"]] == ["completed"]
    assert done["worker_id"] == running["worker_id"]


@pytest.mark.slow
def test_worker_stop_reaches_workers_of_a_dead_supervisor(queue: Queue,
                                                          tmp_path: Path) -> None:
    """An orphaned worker finishing a long job is still a running worker:
    `worker stop` must stop it (and, past --timeout, its command) rather
    than report that no workers are running."""
    queue.fast(lease_seconds=3)
    marks = tmp_path / "marks"
    marks.mkdir()
    group = queue.start_workers(1)
    queue.enqueue({"id": "long", "command": marked_job(marks, 30)})
    processing_job(queue, "long")
    wait_until(lambda: (marks / "pid-1").exists(), 10, message="the command to start")
    command_pid = int((marks / "pid-1").read_text())
    os.kill(group.supervisor, signal.SIGKILL)
    wait_until(lambda: not pid_running(group.supervisor), 5, message="the supervisor to die")
    orphan = group.workers[0]
    try:
        assert pid_running(orphan) and queue.status()["active_workers"] == 1
        out = queue.stop_workers(timeout=2)
        alive = [p for p in (orphan, command_pid) if pid_running(p)]
        assert not alive, (f"'worker stop' printed {out!r} and returned, but the orphaned "
                           f"worker {orphan} / its command {command_pid} still run: {alive}")
        assert queue.show("long")["state"] != "processing"
    finally:
        kill_leftover(queue, orphan, command_pid)


@pytest.mark.backends("sqlite", "json")
def test_worker_stop_lets_an_orphaned_worker_finish_its_job(queue: Queue,
                                                           tmp_path: Path) -> None:
    """An orphan's own graceful stop is not a signal: the SIGTERM of
    `worker stop` is its first, so the job finishes (issue 20, item 3)."""
    queue.fast()
    marks = tmp_path / "marks"
    marks.mkdir()
    group = queue.start_workers(1)
    queue.enqueue({"id": "long", "command": marked_job(marks, 3)})
    command_started(queue, marks)
    os.kill(group.supervisor, signal.SIGKILL)
    log = queue.home / "logs" / "workers.log"
    wait_until(lambda: "went away; finishing up" in log.read_text(), 10,
               message="the orphan to notice its supervisor is gone")
    orphan = group.workers[0]
    try:
        queue.stop_workers(timeout=30)
        done = queue.show("long")
        assert (done["state"], done["attempts"]) == ("completed", 1), log.read_text()
        assert (marks / "done-1").exists(), "the command was killed"
        assert not pid_running(orphan)
    finally:
        kill_leftover(queue, orphan)


@pytest.mark.slow
def test_dead_worker_command_is_killed_when_lease_expires(queue: Queue,
                                                          tmp_path: Path) -> None:
    """Supervisor and worker both SIGKILLed (say by the OOM killer): another
    worker recovers the job once its lease expires and must stop the dead
    worker's command before the job runs again, as Worker.recover intends."""
    queue.fast(lease_seconds=3)
    marks = tmp_path / "marks"
    marks.mkdir()
    victim = queue.start_workers(1)
    queue.wait_active_workers(1)
    queue.enqueue({"id": "long", "command": marked_job(marks, 1, first=120)})
    processing_job(queue, "long")
    wait_until(lambda: (marks / "pid-1").exists(), 10, message="attempt 1 to start")
    command_pid = int((marks / "pid-1").read_text())

    os.kill(victim.supervisor, signal.SIGKILL)
    os.kill(victim.workers[0], signal.SIGKILL)
    try:
        wait_until(lambda: not pid_running(victim.workers[0]), 5, message="the worker to die")
        # Nothing else stops attempt 1's command: its worker and supervisor are gone.
        assert pid_running(command_pid)
        queue.start_workers(1)  # another group: it recovers the expired lease

        done = queue.wait_state("long", "completed", timeout=30)
        assert [a["outcome"] for a in done["attempts_history"]] == ["lost", "completed"]
        assert not pid_running(command_pid), (
            "the dead worker's command kept running next to the retry")
        assert not (marks / "done-1").exists()
        queue.stop_workers()
    finally:
        kill_leftover(queue, command_pid)


# ------------------------------------------------------------------ stopping

@pytest.mark.slow
def test_worker_stop_is_graceful(queue: Queue) -> None:
    queue.fast()
    queue.start_workers(1)
    queue.wait_active_workers(1)
    queue.enqueue({"id": "busy", "command": "touch started; sleep 3"})  # in queue.workdir
    queue.wait_until(lambda: (queue.workdir / "started").exists(), 30, "the command to start")

    stopper = subprocess.Popen(
        [str(QUEUECTL), "worker", "stop", "--timeout", "30"], stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, env=queue.env, cwd=queue.workdir,
    )
    try:
        # The stop signal goes out right after this line is printed.
        assert read_line(stopper.stdout, 10) == "Stopping all workers...\n"
        queue.enqueue({"id": "while-stopping", "command": "echo no", "run_at": now_ms()})
        out, err = stopper.communicate(timeout=45)
    finally:
        if stopper.poll() is None:
            stopper.kill()
            stopper.wait()
    assert stopper.returncode == 0, err
    # While it waited, it said for what.
    assert out.decode() == ("Waiting for 1 running job (busy) to finish (at most 30s, then "
                            "they are killed and run again later)...\nAll workers stopped.\n")

    busy = queue.show("busy")
    assert (busy["state"], busy["attempts"], busy["exit_code"]) == ("completed", 1, 0)
    late = queue.show("while-stopping")
    assert (late["state"], late["attempts"]) == ("pending", 0)
    assert queue.status()["active_workers"] == 0


@pytest.mark.slow
def test_forced_stop_releases_jobs_to_run_again(queue: Queue, tmp_path: Path) -> None:
    """`worker stop --timeout`: jobs still running after the timeout are
    killed and released "and will run again"; the interrupted attempt does
    not count, so even a job on its last allowed attempt is not sent to the
    DLQ."""
    queue.fast()
    marks = tmp_path / "marks"
    marks.mkdir()

    def slow_first_run(job_id: str) -> str:  # sleeps on its first run only
        flag = marks / f"{job_id}.ran"
        return (f"echo run of {job_id}; if [ -e {flag} ]; then exit 0; fi; "
                f"touch {flag}; sleep 30")

    queue.enqueue({"id": "last-try", "command": slow_first_run("last-try"), "max_retries": 0})
    queue.enqueue({"id": "has-retries", "command": slow_first_run("has-retries")})
    queue.start_workers(2)
    queue.wait_until(lambda: len(queue.jobs("processing")) == 2, 15, "both jobs running")
    wait_until(lambda: len(list(marks.glob("*.ran"))) == 2, 10, message="both commands")

    out = queue.stop_workers(timeout=1)
    assert "will run again" in out, out
    for job_id in ("last-try", "has-retries"):
        job = queue.show(job_id)
        assert (job["state"], job["attempts"]) == ("pending", 0), job
        assert [a["outcome"] for a in job["attempts_history"]] == ["interrupted"]

    queue.start_workers(1)
    queue.wait_counts(completed=2)
    queue.stop_workers()
    for job_id in ("last-try", "has-retries"):
        job = queue.show(job_id)
        assert job["attempts"] == 1
        assert [a["outcome"] for a in job["attempts_history"]] == ["interrupted", "completed"]

    # The interrupted attempt was given back (the retry count is 1 again),
    # but the rerun is a new attempt record with its own number and its own
    # output file, next to the interrupted run's.
    job = queue.show("last-try")
    assert job["attempts"] == 1
    assert [a["number"] for a in job["attempts_history"]] == [1, 2]
    logs = queue.home / "logs" / "jobs" / "last-try"
    assert (logs / "attempt-1.out").read_text() == "run of last-try\n"
    assert (logs / "attempt-2.out").read_text() == "run of last-try\n"


def test_worker_stop_with_nothing_running(queue: Queue) -> None:
    res = queue.run("worker", "stop")
    assert res.stdout == "No workers are running.\n" and res.returncode == 0
    assert queue.run("worker-stop").stdout == "No workers are running.\n"


def test_worker_start_returns_with_stdout_piped(queue: Queue) -> None:
    queue.fast()
    started = time.monotonic()
    res = subprocess.run(f"'{QUEUECTL}' worker start --count 2 | cat", shell=True,
                         capture_output=True, text=True, env=queue.env, cwd=queue.workdir,
                         timeout=15, stdin=subprocess.DEVNULL)
    elapsed = time.monotonic() - started
    assert res.returncode == 0, res
    pids = [int(p) for p in re.findall(r"^Worker \d+ started with PID: (\d+)$", res.stdout,
                                       re.M)]
    queue.known_pids.update(pids)
    assert re.findall(r"^Worker (\d+) started", res.stdout, re.M) == ["1", "2"], res.stdout
    assert all(pid_running(p) for p in pids)
    assert elapsed < 10, f"worker start took {elapsed:.1f}s"
    queue.stop_workers()
    assert not any(pid_running(p) for p in pids)


# ------------------------------------------------------------------ foreground

def start_foreground(queue: Queue, tmp_path: Path, count: int) -> subprocess.Popen[bytes]:
    proc = queue.popen("worker", "run", "--count", str(count), log=tmp_path / "run.log")
    queue.wait_active_workers(count)
    return proc


@pytest.mark.slow
def test_worker_run_sigterm_finishes_job(queue: Queue, tmp_path: Path) -> None:
    queue.fast()
    marks = tmp_path / "marks"
    marks.mkdir()
    proc = start_foreground(queue, tmp_path, 2)
    queue.enqueue({"id": "fg", "command": marked_job(marks, 3)})
    command_started(queue, marks)

    os.kill(proc.pid, signal.SIGTERM)  # the supervisor only, not its group
    assert proc.wait(timeout=20) == 0, (tmp_path / "run.log").read_text()
    job = queue.show("fg")
    assert (job["state"], job["attempts"]) == ("completed", 1)
    assert (marks / "done-1").exists()
    assert queue.status()["active_workers"] == 0
    assert list((queue.home / "run").glob("supervisor-*.json")) == []


@pytest.mark.slow
def test_worker_run_ctrl_c_finishes_job(queue: Queue, tmp_path: Path) -> None:
    queue.fast()
    marks = tmp_path / "marks"
    marks.mkdir()
    proc = start_foreground(queue, tmp_path, 2)
    queue.enqueue({"id": "fg", "command": marked_job(marks, 3)})
    command_started(queue, marks)

    os.killpg(proc.pid, signal.SIGINT)  # what Ctrl-C does: the whole foreground group
    assert proc.wait(timeout=20) == 0, (tmp_path / "run.log").read_text()
    # It said what it waits for (stdin is not a terminal here: no "Ctrl-C").
    assert ("Stopping: finishing 1 running job (fg); send SIGTERM again to kill them "
            "(they run again later).\n") in (tmp_path / "run.log").read_text()
    job = queue.show("fg")
    assert (job["state"], job["attempts"], job["exit_code"]) == ("completed", 1, 0)
    assert (marks / "done-1").exists(), "Ctrl-C reached the job's command"
    assert queue.status()["active_workers"] == 0


# ------------------------------------------------------------------ backoff

@pytest.mark.slow
def test_real_backoff_gaps(queue: Queue) -> None:
    queue.fast(backoff_base=2, max_retries=2)
    queue.start_workers(1)
    queue.enqueue({"id": "fails", "command": "echo oops >&2; exit 1"})
    dead = queue.wait_state("fails", "dead", timeout=30)
    queue.stop_workers()

    history = dead["attempts_history"]
    assert [a["number"] for a in history] == [1, 2, 3]
    assert all(a["outcome"] == "failed" and a["exit_code"] == 1 for a in history)
    assert dead["last_error"] == "oops"
    starts = [iso_ms(a["started_at"]) for a in history]
    gaps = [(b - a) / 1000 for a, b in itertools.pairwise(starts)]
    for gap, want in zip(gaps, (2.0, 4.0), strict=True):
        assert want - 0.5 <= gap <= want + 1.5, f"gaps {gaps}, want ~2 s and ~4 s"
    # The retry is scheduled exactly backoff_base ** attempts after a failure.
    for attempt, start in zip(history[:2], starts[1:], strict=True):
        wanted = iso_ms(attempt["finished_at"]) + 2000 * 2 ** (attempt["number"] - 1)
        assert start >= wanted, (attempt, start)
