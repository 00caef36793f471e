"""The CLI of issue 5 (queues, pause/resume, cancel, wait, logs, purge, dlq
show/retry --all/purge, the new job fields) in-process, against the
in-memory store: every command goes through ``main()``, so exit codes and
the one-line errors are the real ones. The same commands run end to end on
the real backends in tests/integration/test_issue5_cli.py."""

from __future__ import annotations

import io
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from queuectl_core.app import App
from queuectl_core.cli import control
from queuectl_core.cli import main as cli_main
from queuectl_core.config import resolve_config
from queuectl_core.joblogs import attempt_path, dropped_path, job_log_dir, rotated_path
from queuectl_core.models import Claim, ExecResult, JobState, NewJob, WorkerInfo
from queuectl_core.testing import MemoryStorage
from queuectl_core.timeutil import now_ms


@dataclass
class Result:
    code: int
    out: str
    err: str

    def json(self) -> Any:
        return json.loads(self.out)


class Cli:
    """``queuectl`` in this process, on one in-memory store."""

    def __init__(self, home: Path, capsys: pytest.CaptureFixture[str],
                 monkeypatch: pytest.MonkeyPatch) -> None:
        self.home = home
        self.store = MemoryStorage()
        self.capsys = capsys
        self.monkeypatch = monkeypatch
        store = self.store

        def app(state: cli_main.State) -> App:
            if state._app is None:
                built = App(resolve_config(home=str(home), config=None, backend=None))
                built.__dict__["storage"] = store
                state._app = built
            return state._app

        monkeypatch.setattr(cli_main.State, "app", app)

    def __call__(self, *args: str, stdin: str | None = None) -> Result:
        self.capsys.readouterr()
        if stdin is not None:
            self.monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(stdin.encode())))
        try:
            cli_main.main(list(args))
        except SystemExit as exc:
            code = exc.code
        else:  # pragma: no cover - main always exits
            code = 0
        captured = self.capsys.readouterr()
        assert isinstance(code, int)
        assert "Traceback" not in captured.err, captured.err
        return Result(code, captured.out, captured.err)

    def ok(self, *args: str, stdin: str | None = None) -> Result:
        res = self(*args, stdin=stdin)
        assert res.code == 0, res
        return res

    # helpers that play the worker's part
    def add(self, job_id: str, command: str = "true", **fields: Any) -> None:
        now = now_ms()
        self.store.enqueue([NewJob(id=job_id, command=command,
                                   max_retries=fields.pop("max_retries", 3), run_at=now,
                                   created_at=now, **fields)])

    def claim(self, worker_id: str = "elsewhere:1:abc", queue: str | None = None) -> Claim:
        claim = self.store.claim(worker_id, now_ms(), 60_000,
                                 None if queue is None else [queue])
        assert claim is not None
        return claim

    def log_dir(self, job_id: str) -> Path:
        d = job_log_dir(self.home / "logs" / "jobs", job_id)
        d.mkdir(parents=True, exist_ok=True)
        return d


@pytest.fixture
def cli(tmp_path: Path, capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> Iterator[Cli]:
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    for key in list(os.environ):
        if key.startswith("QUEUECTL_"):
            monkeypatch.delenv(key)
    yield Cli(tmp_path / "home", capsys, monkeypatch)


def one_error_line(res: Result, code: int, *words: str) -> None:
    assert res.code == code, res
    lines = res.err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), res.err
    for word in words:
        assert word in lines[0], (word, lines[0])
    assert not res.out, res.out


# ------------------------------------------------------------------ enqueue

def test_enqueue_new_fields_from_flags_and_json(cli: Cli, tmp_path: Path) -> None:
    work = tmp_path / "work"
    (work / "sub").mkdir()
    cli.ok("enqueue", "-c", "echo hi", "--id", "f", "--queue", "mail", "--timeout", "5m",
           "--env", "A=1", "--env", "B=x=y", "--cwd", "sub")
    job = cli.store.get("f")
    assert job is not None
    assert (job.queue, job.timeout, job.env) == ("mail", 300.0, {"A": "1", "B": "x=y"})
    assert job.cwd == str(work / "sub")

    cli.ok("enqueue", json.dumps({"id": "j", "command": "true", "timeout": 1.5,
                                  "retry": {"policy": "linear", "max_delay": 60}}))
    job = cli.store.get("j")
    assert job is not None and job.cwd == str(work), "default cwd: where enqueue ran"
    assert job.timeout == 1.5 and job.retry == {"policy": "linear", "max_delay": 60}
    assert job.queue == "default" and job.env is None

    # The flags fill in what each JSON job does not give; its own values win.
    lines = [{"id": "l1", "command": "true"},
             {"id": "l2", "command": "true", "queue": "own", "env": {"A": "mine"},
              "cwd": "/"}]
    cli.ok("enqueue", "--file", "-", "--queue", "batch", "--env", "A=flag", "--env", "C=3",
           stdin="".join(json.dumps(x) + "\n" for x in lines))
    l1, l2 = cli.store.get("l1"), cli.store.get("l2")
    assert l1 is not None and l2 is not None
    assert (l1.queue, l1.env, l1.cwd) == ("batch", {"A": "flag", "C": "3"}, str(work))
    assert (l2.queue, l2.env, l2.cwd) == ("own", {"A": "mine", "C": "3"}, "/")

    res = cli.ok("enqueue", "-c", "true", "--cwd", "/no/such/dir")
    assert res.err.startswith("Warning: cwd /no/such/dir is not a directory"), res.err


