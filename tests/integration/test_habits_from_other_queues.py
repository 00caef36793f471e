"""Habits from other job queues (pueue, ts) and from shells get a pointer to
what queuectl calls it, never a silent surprise:

- ``queuectl enqueue 'echo hello'`` (a shell command where a JSON job is
  expected) says ``did you mean: queuectl enqueue -c 'echo hello'?``, while
  malformed JSON keeps its precise error;
- an unknown command gets click's ``No such command`` error with a
  suggestion: a close match for a typo, and for the command names of pueue
  and ts the queuectl command line that does that. They are not aliases:
  those tools' flags differ from ours, and nothing runs.

Everything through the real ``queuectl``, exit 2, nothing stored.
"""

from __future__ import annotations

import shlex

import pytest

from .conftest import Queue

pytestmark = pytest.mark.backends("sqlite")

TOP_USAGE = ("Usage: queuectl [OPTIONS] COMMAND [ARGS]...\n"
             "Try 'queuectl --help' for help.\n\n")


def usage_error(usage: str, message: str) -> str:
    return f"{usage}Error: {message}\n"


# ------------------------------------------------------------------ item 4

@pytest.mark.parametrize(("argument", "suggestion"), [
    ("echo hello", "queuectl enqueue -c 'echo hello'"),
    ("make", "queuectl enqueue -c make"),
    ("ls -l /tmp && echo \"it's done\"",
     "queuectl enqueue -c 'ls -l /tmp && echo \"it'\"'\"'s done\"'"),
    ("  sleep 5", "queuectl enqueue -c '  sleep 5'"),
    ("./render.sh --scale=2 $HOME", "queuectl enqueue -c './render.sh --scale=2 $HOME'"),
    ("ünï ✓", "queuectl enqueue -c 'ünï ✓'"),
    ("printf '\\033[1m'", "queuectl enqueue -c 'printf '\"'\"'\\033[1m'\"'\"''"),
])
def test_a_shell_command_instead_of_json_says_use_c(queue: Queue, argument: str,
                                                    suggestion: str) -> None:
    for cache in ("1", "0"):  # the start-up cache's path and click's
        res = queue.run("enqueue", argument, check=False,
                        env={**queue.env, "QUEUECTL_STARTUP_CACHE": cache})
        assert (res.returncode, res.stdout) == (2, "")
        assert res.stderr == f"Error: job: not JSON; did you mean: {suggestion}?\n"
    # The suggestion, pasted into a shell, passes the argument unchanged.
    assert shlex.split(suggestion) == ["queuectl", "enqueue", "-c", argument]
    assert queue.jobs() == []


def test_the_suggestion_works(queue: Queue) -> None:
    res = queue.run("enqueue", "echo hello --queue x", check=False)
    suggested = res.stderr.removeprefix("Error: job: not JSON; did you mean: ")
    argv = shlex.split(suggested.removesuffix("?\n"))
    assert argv[:3] == ["queuectl", "enqueue", "-c"]
    assert queue.run(*argv[1:], "--id", "j1").stdout == "Job enqueued with ID: j1\n"
    assert queue.show("j1")["command"] == "echo hello --queue x"


def test_flags_after_a_plain_command_keep_the_suggestion(queue: Queue) -> None:
    res = queue.run("enqueue", "echo hello", "--queue", "q", check=False)
    assert (res.returncode, res.stdout) == (2, "")
    assert res.stderr == "Error: job: not JSON; did you mean: queuectl enqueue -c 'echo hello'?\n"


@pytest.mark.parametrize(("argument", "message"), [
    # Attempts at JSON keep the precise JSON error.
    ('{"command": "x",}', "job: invalid JSON: Expecting property name enclosed in double "
                          "quotes (line 1 column 17)"),
    ("{command: echo hi}", "job: invalid JSON: Expecting property name enclosed in double "
                           "quotes (line 1 column 2)"),
    ("  [1,", "job: invalid JSON: Expecting value (line 1 column 6)"),
    ("", "job: invalid JSON: Expecting value (line 1 column 1)"),
    ("   ", "job: invalid JSON: Expecting value (line 1 column 4)"),
    # Valid JSON that is no object: as before.
    ('"echo hi"', 'a job must be a JSON object, e.g. {"command": "echo hi"}'),
    ("42", 'a job must be a JSON object, e.g. {"command": "echo hi"}'),
    # A command that cannot be shown on one line: the suggestion without it.
    ("echo a\necho b", "job: not JSON; did you mean: queuectl enqueue -c CMD?"),
    ("printf 'a\tb'", "job: not JSON; did you mean: queuectl enqueue -c CMD?"),
])
def test_what_looks_like_json_keeps_the_json_error(queue: Queue, argument: str,
                                                   message: str) -> None:
    for cache in ("1", "0"):
        res = queue.run("enqueue", argument, check=False,
                        env={**queue.env, "QUEUECTL_STARTUP_CACHE": cache})
        assert (res.returncode, res.stdout, res.stderr) == (2, "", f"Error: {message}\n")


