"""Issue 5 from the command line, end to end: the new job fields (queue,
timeout, cwd, env, retry), named queues with pause/resume, cancel, wait,
logs (also --follow), purge, dlq show/retry --all/purge, and export/import
of the new fields. Every scenario drives the real ``queuectl`` in real
processes, on each backend."""

from __future__ import annotations

import itertools
import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from .conftest import QUEUECTL, Queue, iso_ms, pid_running, read_line, wait_until


def one_error(res: subprocess.CompletedProcess[str], code: int, *words: str) -> None:
    """Exit ``code``, nothing on stdout, one ``Error:`` line naming ``words``."""
    assert res.returncode == code, res
    lines = res.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), res.stderr
    for word in words:
        assert word in lines[0], (word, lines[0])
    assert res.stdout == "", res.stdout


def log_dir(queue: Queue, job_id: str) -> Path:
    return queue.home / "logs" / "jobs" / job_id


def spawn(queue: Queue, *args: str) -> subprocess.Popen[bytes]:
    """``queuectl ARGS`` in the background with stdout and stderr kept apart
    (the fixture kills its session at teardown if it is still there)."""
    proc = subprocess.Popen([str(QUEUECTL), *args], stdin=subprocess.DEVNULL,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            env=queue.env, cwd=queue.workdir, start_new_session=True)
    queue.popens.append(proc)
    queue.known_pids.add(proc.pid)
    return proc


def finish(proc: subprocess.Popen[bytes], timeout: float) -> tuple[str, str]:
    out, err = proc.communicate(timeout=timeout)
    return out.decode(), err.decode()


# ------------------------------------------------------------------ fields, queues, pause

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


# ------------------------------------------------------------------ running: cwd, env, logs

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
    assert err == "Note: job chatty has not started yet (pending); waiting for it to run\n" \
        or err == "", err

    kept = queue.run("logs", "chatty", "--stdout")
    assert "".join(lines).endswith(kept.stdout) and len(kept.stdout) >= 2048
    dropped = len("".join(lines)) - len(kept.stdout)
    assert kept.stderr == (f"Note: the first {dropped} bytes of this attempt's stdout were "
                           "dropped by the size cap (output_max_bytes); the newest output "
                           "follows\n")
    queue.stop_workers()


# ------------------------------------------------------------------ cancel and wait

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


# ------------------------------------------------------------------ dlq and purge

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


# ------------------------------------------------------------------ timeouts

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


# ------------------------------------------------------------------ export / import

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


# ------------------------------------------------------------------ YAML: retry policy, DLQ command

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
        claim = store.claim("w", int(time.time() * 1000), 60_000)
        assert claim is not None and claim.job.id == "held"
        queue.enqueue({"id": "more", "command": "true"})
        assert listener.cancel_poked() is False
        queue.run("cancel", "held")
        assert listener.cancel_poked() is True
        assert queue.show("held")["cancel_requested_at"] is not None
    finally:
        listener.close()
        store.close()