@pytest.mark.parametrize(("args", "words"), [
    (["-c", "true", "--env", "NOEQUALS"], ["--env", "KEY=VALUE"]),
    (["-c", "true", "--env", "=v"], ["--env"]),
    (["-c", "true", "--timeout", "soon"], ["--timeout", "invalid duration"]),
    (["-c", "true", "--timeout", "0"], ["--timeout", "more than 0"]),
    (["-c", "true", "--queue", "-x"], ["queue"]),
    (["-c", "true", "--queue", "a b"], ["queue"]),
    (['{"command":"true","retry":{"policy":"fibonacci"}}'],
     ["retry.policy", "fibonacci", "exponential"]),
    (['{"command":"true","retry":{"policy":"linear","jitter":2}}'], ["retry.jitter"]),
    (['{"command":"true","env":{"A":1}}'], ["env"]),
    (['{"command":"true","timeout":"5m"}'], ["timeout"]),
])
def test_enqueue_bad_new_fields_exit_2(cli: Cli, args: list[str], words: list[str]) -> None:
    one_error_line(cli("enqueue", *args), 2, *words)
    assert cli.store.list_jobs() == []


def test_unknown_policy_in_a_file_names_the_line(cli: Cli) -> None:
    lines = ('{"command":"true"}\n'
             '{"command":"true","retry":{"policy":"nope"}}\n')
    one_error_line(cli("enqueue", "--file", "-", stdin=lines), 2, "line 2", "nope")
    assert cli.store.list_jobs() == []


# ------------------------------------------------------------------ status, list, show

def test_status_and_list_by_queue_and_paused_queues(cli: Cli) -> None:
    cli.add("a", queue="mail")
    cli.add("b", queue="mail")
    cli.add("c")
    cli.store.set_queue_paused("mail", True)
    data = cli.ok("status", "--json").json()
    assert data == {"pending": 3, "processing": 0, "completed": 0, "failed": 0, "dead": 0,
                    "cancelled": 0, "active_workers": 0, "paused_queues": ["mail"],
                    "queue": None}
    data = cli.ok("status", "--queue", "mail", "--json").json()
    assert data["pending"] == 2 and data["queue"] == "mail"
    text = cli.ok("status").out
    assert "Paused queues: mail\n" in text and "cancelled" in text
    text = cli.ok("status", "--queue", "mail").out
    assert "of queue 'mail'" in text and "Paused: yes" in text
    assert [j["id"] for j in cli.ok("list", "--queue", "mail", "--json").json()] == ["a", "b"]
    assert cli.ok("list", "--queue", "none").out == "No jobs in queue 'none'.\n"
    assert cli.ok("list", "--state", "cancelled").out == "No cancelled jobs.\n"
    one_error_line(cli("status", "--queue", "../x"), 2, "queue name")


