"""A broken third-party plugin never breaks unrelated commands, and is
always named: ``plugin 'NAME' (from DIST VERSION) ...``.

Each test installs a broken plugin the way pip would (a ``*.dist-info``
directory with ``METADATA`` and ``entry_points.txt`` next to its module, see
``tests/fake_dists.py``) in a directory on the ``PYTHONPATH`` of the real
``queuectl`` it runs, so that importlib.metadata discovers it like any
installed distribution: one that fails to import, one whose registration
hook raises, one whose hook returns dicts instead of records, and a retry
policy whose ``delay_seconds`` raises inside a real worker.
"""

from __future__ import annotations

import json
import subprocess

import pytest

from tests.fake_dists import fake_dist

from .conftest import Queue, iso_ms, pid_running

pytestmark = pytest.mark.backends("sqlite")

WARNING = "queuectl: warning: "

#: A registration hook that returns dicts instead of records.
DICTS = """
from queuectl_core import hookimpl

@hookimpl
def queuectl_storage_backends():
    return [{"name": "dictstore", "factory": "qc_dicts:make"}]
"""

#: A registration hook that raises.
RAISES = """
from queuectl_core import hookimpl

@hookimpl
def queuectl_storage_backends():
    raise RuntimeError("no backend today")
"""

#: A backoff policy whose delay raises (its registration is fine).
FLAKY = """
from queuectl_core import hookimpl
from queuectl_core.registry import BackoffPolicySpec

class Flaky:
    def delay_seconds(self, attempts, settings):
        raise ValueError(f"no delay after attempt {attempts}")

@hookimpl
def queuectl_backoff_policies():
    return [BackoffPolicySpec(name="flaky", factory=lambda options, context: Flaky())]
"""

DICTS_FAILED = ("plugin 'dicts' (from queuectl-dicts 0.1.0) failed in "
                "queuectl_storage_backends: returned a dict, not a BackendSpec")
BROKENDB_FAILED = ("plugin 'brokendb' (from queuectl-brokendb 0.1.0) failed to load: "
                   "ModuleNotFoundError: No module named 'brokendb_driver'")
RAISES_FAILED = ("plugin 'raiser' (from queuectl-raiser 0.1.0) failed in "
                 "queuectl_storage_backends: RuntimeError: no backend today")


def install(queue: Queue, name: str, entry_point: str, module: str, source: str) -> None:
    """Install distribution ``name`` 0.1.0 with one entry point for the
    queue's commands (a directory on their PYTHONPATH)."""
    site = queue.home.parent / "site"
    fake_dist(site, name, {entry_point: module}, {module: source}, version="0.1.0")
    queue.env["PYTHONPATH"] = str(site)


def install_brokendb(queue: Queue, entry_point: str = "brokendb") -> None:
    """A backend plugin whose driver is not installed: its import fails."""
    install(queue, "queuectl-brokendb", entry_point, "qc_brokendb",
            "import brokendb_driver\n")


def installed_backends(queue: Queue) -> str:
    """The backends the plugins installed here provide, as error messages
    list them (other engineers' plugins may be installed too)."""
    data = json.loads(queue.run("plugins", "--json").stdout)
    return ", ".join(sorted(item.split()[-1] for p in data["plugins"]
                            for item in p["provides"] if item.startswith("backend ")))


def warnings(result: subprocess.CompletedProcess[str]) -> list[str]:
    return [line for line in result.stderr.splitlines() if line.startswith(WARNING)]


def plugin_rows(stdout: str) -> dict[str, list[str]]:
    """``queuectl plugins`` table rows by plugin name (PROVIDES joined)."""
    lines = stdout.splitlines()
    assert lines[0].split() == ["PLUGIN", "DISTRIBUTION", "VERSION", "STATUS", "PROVIDES"]
    rows = {}
    for line in lines[1:]:
        if line.startswith("plugin '"):
            break
        name, dist, version, status, *provides = line.split(maxsplit=4)
        rows[name] = [dist, version, status, *provides]
    return rows


# ------------------------------------------------------------------ registration hooks

