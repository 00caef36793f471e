"""The YAML configuration file and backend selection."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from .conftest import Queue

#: These tests are about the YAML file and the sqlite backend's own options.
pytestmark = pytest.mark.backends("sqlite")


def one_error_line(stderr: str) -> str:
    lines = stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error"), stderr
    return lines[0]


@pytest.mark.parametrize(("yaml_text", "key"), [
    pytest.param("backend: sqlite\ncolour: blue\n", "colour", id="top-level"),
    pytest.param("defaults:\n  max_retris: 5\n", "max_retris", id="defaults"),
    pytest.param("backends:\n  sqlite:\n    colour: blue\n", "colour", id="backend-options"),
])
def test_yaml_unknown_key_is_rejected(queue: Queue, yaml_text: str, key: str) -> None:
    queue.home.mkdir()
    path = queue.home / "queuectl.yaml"
    path.write_text(yaml_text)
    for args in (["status"], ["enqueue", '{"command":"true"}']):
        res = queue.run(*args, check=False)
        assert res.returncode == 2, res
        line = one_error_line(res.stderr)
        assert key in line, line
        assert str(path) in line, f"the message does not name the file: {line!r}"
    path.unlink()
    assert queue.jobs() == []


@pytest.mark.parametrize(("yaml_text", "key"), [
    pytest.param("executors:\n  shell:\n    colour: blue\n", "colour", id="executor-options"),
    pytest.param("retry:\n  policy: nope\n", "nope", id="retry-policy"),
])
def test_worker_start_rejects_a_bad_config_up_front(queue: Queue, yaml_text: str,
                                                    key: str) -> None:
    """Like a broken backend, a broken executor or retry section must make
    `worker start` fail with the error, not start workers that cannot run."""
    queue.home.mkdir()
    (queue.home / "queuectl.yaml").write_text(yaml_text)
    res = queue.run("worker", "start", check=False, timeout=40)
    assert res.returncode != 0, (
        f"worker start reported success: {res.stdout!r}; the workers crash-loop with "
        f"{queue.diagnostics()}")
    assert key in one_error_line(res.stderr)
    assert queue.run("worker", "stop").stdout == "No workers are running.\n"


def test_unknown_backend_lists_the_known_ones(queue: Queue) -> None:
    res = queue.run("--backend", "nope", "status", check=False)
    assert res.returncode == 1, res
    line = one_error_line(res.stderr)
    assert "nope" in line and "sqlite" in line
    res = queue.run("status", check=False, env={**queue.env, "QUEUECTL_BACKEND": "nope"})
    assert res.returncode == 1 and "sqlite" in one_error_line(res.stderr)


def test_yaml_defaults_until_config_set(queue: Queue) -> None:
    queue.home.mkdir()
    (queue.home / "queuectl.yaml").write_text("defaults:\n  max_retries: 7\n")
    assert queue.run("config", "get", "max_retries").stdout == "max_retries: 7\n"
    queue.enqueue({"id": "a", "command": "true"})
    assert queue.show("a")["max_retries"] == 7
    queue.run("config", "set", "max_retries", "4")
    assert queue.run("config", "get", "max_retries").stdout == "max_retries: 4\n"
    queue.enqueue({"id": "b", "command": "true"})
    assert queue.show("b")["max_retries"] == 4
    assert queue.show("a")["max_retries"] == 7


def test_config_option_elsewhere_and_sqlite_path(queue: Queue, tmp_path: Path) -> None:
    """--config PATH is honoured by the CLI and by the workers it starts, and
    backends.sqlite.path (relative to QUEUECTL_HOME) places the database."""
    cfg = tmp_path / "etc" / "custom.yaml"
    cfg.parent.mkdir()
    cfg.write_text("backends:\n  sqlite:\n    path: other.db\ndefaults:\n  max_retries: 9\n"
                   "  worker_idle_delay: 50\n")
    c = ("--config", str(cfg))
    assert queue.run(*c, "config", "get", "max_retries").stdout == "max_retries: 9\n"
    queue.enqueue({"id": "elsewhere", "command": "echo hi"}, *c)
    assert (queue.home / "other.db").is_file()
    assert not (queue.home / "queue.db").exists()
    assert f"sqlite {queue.home / 'other.db'}" in queue.run(*c, "status").stdout

    queue.start_workers(1, *c)
    queue.wait_until(lambda: queue.json(*c, "show", "elsewhere")["state"] == "completed", 15,
                     "the job in other.db to complete")
    queue.run("worker", "stop")
    job = queue.json(*c, "show", "elsewhere")
    assert job["max_retries"] == 9 and job["attempts"] == 1

    # The same through QUEUECTL_CONFIG, and without it the default database.
    env = {**queue.env, "QUEUECTL_CONFIG": str(cfg)}
    assert queue.run("config", "get", "max_retries", env=env).stdout == "max_retries: 9\n"
    assert queue.run("config", "get", "max_retries").stdout == "max_retries: 3\n"
    assert queue.jobs() == []
    assert (queue.home / "queue.db").is_file()

    # A --config that does not exist is an error.
    res = queue.run("--config", str(tmp_path / "missing.yaml"), "status", check=False)
    assert res.returncode == 2 and "missing.yaml" in one_error_line(res.stderr)


def test_workers_refuse_a_home_others_can_write(queue: Queue) -> None:
    queue.run("status")  # creates the home and the store
    os.chmod(queue.home, 0o777)
    try:
        for cmd in (["worker", "start"], ["worker", "run"]):
            res = queue.run(*cmd, check=False, timeout=30)
            line = one_error_line(res.stderr)
            assert res.returncode == 1 and "refusing to run workers" in line
            assert "chmod go-w" in line
        assert queue.run("status").returncode == 0, "reading the queue is still allowed"
    finally:
        os.chmod(queue.home, 0o700)


def test_everything_in_home_is_private(queue: Queue) -> None:
    """0700 directories and 0600 files, whatever the umask (issue 6)."""
    queue.fast()
    queue.enqueue({"id": "p", "command": "echo out; echo err >&2"})
    queue.start_workers(1)
    queue.wait_state("p", "completed")
    queue.stop_workers()
    for path in [queue.home, *queue.home.rglob("*")]:
        mode = path.stat().st_mode & 0o777
        if path.is_dir():
            assert mode == 0o700, f"{path} is {mode:o}"
        else:
            assert mode & 0o077 == 0, f"{path} is {mode:o}"


@pytest.mark.backends("sqlite")
@pytest.mark.parametrize(("yaml_text", "words"), [
    pytest.param("backends:\n  json: {colour: blue}\n", ["backend 'json'", "colour: unknown field"],
                 id="options-of-a-backend-not-selected"),
    pytest.param("backends:\n  sqlte: {}\n", ["backends.sqlte", "no backend 'sqlte'", "sqlite"],
                 id="section-of-no-installed-backend"),
    pytest.param("executors:\n  shell: {kill_grace_seconds: -1}\n",
                 ["executor 'shell'", "kill_grace_seconds"], id="options-of-the-executor"),
    pytest.param("executors:\n  shel: {}\n", ["executors.shel", "no executor 'shel'"],
                 id="section-of-no-installed-executor"),
    pytest.param("retry:\n  policy: linear\n  options: {factor: 2}\n",
                 ["backoff policy 'linear' takes no options", "factor"],
                 id="options-of-the-policy"),
    pytest.param("backend: sqlite\nretry:\n  policy: linear\nbackend: json\n",
                 ["backend is given twice (line 4)"], id="duplicate-key"),
    pytest.param("backends:\n  sqlite:\n    path: a.db\n    path: b.db\n",
                 ["path is given twice (line 4)"], id="duplicate-nested-key"),
])
def test_every_command_checks_the_whole_yaml_file(queue: Queue, yaml_text: str,
                                                  words: list[str]) -> None:
    """Sections of plugins that are not selected, and the executor's and the
    policy's options, are checked by `status` and `list` too, not only when a
    worker starts; nothing runs with a file that has a mistake."""
    queue.home.mkdir()
    path = queue.home / "queuectl.yaml"
    path.write_text(yaml_text)
    for args in (["status"], ["list"], ["enqueue", '{"command":"true"}'], ["worker", "start"]):
        res = queue.run(*args, check=False)
        assert res.returncode == 2, (args, res)
        line = one_error_line(res.stderr)
        for word in [str(path), *words]:
            assert word in line, (args, word, line)
    path.unlink()
    assert queue.jobs() == []


@pytest.mark.backends("sqlite")
def test_config_option_naming_a_directory_says_so(queue: Queue) -> None:
    queue.home.mkdir()
    res = queue.run("--config", str(queue.home), "status", check=False)
    assert res.returncode == 2
    assert one_error_line(res.stderr) == (
        f"Error: config file {queue.home} is a directory: give the YAML file itself "
        f"(e.g. {queue.home / 'queuectl.yaml'})")


@pytest.mark.backends("sqlite")
def test_worker_start_refuses_a_shell_that_does_not_exist(queue: Queue) -> None:
    queue.home.mkdir()
    (queue.home / "queuectl.yaml").write_text("executors:\n  shell: {shell: /bin/no-such-sh}\n")
    assert queue.run("status").returncode == 0  # only running commands needs the shell
    for args in (["worker", "start"], ["worker", "run"]):
        res = queue.run(*args, check=False, timeout=40)
        assert res.returncode == 2, res
        assert one_error_line(res.stderr) == (
            "Error: executor 'shell': shell not found: '/bin/no-such-sh' is not a program on "
            "this machine (option 'shell')")
    assert queue.run("worker", "stop").stdout == "No workers are running.\n"


@pytest.mark.backends("sqlite")
@pytest.mark.parametrize(("yaml_text", "args", "message"), [
    pytest.param("", [], "config file {path} is empty: give its settings, or remove it to use "
                 "the defaults", id="empty-file"),
    pytest.param("# backend: postgres\n", [], "config file {path} is empty: give its "
                 "settings, or remove it to use the defaults", id="only-comments"),
    pytest.param("backend:\n", [], "config file {path}: backend: give a backend's name "
                 "(e.g. sqlite), or remove the key", id="backend-without-a-name"),
    pytest.param(None, ["--backend", ""], "--backend: give a backend's name (e.g. sqlite), "
                 "not an empty string", id="empty-backend-option"),
])
def test_a_lost_backend_name_never_means_sqlite(queue: Queue, yaml_text: str | None,
                                                args: list[str], message: str) -> None:
    """A file that lost its content, or a backend name left empty, would
    otherwise run on a new, empty SQLite queue."""
    queue.home.mkdir()
    path = queue.home / "queuectl.yaml"
    if yaml_text is not None:
        path.write_text(yaml_text)
    res = queue.run(*args, "status", check=False)
    assert res.returncode == 2
    assert one_error_line(res.stderr) == "Error: " + message.format(path=path)
    assert not (queue.home / "queue.db").exists()