def test_show_lists_new_fields_and_every_attempt(cli: Cli) -> None:
    cli.ok("enqueue", json.dumps({"id": "s", "command": "sleep 9", "queue": "q",
                                  "timeout": 30, "env": {"K": "v"},
                                  "retry": {"policy": "constant"}, "max_retries": 1}))
    claim = cli.claim()
    cli.store.fail(claim, ExecResult(exit_code=3, error="boom"), now_ms(), now_ms())
    claim = cli.claim()
    cli.store.cancel("s", now_ms())
    text = cli.ok("show", "s").out
    for expected in ("queue:               q", "timeout:             30s",
                     'env:                 {"K": "v"}', 'retry:               {"policy": '
                     '"constant"}', "cancel_requested_at: 20"):
        assert expected in text, (expected, text)
    assert "#  STARTED" in text and "FINISHED" in text
    rows = text.split("Attempts:\n")[1].splitlines()[1:]
    assert rows[0].split()[0] == "1" and "failed" in rows[0] and "exit 3" in rows[0]
    assert rows[1].split()[0] == "2" and "running" in rows[1]
    cli.store.fail(claim, ExecResult(signal=15, error="killed by signal SIGTERM (15)"),
                   now_ms(), now_ms())
    text = cli.ok("show", "s").out
    row = text.split("Attempts:\n")[1].splitlines()[2]
    assert "cancelled" in row and "signal 15 (SIGTERM)" in row
    data = cli.ok("show", "s", "--json").json()
    assert data["state"] == "cancelled" and data["cancel_requested_at"]
    assert [a["outcome"] for a in data["attempts_history"]] == ["failed", "cancelled"]


# ------------------------------------------------------------------ pause / resume

def test_pause_and_resume(cli: Cli) -> None:
    assert cli.ok("pause", "mail").out == (
        "Queue 'mail' paused: workers claim nothing more from it; running jobs finish.\n")
    assert cli.ok("pause", "mail").out == "Queue 'mail' is already paused.\n"
    assert cli.store.paused_queues() == ["mail"]
    assert cli.ok("resume", "mail", "--json").json() == {"queue": "mail", "paused": False,
                                                        "changed": True}
    assert cli.ok("resume", "mail").out == "Queue 'mail' was not paused.\n"
    one_error_line(cli("pause", "no/slash"), 2, "queue name")
    one_error_line(cli("resume", ""), 2, "queue name")


# ------------------------------------------------------------------ cancel

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


# ------------------------------------------------------------------ dlq and purge

def make_dead(cli: Cli, job_id: str) -> None:
    cli.add(job_id, "false", max_retries=0, queue=f"only-{job_id}")
    claim = cli.claim(queue=f"only-{job_id}")
    cli.store.fail(claim, ExecResult(exit_code=1, error="nope"), now_ms(), None)
    (cli.log_dir(job_id) / "attempt-1.out").write_text("x")


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
    assert res.err == "Error: job 'alive' is pending, not dead\n"
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
    assert data["purged"] == 0 and data["states"] == ["completed", "cancelled"]
    assert data["finished_before"].endswith("Z")
    assert cli.ok("purge").out == "Purged 6 job(s).\n"
    assert not (cli.home / "logs" / "jobs" / "c3").exists()
    assert [j.id for j in cli.store.list_jobs()] == ["dead1", "waiting"]
    assert cli.ok("purge", "--state", "dead", "--json").json()["purged"] == 1


# ------------------------------------------------------------------ logs

def test_logs_streams_attempts_and_errors(cli: Cli) -> None:
    cli.add("j", "x")
    one_error_line(cli("logs", "j"), 1, "has not run yet")
    one_error_line(cli("logs", "nope"), 1, "nope")
    for number in (1, 2):
        claim = cli.claim()
        d = cli.log_dir("j")
        attempt_path(d, number, "out").write_bytes(f"out {number}\n".encode())
        attempt_path(d, number, "err").write_bytes(f"err {number}\n".encode())
        cli.store.fail(claim, ExecResult(exit_code=1, error="e"), now_ms(), now_ms())
    res = cli.ok("logs", "j")
    assert (res.out, res.err) == ("out 2\n", "err 2\n")
    res = cli.ok("logs", "j", "--attempt", "1", "--stdout")
    assert (res.out, res.err) == ("out 1\n", "")
    res = cli.ok("logs", "j", "-a", "1", "--stderr")
    assert (res.out, res.err) == ("", "err 1\n")
    one_error_line(cli("logs", "j", "--attempt", "3"), 1, "no attempt 3", "1 to 2")
    one_error_line(cli("logs", "j", "--stdout", "--stderr"), 2, "not both")

    # The size cap: the rotated part comes first, and the drop is reported.
    live = attempt_path(cli.log_dir("j"), 2, "out")
    rotated_path(live).write_bytes(b"older\n")
    dropped_path(live).write_text("123")
    res = cli.ok("logs", "j", "--stdout")
    assert res.out == "older\nout 2\n"
    assert res.err == ("Note: the first 123 bytes of this attempt's stdout were dropped by the "
                       "size cap (output_max_bytes); the newest output follows\n")