def test_a_hook_returning_dicts_breaks_no_command(queue: Queue) -> None:
    install(queue, "queuectl-dicts", "dicts", "qc_dicts", DICTS)

    listing = queue.run("plugins")
    assert warnings(listing) == [f"{WARNING}{DICTS_FAILED}; skipped"]
    rows = plugin_rows(listing.stdout)
    assert rows["dicts"] == ["queuectl-dicts", "0.1.0", "FAILED", "-"]
    assert rows["sqlite"] == ["queuectl-sqlite", "0.1.0", "ok", "backend sqlite"]
    assert listing.stdout.splitlines()[-1] == DICTS_FAILED

    data = json.loads(queue.run("plugins", "--json").stdout)
    dicts = next(p for p in data["plugins"] if p["name"] == "dicts")
    assert dicts == {"name": "dicts", "distribution": "queuectl-dicts", "version": "0.1.0",
                     "provides": [], "status": "FAILED", "error": DICTS_FAILED}
    sqlite = next(p for p in data["plugins"] if p["name"] == "sqlite")
    assert sqlite["status"] == "ok" and sqlite["error"] is None
    assert data["failed"] == [{
        "name": "dicts", "distribution": "queuectl-dicts", "version": "0.1.0",
        "hook": "queuectl_storage_backends", "error": "returned a dict, not a BackendSpec",
        "message": DICTS_FAILED}]

    # Every other command works, with the warning and never an internal error.
    for args in (["--backend", "sqlite", "status"], ["status"], ["list"],
                 ["enqueue", '{"id": "j", "command": "true"}']):
        result = queue.run(*args)
        assert "internal error" not in result.stderr, result.stderr
        assert all(line == f"{WARNING}{DICTS_FAILED}; skipped"
                   for line in warnings(result)), result.stderr
    assert queue.show("j")["state"] == "pending"


def test_a_hook_that_raises_is_skipped_and_named(queue: Queue) -> None:
    install(queue, "queuectl-raiser", "raiser", "qc_raiser", RAISES)

    status = queue.run("status")
    assert status.stderr == f"{WARNING}{RAISES_FAILED}; skipped\n"
    listing = queue.run("plugins")
    assert plugin_rows(listing.stdout)["raiser"] == ["queuectl-raiser", "0.1.0", "FAILED", "-"]
    assert listing.stdout.splitlines()[-1] == RAISES_FAILED

    # Its entry-point name is the backend asked for: say that its plugin failed.
    selected = queue.run("--backend", "raiser", "status", check=False)
    assert (selected.returncode, selected.stdout) == (1, "")
    assert selected.stderr == (f"{WARNING}{RAISES_FAILED}; skipped\n"
                               f"Error: backend 'raiser' is unavailable: {RAISES_FAILED}\n")


# ------------------------------------------------------------------ plugins that fail to load

def test_a_backend_whose_plugin_failed_to_load_is_unavailable_not_unknown(
        queue: Queue) -> None:
    install_brokendb(queue)
    expected = (f"{WARNING}{BROKENDB_FAILED}; skipped\n"
                f"Error: backend 'brokendb' is unavailable: {BROKENDB_FAILED}\n")

    by_option = queue.run("--backend", "brokendb", "status", check=False)
    assert (by_option.returncode, by_option.stdout, by_option.stderr) == (1, "", expected)
    by_env = queue.run("status", check=False,
                       env={**queue.env, "QUEUECTL_BACKEND": "brokendb"})
    assert (by_env.returncode, by_env.stdout, by_env.stderr) == (1, "", expected)
    queue.home.mkdir(parents=True, exist_ok=True)
    (queue.home / "queuectl.yaml").write_text("backend: brokendb\n")
    env = {k: v for k, v in queue.env.items() if k != "QUEUECTL_BACKEND"}
    by_yaml = queue.run("status", check=False, env=env)
    assert (by_yaml.returncode, by_yaml.stdout, by_yaml.stderr) == (1, "", expected)

    listing = queue.run("plugins")
    row = plugin_rows(listing.stdout)["brokendb"]
    assert row == ["queuectl-brokendb", "0.1.0", "FAILED", "-"]
    assert listing.stdout.splitlines()[-1] == BROKENDB_FAILED
    data = json.loads(queue.run("plugins", "--json").stdout)
    assert {"name": "brokendb", "distribution": "queuectl-brokendb", "version": "0.1.0",
            "provides": [], "status": "FAILED", "error": BROKENDB_FAILED} in data["plugins"]
    assert data["failed"] == [{
        "name": "brokendb", "distribution": "queuectl-brokendb", "version": "0.1.0",
        "hook": None, "error": "ModuleNotFoundError: No module named 'brokendb_driver'",
        "message": BROKENDB_FAILED}]


def test_an_unknown_backend_names_the_plugins_that_failed(queue: Queue) -> None:
    """Which backends a plugin that failed to load would have registered is
    unknown: asked for a name no plugin provides, say which plugins failed."""
    install_brokendb(queue, entry_point="brokendb-plugin")
    choices = installed_backends(queue)
    failed = BROKENDB_FAILED.replace("plugin 'brokendb'", "plugin 'brokendb-plugin'")
    result = queue.run("--backend", "brokendb", "status", check=False)
    assert (result.returncode, result.stdout) == (1, "")
    assert result.stderr == (
        f"{WARNING}{failed}; skipped\n"
        f"Error: backend 'brokendb' is not installed or its plugin failed: {failed} "
        f"(installed backends: {choices}; see 'queuectl plugins')\n")