def test_a_json_file_line_keeps_the_json_error(queue: Queue) -> None:
    res = queue.run("enqueue", "--file", "-", stdin="echo hello\n", check=False)
    assert (res.returncode, res.stdout) == (2, "")
    assert res.stderr == "Error: line 1: invalid JSON: Expecting value (line 1 column 1)\n"


# ------------------------------------------------------------------ item 5

#: Other tools' command names -> what queuectl calls it (docs/cli.md has the table).
OTHER_TOOLS = {
    "add": "queuectl enqueue -c",
    "log": "queuectl logs",
    "ls": "queuectl list",
    "kill": "queuectl cancel",
    "follow": "queuectl logs --follow",
    "rm": "queuectl purge",
    "clean": "queuectl purge",
    "remove": "queuectl purge",
    "start": "queuectl worker start",
    "stop": "queuectl worker stop",
}


@pytest.mark.parametrize("name", list(OTHER_TOOLS))
def test_other_tools_command_names_say_what_to_type(queue: Queue, name: str) -> None:
    queue.enqueue({"id": "j1", "command": "true"})
    for args in ([name], [name, "j1"], [name, "echo hi", "--json"]):
        res = queue.run(*args, check=False)
        assert (res.returncode, res.stdout) == (2, "")
        assert res.stderr == usage_error(
            TOP_USAGE, f"No such command '{name}'. Did you mean '{OTHER_TOOLS[name]}'?")
    assert [j["id"] for j in queue.jobs()] == ["j1"]
    assert queue.status()["active_workers"] == 0


def test_global_options_before_another_tools_name(queue: Queue) -> None:
    res = queue.run("--backend", "json", "add", "echo hi", check=False)
    assert (res.returncode, res.stdout) == (2, "")
    assert res.stderr == usage_error(
        TOP_USAGE, "No such command 'add'. Did you mean 'queuectl enqueue -c'?")


@pytest.mark.parametrize(("args", "message"), [
    (["stauts"], "No such command 'stauts'. Did you mean 'status'?"),
    (["lsit"], "No such command 'lsit'. Did you mean 'list'?"),
    (["enqeue", "{}"], "No such command 'enqeue'. Did you mean 'enqueue'?"),
    (["wrker", "start"], "No such command 'wrker'. Did you mean 'worker'?"),
    (["worker-strat"], "No such command 'worker-strat'. Did you mean 'worker-start'?"),
    (["frobnicate"], "No such command 'frobnicate'."),  # nothing close: as before
])
def test_typos_get_the_close_command(queue: Queue, args: list[str], message: str) -> None:
    res = queue.run(*args, check=False)
    assert (res.returncode, res.stdout) == (2, "")
    assert res.stderr == usage_error(TOP_USAGE, message)


@pytest.mark.parametrize(("args", "usage", "message"), [
    (["worker", "strat"], "worker", "No such command 'strat'. Did you mean 'start'?"),
    (["worker", "stpo", "--timeout", "1"], "worker",
     "No such command 'stpo'. Did you mean 'stop'?"),
    (["dlq", "lst"], "dlq", "No such command 'lst'. Did you mean 'list'?"),
    (["dlq", "rety", "x"], "dlq", "No such command 'rety'. Did you mean 'retry'?"),
    (["config", "gte"], "config", "No such command 'gte'. Did you mean 'get'?"),
])
def test_typos_in_subcommand_groups(queue: Queue, args: list[str], usage: str,
                                    message: str) -> None:
    res = queue.run(*args, check=False)
    assert (res.returncode, res.stdout) == (2, "")
    assert res.stderr == usage_error(
        f"Usage: queuectl {usage} [OPTIONS] COMMAND [ARGS]...\n"
        f"Try 'queuectl {usage} --help' for help.\n\n", message)


def test_real_commands_and_aliases_are_unchanged(queue: Queue) -> None:
    queue.enqueue({"id": "j1", "command": "true"})
    assert queue.json("show", "j1")["id"] == "j1"
    assert queue.status()["pending"] == 1
    assert queue.run("dlq-list").stdout == "The dead letter queue is empty.\n"
    assert queue.run("config-get", "max_retries").stdout == "max_retries: 3\n"
    help_text = queue.run("--help").stdout
    assert "  add " not in help_text and "  rm " not in help_text