def test_logs_fall_back_to_the_tails_in_the_store(cli: Cli) -> None:
    cli.add("t")
    claim = cli.claim()
    cli.store.complete(claim, ExecResult(exit_code=0, stdout_tail="end of out",
                                         stderr_tail="end of err\n"), now_ms())
    res = cli.ok("logs", "t")
    assert res.out == "end of out\n"
    assert res.err == ("Note: the output files of attempt 1 are not on this machine (it ran on "
                       "another one, or they were removed); showing the end of its output "
                       "kept in the store (output_tail_bytes per stream)\nend of err\n")
    cli.add("none")
    claim = cli.claim()
    cli.store.complete(claim, ExecResult(exit_code=0), now_ms())
    one_error_line(cli("logs", "none"), 1, "no output of attempt 1", "kept none")

    cli.add("far")
    claim = cli.claim("far:1:w")
    now = now_ms()
    cli.store.register_worker(WorkerInfo(id="far:1:w", hostname="far", pid=1, started_at=now,
                                         heartbeat_at=now))
    res = cli.ok("logs", "far")
    assert res.out == "" and "runs on another machine (worker far:1:w)" in res.err

    def finish() -> None:
        time.sleep(0.3)
        cli.store.complete(claim, ExecResult(exit_code=0, stdout_tail="far out"), now_ms())

    thread = threading.Thread(target=finish)
    thread.start()
    res = cli.ok("logs", "far", "--follow")
    thread.join()
    assert res.out == "far out\n"
    assert "its output is shown when it finishes" in res.err


def test_logs_of_a_silent_attempt_here_print_nothing(cli: Cli) -> None:
    """The executor creates output files only when a stream writes: an
    attempt that ran on this machine (its worker id names this host) and has
    no files wrote nothing, which is not the same as having run elsewhere."""
    here = f"{socket.gethostname()}:{os.getpid()}:w"
    cli.add("quiet")
    claim = cli.claim(here)
    cli.store.complete(claim, ExecResult(exit_code=0, stdout_tail="", stderr_tail=""), now_ms())
    assert not job_log_dir(cli.home / "logs" / "jobs", "quiet").exists()
    for args in ((), ("--stdout",), ("--stderr",), ("--follow",)):
        res = cli.ok("logs", "quiet", *args)
        assert (res.out, res.err) == ("", ""), args
    # No tails kept (output_tail_bytes 0) and no files: nothing either.
    cli.add("untailed")
    cli.store.complete(cli.claim(here), ExecResult(exit_code=0), now_ms())
    assert cli.ok("logs", "untailed") == Result(0, "", "")

    # Ran here and wrote, but the files are gone: the tails, with the reason.
    cli.add("removed")
    cli.store.complete(cli.claim(here), ExecResult(exit_code=0, stdout_tail="kept\n",
                                                   stderr_tail=""), now_ms())
    res = cli.ok("logs", "removed")
    assert res.out == "kept\n"
    assert res.err.startswith("Note: the output files of attempt 1 were removed from this "
                              "machine; showing the end of its output kept in the store")

    # Only one stream wrote: only its file exists, the other prints nothing.
    cli.add("half")
    claim = cli.claim(here)
    attempt_path(cli.log_dir("half"), 1, "err").write_bytes(b"only err\n")
    cli.store.complete(claim, ExecResult(exit_code=0), now_ms())
    res = cli.ok("logs", "half")
    assert (res.out, res.err) == ("", "only err\n")
    assert cli.ok("logs", "half", "--stdout") == Result(0, "", "")


def test_logs_follow_waits_for_files_that_appear_later(cli: Cli) -> None:
    cli.add("late")
    claim = cli.claim(f"{socket.gethostname()}:{os.getpid()}:w")

    def run() -> None:
        time.sleep(0.4)  # the command is silent at first: no files yet
        d = job_log_dir(cli.home / "logs" / "jobs", "late")
        d.mkdir(parents=True)
        attempt_path(d, 1, "out").write_bytes(b"at last\n")
        time.sleep(0.3)
        cli.store.complete(claim, ExecResult(exit_code=0), now_ms())

    thread = threading.Thread(target=run)
    thread.start()
    res = cli.ok("logs", "late", "--follow")
    thread.join()
    assert (res.out, res.err) == ("at last\n", "")