def test_without_failures_an_unknown_backend_is_unknown(queue: Queue) -> None:
    choices = installed_backends(queue)
    assert "sqlite" in choices.split(", ")
    result = queue.run("--backend", "brokendb", "status", check=False)
    assert (result.returncode, result.stdout) == (1, "")
    assert result.stderr == (f"Error: unknown backend 'brokendb'; choose one of: {choices} "
                             "(is its plugin installed? see 'queuectl plugins')\n")


def test_a_newly_installed_broken_plugin_is_seen_despite_the_caches(queue: Queue) -> None:
    """The plugin scan and the start-up cache are keyed on the installed
    distributions: installing one into a directory already on the path is
    noticed by the next command."""
    site = queue.home.parent / "site"
    site.mkdir()
    queue.env["PYTHONPATH"] = str(site)
    for _ in range(2):  # the second call is served by the start-up cache
        assert queue.run("status").stderr == ""
    assert queue.run("plugins").stderr == ""
    assert (queue.home / "cache" / "plugins.json").exists()
    assert (queue.home / "cache" / "startup.json").exists()

    install_brokendb(queue)
    assert queue.run("status").stderr == f"{WARNING}{BROKENDB_FAILED}; skipped\n"
    listing = queue.run("plugins")
    assert plugin_rows(listing.stdout)["brokendb"][2] == "FAILED"


# ------------------------------------------------------------------ policies

def test_a_job_naming_a_policy_whose_plugin_failed_is_refused_with_why(queue: Queue) -> None:
    install(queue, "queuectl-flaky", "flaky", "qc_flaky",
            FLAKY.replace("return [", "raise LookupError('registry down'); return ["))
    failed = ("plugin 'flaky' (from queuectl-flaky 0.1.0) failed in "
              "queuectl_backoff_policies: LookupError: registry down")
    result = queue.run("enqueue", '{"command": "true", "retry": {"policy": "flaky"}}',
                       check=False)
    assert (result.returncode, result.stdout) == (2, "")
    assert result.stderr == (f"{WARNING}{failed}; skipped\n"
                             "Error: invalid job: retry.policy: backoff policy 'flaky' is "
                             f"unavailable: {failed}\n")


@pytest.mark.parametrize("named_in", ["job", "yaml"])
def test_a_policy_that_raises_fails_the_attempt_and_the_worker_lives_on(
        queue: Queue, named_in: str) -> None:
    """The attempt is recorded as failed, with an error naming the plugin;
    the job is retried after the default exponential delay (and is dead once
    it has no retries left: the policy is not asked then); the same worker
    then runs the next job."""
    install(queue, "queuectl-flaky", "flaky", "qc_flaky", FLAKY)
    retry: dict[str, object] = {"backoff_base": 1.5}
    if named_in == "job":
        retry["policy"] = "flaky"
    else:
        queue.home.mkdir(parents=True, exist_ok=True)
        (queue.home / "queuectl.yaml").write_text("retry:\n  policy: flaky\n")
    queue.fast()
    queue.enqueue({"id": "bad", "command": "exit 3", "max_retries": 1, "retry": retry})
    group = queue.start_workers(1)
    [worker] = group.workers

    job = queue.wait_state("bad", "dead", timeout=20)
    first, second = job["attempts_history"]
    failed = ("retry policy 'flaky' (from queuectl-flaky 0.1.0) failed: ValueError: no delay "
              "after attempt 1")
    assert (first["outcome"], first["exit_code"], first["error"]) == (
        "failed", 3, f"command exited with code 3; {failed}; retrying with the default "
        "exponential delay")
    assert (second["outcome"], second["exit_code"], second["error"]) == (
        "failed", 3, "command exited with code 3")
    # The default exponential delay: backoff_base ** 1 seconds, as the job asked.
    assert iso_ms(second["started_at"]) - iso_ms(first["finished_at"]) >= 1500 - 1
    assert job["last_error"] == "command exited with code 3"

    queue.enqueue({"id": "next", "command": "true"})
    done = queue.wait_state("next", "completed")
    pids = {int(a["worker_id"].rsplit(":", 2)[1])
            for a in [first, second, *done["attempts_history"]]}
    assert pids == {worker} and pid_running(worker)
    log = (queue.home / "logs" / "workers.log").read_text()
    assert f"job bad: {failed}; retrying with the default exponential delay" in log
    assert "exited unexpectedly" not in log and "internal error" not in log
