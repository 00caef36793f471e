"""enqueue, status, list, show, pause and resume, config get and --help, in
process against the in-memory store."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from queuectl_core.models import ExecResult
from queuectl_core.timeutil import now_ms
from tests.unit.cli_harness import Cli, one_error_line

# ------------------------------------------------------------------ export / import, config


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
    (['{"command":"true","timeout":"5 minutes"}'], ["timeout", "invalid duration"]),
])
def test_enqueue_bad_new_fields_exit_2(cli: Cli, args: list[str], words: list[str]) -> None:
    one_error_line(cli("enqueue", *args), 2, *words)
    assert cli.store.list_jobs() == []


def test_unknown_policy_in_a_file_names_the_line(cli: Cli) -> None:
    lines = ('{"command":"true"}\n'
             '{"command":"true","retry":{"policy":"nope"}}\n')
    one_error_line(cli("enqueue", "--file", "-", stdin=lines), 2, "line 2", "nope")
    assert cli.store.list_jobs() == []


def test_status_and_list_by_queue_and_paused_queues(cli: Cli) -> None:
    cli.add("a", queue="mail")
    cli.add("b", queue="mail")
    cli.add("c")
    cli.store.set_queue_paused("mail", True)
    data = cli.ok("status", "--json").json()
    assert data == {"pending": 3, "processing": 0, "completed": 0, "failed": 0, "dead": 0,
                    "cancelled": 0, "waiting": 0, "skipped": 0, "active_workers": 0,
                    "paused_queues": ["mail"], "queue": None}
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
