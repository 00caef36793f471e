"""The global options (``--backend``, ``--config``, ``--home``) work after
the command too, nested commands included, with the same meaning as before
it: ``queuectl status --backend json`` reads the JSON store, and
``queuectl worker start --home X`` starts workers for X. Given both before
and after the command, the later one wins. A call with a global option
anywhere is never served from the start-up cache of another home or
backend (``test_startup_cache.py`` checks that the output is the same with
and without the cache).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from .conftest import Queue, one_error

pytestmark = pytest.mark.backends("sqlite")

JOB = '{"id": "j1", "command": "true"}'


def pending(queue: Queue, *args: str) -> int:
    counts: int = json.loads(queue.run(*args).stdout)["pending"]
    return counts


@pytest.mark.parametrize("cache", ["1", "0"])
def test_backend_after_the_command_reads_that_store(queue: Queue, cache: str) -> None:
    queue.env["QUEUECTL_STARTUP_CACHE"] = cache
    assert queue.run("enqueue", JOB).stdout == "Job enqueued with ID: j1\n"
    assert queue.run("status").returncode == 0  # the cache now holds for sqlite
    assert pending(queue, "status", "--json") == 1
    assert pending(queue, "status", "--backend", "json", "--json") == 0
    assert pending(queue, "status", "--json", "--backend=json") == 0
    assert queue.run("enqueue", '{"id": "in-json", "command": "true"}', "--backend", "json"
                     ).stdout == "Job enqueued with ID: in-json\n"
    assert queue.run("enqueue", "--backend", "json", "-c", "true", "--id", "j2",
                     ).stdout == "Job enqueued with ID: j2\n"
    assert pending(queue, "status", "--json", "--backend", "json") == 2
    assert pending(queue, "--backend", "json", "status", "--json") == 2
    assert pending(queue, "status", "--json") == 1
    assert [j["id"] for j in queue.json("list", "--backend", "json")] == ["in-json", "j2"]
    assert [j["id"] for j in queue.json("list")] == ["j1"]
    assert (queue.home / "json").is_dir()


def test_home_after_the_command_everywhere(queue: Queue, tmp_path: Path) -> None:
    other = tmp_path / "other"
    queue.enqueue({"id": "here", "command": "true"})
    assert queue.run("enqueue", '{"id": "there", "command": "true"}', "--home", str(other)
                     ).stdout == "Job enqueued with ID: there\n"
    assert [j["id"] for j in queue.json("list", "--home", str(other))] == ["there"]
    assert queue.json("show", "there", "--home", str(other))["id"] == "there"
    one_error(queue.run("show", "there", check=False), 1, "no job with id 'there'")
    assert queue.run("config", "set", "max_retries", "7", "--home", str(other)
                     ).stdout == "Config updated: max_retries = 7\n"
    assert queue.run("config", "get", "max_retries", "--home", str(other)
                     ).stdout == "max_retries: 7\n"
    assert queue.run("config", "--home", str(other), "get", "max_retries"
                     ).stdout == "max_retries: 7\n"
    assert queue.run("config-get", "max_retries", "--home", str(other)
                     ).stdout == "max_retries: 7\n"
    assert queue.run("config", "get", "max_retries").stdout == "max_retries: 3\n"
    assert queue.run("dlq", "list", "--home", str(other)
                     ).stdout == "The dead letter queue is empty.\n"
    assert queue.run("pause", "default", "--home", str(other)).returncode == 0
    assert queue.json("status", "--home", str(other))["paused_queues"] == ["default"]
    assert queue.json("status")["paused_queues"] == []
    # Before and after the command: the later one wins.
    assert [j["id"] for j in queue.json("--home", str(queue.home), "list",
                                        "--home", str(other))] == ["there"]
    assert [j["id"] for j in queue.json("--home", str(other), "list",
                                        "--home", str(queue.home))] == ["here"]


@pytest.mark.slow
def test_workers_started_with_home_after_the_command(queue: Queue, tmp_path: Path) -> None:
    other = tmp_path / "other"
    queue.run("config", "set", "worker_idle_delay", "50", "--home", str(other))
    queue.run("enqueue", "-c", "echo ran", "--id", "w1", "--home", str(other))
    out = queue.run("worker", "start", "--count", "1", "--home", str(other), timeout=30).stdout
    assert "Worker 1 started with PID: " in out
    queue.wait_until(lambda: queue.json("show", "w1", "--home", str(other))["state"]
                     == "completed", 15, "w1 completed in the other home")
    assert queue.json("status", "--home", str(other))["active_workers"] == 1
    assert queue.json("status")["active_workers"] == 0
    stopped = queue.run("worker", "stop", "--home", str(other), "--timeout", "10", timeout=60)
    assert stopped.returncode == 0, stopped
    assert queue.json("status", "--home", str(other))["active_workers"] == 0


def test_config_after_the_command(queue: Queue, tmp_path: Path) -> None:
    yaml = tmp_path / "json.yaml"
    yaml.write_text("backend: json\n")
    env = {k: v for k, v in queue.env.items() if k != "QUEUECTL_BACKEND"}
    queue.enqueue({"id": "j1", "command": "true"})
    res = queue.run("status", "--json", "--config", str(yaml), env=env)
    assert json.loads(res.stdout)["pending"] == 0
    res = queue.run("enqueue", JOB, "--config", str(yaml), env=env)
    assert res.stdout == "Job enqueued with ID: j1\n"
    res = queue.run("status", "--json", "--config", str(yaml), env=env)
    assert json.loads(res.stdout)["pending"] == 1
    missing = queue.run("status", "--config", str(tmp_path / "nope.yaml"), check=False)
    assert missing.returncode == 2 and missing.stderr.startswith("Error: ")
    assert missing.stderr == queue.run("--config", str(tmp_path / "nope.yaml"), "status",
                                       check=False).stderr


def test_errors_of_global_options_after_the_command(queue: Queue) -> None:
    res = queue.run("status", "--backend", check=False)
    assert (res.returncode, res.stdout) == (2, "")
    assert res.stderr == "Error: Option '--backend' requires an argument.\n"
    assert res.stderr == queue.run("--backend", check=False).stderr
    res = queue.run("status", "--backend", "nonesuch", check=False)
    assert res.stderr == queue.run("--backend", "nonesuch", "status", check=False).stderr
    assert res.returncode == 1 and "nonesuch" in res.stderr
    # After '--' an argument is an argument: the job id '--home'.
    res = queue.run("show", "--", "--home", check=False)
    assert (res.returncode, res.stderr) == (1, "Error: no job with id '--home'\n")
    # The value of a command's own option is never taken for a global option.
    res = queue.run("enqueue", "-c", "--home", "--id", "h1")
    assert queue.show("h1")["command"] == "--home"


def test_help_lists_the_global_options_under_the_group_only(queue: Queue) -> None:
    top = queue.run("--help").stdout
    for option in ("--backend NAME", "--config PATH", "--home DIR"):
        assert f"  {option}" in top, option
    assert "before or after the command" in " ".join(top.split())
    for args in (["status"], ["enqueue"], ["worker", "start"], ["dlq"], ["config", "set"]):
        text = queue.run(*args, "--help").stdout
        assert text.startswith(f"Usage: queuectl {' '.join(args)} ")
        assert "--home" not in text and "--backend" not in text, args


def test_the_cache_is_not_used_for_another_home_or_backend(queue: Queue,
                                                          tmp_path: Path) -> None:
    """The cache of this home holds; a global option anywhere goes the full
    way, reading the store it names."""
    other = tmp_path / "other"
    queue.enqueue({"id": "j1", "command": "true"})
    queue.run("status")
    env = {**queue.env, "QUEUECTL_STARTUP_CACHE": "debug"}
    used = queue.run("status", "--json", env=env)
    assert used.stderr.startswith("queuectl: start-up cache: used\n")
    for args in (["status", "--home", str(other)], ["status", "--backend", "json"],
                 ["enqueue", JOB, "--home", str(other)], ["enqueue", "--backend=json", JOB],
                 ["status", "--json", "--home", str(other)]):
        res = queue.run(*args, env=env)
        assert res.stderr.startswith("queuectl: start-up cache: not used: options\n"), args
        assert "seeded the App" not in res.stderr, args
    assert queue.json("status", "--home", str(other))["pending"] == 1
    assert queue.json("status", "--backend", "json")["pending"] == 1
    assert queue.json("status")["pending"] == 1
    assert os.path.isdir(other)
