"""How a job runs, end to end, on each backend: in its cwd with its env, killed
at its timeout, its output in logs (also --follow, across the size cap)."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest

from .conftest import (
    Queue,
    finish,
    log_dir,
    one_error,
    pid_running,
    read_line,
    spawn,
    wait_until,
)

# ------------------------------------------------------------------ fields, queues, pause


# ------------------------------------------------------------------ running: cwd, env, logs


# ------------------------------------------------------------------ cancel and wait


# ------------------------------------------------------------------ dlq and purge


# ------------------------------------------------------------------ timeouts


# ------------------------------------------------------------------ export / import


# ------------------------------------------------------------------ YAML: retry policy, DLQ command


@pytest.mark.slow
def test_jobs_run_in_their_cwd_with_their_env_and_logs_show_it(queue: Queue) -> None:
    queue.fast()
    (queue.workdir / "sub").mkdir()
    script = 'pwd; echo "A=$A"; echo "job=$QUEUECTL_JOB_ID"; echo oops >&2; exit 3'
    queue.run("enqueue", "-c", script, "--id", "env1", "--env", "A=fromflag",
              "--max-retries", "0")
    queue.run("enqueue", "-c", "pwd", "--id", "in-sub", "--cwd", "sub")
    queue.start_workers(1)
    res = queue.run("wait", "env1", "in-sub", "--timeout", "30", check=False)
    assert res.returncode == 1, res
    assert "Job env1 is dead (in the DLQ): oops\n" in res.stdout
    assert "Job in-sub completed.\n" in res.stdout
    assert res.stderr == "Error: 1 of 2 job(s) did not complete: env1 (dead)\n"

    logs = queue.run("logs", "env1")
    assert logs.stdout == f"{queue.workdir}\nA=fromflag\njob=env1\n"
    assert logs.stderr == "oops\n"
    assert queue.run("logs", "env1", "--stdout").stderr == ""
    only_err = queue.run("logs", "env1", "--stderr", "--attempt", "1")
    assert (only_err.stdout, only_err.stderr) == ("", "oops\n")
    assert queue.run("logs", "in-sub").stdout == f"{queue.workdir / 'sub'}\n"
    one_error(queue.run("logs", "env1", "--attempt", "2", check=False), 1, "no attempt 2")
    one_error(queue.run("logs", "nope", check=False), 1, "nope")
    queue.enqueue({"id": "later", "command": "true", "run_at": "2999-01-01T00:00:00Z"})
    one_error(queue.run("logs", "later", check=False), 1, "has not run yet")

    # A silent job leaves no files; logs prints nothing for it.
    queue.run("enqueue", "-c", "true", "--id", "quiet")
    queue.run("wait", "quiet", "--timeout", "30")
    assert not log_dir(queue, "quiet").exists()
    silent = queue.run("logs", "quiet")
    assert (silent.stdout, silent.stderr) == ("", "")

    # Without the files (removed; or run on another machine): the tails in the store.
    for path in log_dir(queue, "env1").iterdir():
        path.unlink()
    fallback = queue.run("logs", "env1")
    assert fallback.stdout == f"{queue.workdir}\nA=fromflag\njob=env1\n"
    assert fallback.stderr.startswith("Note: the output files of attempt 1 were removed from "
                                      "this machine"), fallback.stderr
    assert fallback.stderr.endswith("\noops\n")

    shown = queue.show("env1")
    [attempt] = shown["attempts_history"]
    assert attempt["exit_code"] == 3 and attempt["finished_at"] and attempt["error"] == "oops"
    table = queue.run("show", "env1").stdout.split("Attempts:\n")[1]
    assert table.startswith("#  STARTED               FINISHED              DURATION  OUTCOME")
    assert "exit 3" in table and attempt["worker_id"] in table
    queue.stop_workers()


@pytest.mark.slow
def test_logs_follow_streams_a_running_job_to_its_end(queue: Queue) -> None:
    queue.fast()
    queue.start_workers(1)
    # The job goes on only once the test has seen its first line and its
    # state: no race with a slow `show` on a loaded machine.
    go = queue.home / "go"
    queue.run("enqueue", "-c", f"echo tick 1; while [ ! -e '{go}' ]; do sleep 0.05; done; "
              "for i in 2 3 4 5; do echo tick $i; sleep 0.1; done; echo finished >&2",
              "--id", "ticker")
    follower = spawn(queue, "logs", "ticker", "--follow")
    first = read_line(follower.stdout, 15)
    assert first == "tick 1\n", "output arrives while the job runs"
    assert queue.show("ticker")["state"] == "processing"
    go.touch()
    out, err = finish(follower, 30)
    assert follower.returncode == 0, err
    assert first + out == "".join(f"tick {i}\n" for i in range(1, 6))
    assert err.endswith("finished\n")
    assert queue.show("ticker")["state"] == "completed"

    # Ctrl-C ends --follow quietly, with status 0.
    queue.run("enqueue", "-c", "echo started; sleep 60", "--id", "long")
    follower = spawn(queue, "logs", "long", "-f")
    assert read_line(follower.stdout, 15) == "started\n"
    os.killpg(follower.pid, signal.SIGINT)
    _, err = finish(follower, 10)
    assert follower.returncode == 0 and err == ""
    queue.run("cancel", "long")
    queue.wait_state("long", "cancelled")
    queue.stop_workers()


@pytest.mark.slow
def test_logs_follow_across_the_size_cap(queue: Queue) -> None:
    # The smallest cap, 4096 bytes: the live file is rotated every 2048
    # bytes, 4 times here.
    queue.fast(output_max_bytes=4096)
    lines = [f"line {i:03d} " + "x" * 90 + "\n" for i in range(1, 101)]
    queue.run("enqueue", "-c", "for i in $(seq 1 100); do printf 'line %03d %s\\n' $i "
              f"{'x' * 90}; sleep 0.02; done", "--id", "chatty")
    follower = spawn(queue, "logs", "chatty", "-f", "--stdout")
    queue.start_workers(1)
    out, err = finish(follower, 60)
    assert follower.returncode == 0, err
    assert out == "".join(lines), "--follow saw every byte, across each rotation"
    # Notes only: the job had not started, and (on a loaded machine, if the
    # worker took over 3 s to come up) that no worker was running yet.
    allowed = {"Note: job chatty has not started yet (pending); waiting for it to run",
               "Note: still waiting: no worker is running for queue 'default' (start one: "
               "queuectl worker start)"}
    assert set(err.splitlines()) <= allowed, err

    kept = queue.run("logs", "chatty", "--stdout")
    assert "".join(lines).endswith(kept.stdout) and len(kept.stdout) >= 2048
    dropped = len("".join(lines)) - len(kept.stdout)
    assert kept.stderr == (f"Note: the first {dropped} bytes of this attempt's stdout were "
                           "dropped by the size cap (output_max_bytes); the newest output "
                           "follows\n")
    queue.stop_workers()


@pytest.mark.slow
def test_timeout_flag_kills_the_job(queue: Queue, tmp_path: Path) -> None:
    queue.fast()
    pidfile = tmp_path / "pid"
    queue.run("enqueue", "-c", f"echo $$ > {pidfile}; exec sleep 60", "--id", "slow",
              "--timeout", "1", "--max-retries", "0")
    queue.start_workers(1)
    res = queue.run("wait", "slow", "--timeout", "30", check=False)
    assert res.returncode == 1, res
    job = queue.show("slow")
    assert job["state"] == "dead" and "timed out" in job["last_error"], job
    wait_until(lambda: not pid_running(int(pidfile.read_text())), 5,
               message="the timed-out command to be gone")
    queue.stop_workers()