def test_logs_follow_across_rotations_until_the_attempt_ends(cli: Cli) -> None:
    cli.add("f")
    claim = cli.claim(f"{socket.gethostname()}:{os.getpid()}:w")
    d = cli.log_dir("f")
    live = attempt_path(d, 1, "out")
    err = attempt_path(d, 1, "err")
    live.write_bytes(b"line 0\n")
    err.write_bytes(b"")
    expected = [b"line 0\n"]

    def writer() -> None:
        # The executor's part: append, and now and then rotate (twice in a
        # row once, faster than the reader polls).
        for i in range(1, 40):
            with live.open("ab") as fh:
                fh.write(b"line %d\n" % i)
            expected.append(b"line %d\n" % i)
            if i % 10 == 0:
                os.replace(live, rotated_path(live))
                live.touch()
            if i == 25:
                with live.open("ab") as fh:
                    fh.write(b"quick\n")
                expected.append(b"quick\n")
                os.replace(live, rotated_path(live))
                live.touch()
            time.sleep(0.02 if i != 25 else 0)
        with err.open("ab") as fh:
            fh.write(b"bye\n")
        cli.store.complete(claim, ExecResult(exit_code=0), now_ms())

    thread = threading.Thread(target=writer)
    thread.start()
    res = cli.ok("logs", "f", "--follow")
    thread.join()
    assert res.out == b"".join(expected).decode()
    assert res.err == "bye\n"


def test_logs_follow_waits_for_the_first_attempt(cli: Cli) -> None:
    cli.add("w")

    def run() -> None:
        time.sleep(0.6)
        claim = cli.claim(f"{socket.gethostname()}:{os.getpid()}:w")
        attempt_path(cli.log_dir("w"), 1, "out").write_bytes(b"started\n")
        time.sleep(0.3)
        cli.store.complete(claim, ExecResult(exit_code=0), now_ms())

    thread = threading.Thread(target=run)
    thread.start()
    res = cli.ok("logs", "w", "-f", "--stdout")
    thread.join()
    assert res.out == "started\n"
    assert res.err == "Note: job w has not started yet (pending); waiting for it to run\n"

    cli.add("gone")
    threading.Timer(0.3, lambda: cli.store.cancel("gone", now_ms())).start()
    res = cli("logs", "gone", "-f")
    assert res.code == 1 and res.err.splitlines()[-1] == (
        "Error: job 'gone' ended cancelled without running")


# ------------------------------------------------------------------ export / import, config

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


def test_config_get_lists_the_new_settings(cli: Cli) -> None:
    assert cli.ok("config", "get").out == (
        "max_retries: 3\nbackoff_base: 2\nworker_idle_delay: 2000\nlease_seconds: 15\n"
        "max_delay: 0\njitter: 0\njob_timeout: 0\noutput_max_bytes: 10485760\n"
        "output_tail_bytes: 4096\nretention_days: 0\n")
    assert cli.ok("config", "set", "job-timeout", "90").out == (
        "Config updated: job_timeout = 90\n")
    assert cli.ok("config", "get", "job_timeout", "--json").json() == {"job_timeout": 90.0}


def test_help_lists_the_new_commands(cli: Cli) -> None:
    out = cli.ok("--help").out
    for name in ("logs", "cancel", "wait", "pause", "resume", "purge"):
        assert f"\n  {name} " in out, name
    for args in (["logs", "--help"], ["dlq", "purge", "--help"], ["wait", "--help"]):
        assert cli.ok(*args).out.startswith("Usage: queuectl")


def test_follower_handles_rotation_deterministically(tmp_path: Path) -> None:
    from queuectl_core.cli.logs import Follower

    live = tmp_path / "attempt-1.out"
    rot = rotated_path(live)
    sink = io.BytesIO()
    follower = Follower(live, sink)
    assert not follower.pump(), "no file yet: nothing to copy"

    def append(data: bytes) -> None:
        with live.open("ab") as fh:
            fh.write(data)

    def rotate() -> None:
        os.replace(live, rot)

    append(b"a1 ")
    assert follower.pump() and sink.getvalue() == b"a1 "
    append(b"a2 ")
    rotate()  # the new live file does not exist yet: keep reading the old one
    assert follower.pump() and sink.getvalue() == b"a1 a2 "
    assert not follower.pump()
    append(b"b1 ")
    assert follower.pump() and sink.getvalue() == b"a1 a2 b1 "
    # Twice between two looks: b's end, then all of c (now .1), then d.
    append(b"b2 ")
    rotate()
    append(b"c1 ")
    rotate()
    append(b"d1 ")
    assert follower.pump()
    assert sink.getvalue() == b"a1 a2 b1 b2 c1 d1 "
    assert not follower.pump()
    follower.close()

    # Starting late: the rotated part first, then the live file.
    sink2 = io.BytesIO()
    late = Follower(live, sink2)
    assert late.pump() and sink2.getvalue() == b"c1 d1 "
    late.close()
