"""The CLI's start-up cache runs the same code as the full CLI.

``queuectl enqueue JSON`` (or ``-c CMD``) and ``queuectl status`` skip click and pluggy when
the start-up cache of the home matches (queuectl_core/cli/startup.py). Each
case here runs the real ``queuectl`` in two homes prepared alike: once as
users get it (the cache on, in debug mode so that it says which way the call
went) and once with ``QUEUECTL_STARTUP_CACHE=0``. stdout, stderr, the exit
code and the stored rows must be the same, over a table of good and bad
inputs and stored settings; and the cached calls must really have skipped
click and pluggy.
"""

from __future__ import annotations

import json
import os
import re
import sqlite3
import subprocess
from pathlib import Path
from typing import Any

import pytest

from .conftest import QUEUECTL

DEBUG = "queuectl: start-up cache: "


def cli(home: Path, *args: str, cached: bool = True, cwd: Path | None = None,
        env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    full_env = {**os.environ, "QUEUECTL_HOME": str(home), "COLUMNS": "80",
                "QUEUECTL_STARTUP_CACHE": "debug" if cached else "0", **(env or {})}
    for key in ("QUEUECTL_CONFIG", "QUEUECTL_BACKEND", "QUEUECTL_DISABLE_PLUGINS"):
        if env is None or key not in env:
            full_env.pop(key, None)
    return subprocess.run([str(QUEUECTL), *args], capture_output=True, text=True,
                          env=full_env, cwd=cwd, timeout=60)


def used_cache(result: subprocess.CompletedProcess[str], *, light: bool = True) -> bool:
    """Did the call go through the cache (and, if ``light``, skip click,
    pluggy, pydantic and yaml)?"""
    lines = [line for line in result.stderr.splitlines() if line.startswith(DEBUG)]
    if not lines or lines[0] != DEBUG + "used":
        return False
    assert not light or lines[1] == DEBUG + "loaded []", lines
    return True


_TIMES = re.compile(r"\d{4}-\d\d-\d\d[T ]\d\d:\d\d(:\d\d(\.\d+)?)?Z?")


def untimed(text: str) -> str:
    """``text`` with its timestamps (taken from the clock) blanked out."""
    return _TIMES.sub("TIME", text)


def stderr_of(result: subprocess.CompletedProcess[str], home: Path) -> str:
    return "".join(line for line in result.stderr.splitlines(keepends=True)
                   if not line.startswith(DEBUG)).replace(str(home), "HOME")


def rows(home: Path, db: str = "queue.db") -> list[dict[str, Any]]:
    conn = sqlite3.connect(home / db)
    conn.row_factory = sqlite3.Row
    try:
        return [dict(r) for r in conn.execute("SELECT * FROM jobs ORDER BY seq")]
    finally:
        conn.close()


def comparable(row: dict[str, Any], home: Path) -> dict[str, Any]:
    """A stored row without what differs between two runs: times taken from
    the clock, the sequence number, a generated id, the home's path."""
    out = dict(row)
    for key in ("seq", "created_at", "updated_at"):
        out.pop(key)
    if out["run_at"] == row["created_at"]:
        out["run_at"] = "now"
    if len(out["id"]) == 12 and all(c in "0123456789abcdef" for c in out["id"]):
        out["id"] = "generated"
    if out["cwd"] is not None:
        out["cwd"] = out["cwd"].replace(str(home), "HOME")
    for key in ("started_at", "finished_at", "cancel_requested_at", "lease_expires_at"):
        if out[key] is not None:
            out[key] = "set"
    return out


def same(pair: tuple[Path, Path], *args: str, expect_cache: bool = True,
         env: dict[str, str] | None = None, light: bool = True
         ) -> subprocess.CompletedProcess[str]:
    """Run ``args`` in both homes and check that both runs agree."""
    cached_home, plain_home = pair
    cached = cli(cached_home, *args, cwd=cached_home, env=env)
    plain = cli(plain_home, *args, cached=False, cwd=plain_home, env=env)
    assert used_cache(cached, light=light) == expect_cache, cached.stderr
    assert cached.returncode == plain.returncode, (cached, plain)
    new = [r["id"] for r in rows(cached_home)]
    old = [r["id"] for r in rows(plain_home)]
    out_cached, out_plain = cached.stdout, plain.stdout
    if new and old:  # a generated id is printed: compare without it
        out_cached = out_cached.replace(new[-1], "ID")
        out_plain = out_plain.replace(old[-1], "ID")
    assert untimed(out_cached.replace(str(cached_home), "HOME")) == \
        untimed(out_plain.replace(str(plain_home), "HOME"))
    assert stderr_of(cached, cached_home) == stderr_of(plain, plain_home)
    assert [comparable(r, cached_home) for r in rows(cached_home)] == \
        [comparable(r, plain_home) for r in rows(plain_home)]
    return cached


@pytest.fixture
def homes(tmp_path: Path) -> tuple[Path, Path]:
    """Two homes with a store, the start-up cache and one job ``taken``."""
    pair = (tmp_path / "cached", tmp_path / "plain")
    for home in pair:
        first = cli(home, "enqueue", '{"id": "taken", "command": "true"}', cached=False)
        assert first.returncode == 0, first.stderr
        assert (home / "cache" / "startup.json").is_file()
        (home / "sub").mkdir()
    return pair


JOBS = [
    '{"command": "echo hi"}',
    '{"id": "job1", "command": "echo hi"}',
    '{"id": "j2", "command": "sleep 1", "max_retries": 0, "priority": -5, "queue": "q.1"}',
    '{"id": "j3", "command": "x", "timeout": 2, "run_at": 1700000000000}',
    '{"id": "j4", "command": "x", "timeout": 0.25, "run_at": "2030-01-02T03:04:05.678Z"}',
    '{"id": "j5", "command": "x", "cwd": "sub/../sub", "env": {"LANG": "C", "É": "ü ✓"}}',
    '{"id": "j6", "command": "x", "cwd": "/", "env": {}, "run_at": null, "max_retries": null}',
    '{"id": "ünï code ✓", "command": "echo \'ü\' \\"$HOME\\""}',
    '{"id": "r1", "command": "x", "retry": {"policy": "linear", "max_delay": 5}}',
    '{"command": "x", "cwd": "does-not-exist"}',  # stored, with a warning
    # Errors: every one the same message and exit code.
    '{"id": "taken", "command": "true"}',
    '{"command": ""}',
    '{"command": "x", "bogus": 1}',
    '{"command": "x", "max_retries": "3"}',
    '{"command": "x", "run_at": "yesterday"}',
    '{"command": "x", "retry": {"policy": "nonesuch"}}',
    '["not", "an", "object"]',
    '{"command": "x",}',
    '{"command": "x", "queue": "-bad"}',
    'echo hello',
    'make',
    'ls -l && echo "it\'s done"',
    '',
    '  [1,',
]


@pytest.mark.parametrize("job", JOBS)
@pytest.mark.parametrize("as_json", [False, True])
def test_enqueue_is_the_same_with_and_without_the_cache(homes: tuple[Path, Path], job: str,
                                                        as_json: bool) -> None:
    # A job that names a retry policy needs the installed policies: the App
    # loads the plugins for it (the same code, on both paths).
    light = "policy" not in job
    same(homes, "enqueue", job, *(["--json"] if as_json else []), light=light)


@pytest.mark.parametrize(("args", "cached"), [
    (["-c", "echo hi"], True),
    (["--command", "echo 'ü' && exit 3", "--json"], True),
    (["--json", "--command=sleep 1"], True),
    (["-c", "--json"], True),  # the word after -c is the command, whatever it looks like
    (["-c", ""], True),  # an error, the same one
    (["-c", "x", "--queue", "q"], False),  # other options: the full CLI
    (["-c", "x", '{"command": "y"}'], False),
    (["-c", "x", "-c", "y"], False),
    (["-c"], False),
])
def test_enqueue_command_takes_the_cache_like_json(homes: tuple[Path, Path], args: list[str],
                                                   cached: bool) -> None:
    same(homes, "enqueue", *args, expect_cache=cached)


@pytest.mark.parametrize("args", [[], ["--json"]])
def test_status_is_the_same_with_and_without_the_cache(homes: tuple[Path, Path],
                                                       args: list[str]) -> None:
    for home in homes:
        for setup in (["enqueue", "-c", "x", "--queue", "other"], ["pause", "other"],
                      ["pause", "zzz"], ["cancel", "taken"]):
            assert cli(home, *setup, cached=False).returncode == 0
    same(homes, "status", *args)
    same(homes, "status", "--queue", "other", *args, expect_cache=False)


@pytest.mark.parametrize(("key", "value"), [
    ("backoff_base", "0.5"),    # out of range: exit 2 on both paths
    ("max_retries", "\"3\""),   # the wrong type
    ("max_retries", "7"),       # a good one, used by enqueue
    ("lease_seconds", "1"),     # status reads it for the live workers
])
def test_a_stored_setting_is_checked_the_same_way(homes: tuple[Path, Path], key: str,
                                                  value: str) -> None:
    for home in homes:
        conn = sqlite3.connect(home / "queue.db")
        with conn:
            conn.execute("INSERT OR REPLACE INTO settings (key, value) VALUES (?, ?)",
                         (key, value))
        conn.close()
    for args in (["enqueue", '{"id": "s1", "command": "x"}'], ["status"], ["status", "--json"]):
        result = same(homes, *args)
        if key == "backoff_base":
            assert result.returncode == 2 and "invalid stored setting" in result.stderr


def test_yaml_defaults_apply_and_a_changed_file_is_read_again(
        homes: tuple[Path, Path]) -> None:
    """The stored max_retries wins over the YAML default, which wins over the
    built-in one; after the file changes, the next call reads it (and
    caches it again)."""
    for home in homes:
        (home / "queuectl.yaml").write_text("defaults:\n  max_retries: 7\n")
    same(homes, "enqueue", '{"id": "y1", "command": "x"}', expect_cache=False)
    same(homes, "enqueue", '{"id": "y2", "command": "x"}')
    for home in homes:
        assert cli(home, "config", "set", "max-retries", "9", cached=False).returncode == 0
    same(homes, "enqueue", '{"id": "y3", "command": "x"}')
    for home in homes:
        (home / "queuectl.yaml").write_text("defaults:\n  max_retries: 8\n")
    same(homes, "status", expect_cache=False)
    assert {r["id"]: r["max_retries"] for r in rows(homes[0])} == {
        "taken": 3, "y1": 7, "y2": 7, "y3": 9}
    for home in homes:  # a broken file: the same one-line error
        (home / "queuectl.yaml").write_text("defaults: [\n")
    broken = same(homes, "status", expect_cache=False)
    assert broken.returncode == 2 and "not valid YAML" in broken.stderr


def test_backend_options_are_replayed_from_the_cache(homes: tuple[Path, Path]) -> None:
    """SQLite takes a snapshot of its validated options: after one full call
    that reads the file, cached calls open the store the options name."""
    for home in homes:
        (home / "queuectl.yaml").write_text(
            "backends:\n  sqlite:\n    path: other.db\n    synchronous: normal\n")
    same(homes, "enqueue", '{"id": "o1", "command": "x"}', expect_cache=False)
    same(homes, "enqueue", '{"id": "o2", "command": "x"}')
    same(homes, "status")
    cache = json.loads((homes[0] / "cache" / "startup.json").read_text())
    assert cache["options"] == {"path": "other.db", "synchronous": "normal",
                                "busy_timeout_ms": 30_000}
    for home in homes:
        assert [r["id"] for r in rows(home, "other.db")] == ["o1", "o2"]
        assert [r["id"] for r in rows(home)] == ["taken"]
    for home in homes:  # a bad option: the same error, and nothing cached
        (home / "queuectl.yaml").write_text("backends:\n  sqlite:\n    busy_timeout_ms: 1\n")
    for _ in range(2):
        bad = same(homes, "status", expect_cache=False)
        assert bad.returncode == 2 and "busy_timeout_ms" in bad.stderr


@pytest.mark.parametrize("args", [
    ["list"], ["list", "--json", "--state", "pending"], ["show", "taken"], ["show", "nope"],
    ["dlq", "list"], ["config", "get", "max_retries"], ["cancel", "taken", "--json"],
    ["pause", "default"], ["plugins"],
])
def test_other_commands_are_the_same_on_the_seeded_app(homes: tuple[Path, Path],
                                                       args: list[str]) -> None:
    """Commands other than enqueue and status run click, with the App the
    cache seeds (their plugins, YAML and pydantic only when they need them)."""
    result = same(homes, *args, expect_cache=False)
    assert DEBUG + "seeded the App" in result.stderr


@pytest.mark.parametrize("args", [
    ["status", "--backend", "json"],
    ["status", "--json", "--backend=json"],
    ["status", "--home", "sub"],
    ["status", "--json", "--home", "sub", "--backend", "sqlite"],
    ["status", "--config", "none.yaml"],
    ["status", "--queue", "default", "--home", "sub"],
    ["enqueue", '{"id": "g1", "command": "x"}', "--backend", "json"],
    ["enqueue", "--backend=json", '{"id": "g1", "command": "x"}', "--json"],
    ["enqueue", '{"id": "g1", "command": "x"}', "--home", "sub"],
    ["enqueue", '{"id": "taken", "command": "x"}', "--home", "sub"],
    ["enqueue", "--json", "--home", "sub", '{"id": "g1", "command": "x"}'],
    ["enqueue", '{"id": "g1", "command": "x"}', "--config", "none.yaml"],
    ["enqueue", "echo hello", "--backend", "json"],
    ["--home", "sub", "status", "--home", "."],
])
def test_global_options_after_the_command_go_the_full_way(homes: tuple[Path, Path],
                                                          args: list[str]) -> None:
    """A global option after ``enqueue`` or ``status`` means what it means
    before it, and such a call never takes the cache of this home."""
    same(homes, *args, expect_cache=False)


def test_status_after_enqueue_into_the_other_backend(homes: tuple[Path, Path]) -> None:
    same(homes, "enqueue", '{"id": "in-json", "command": "x"}', "--backend", "json",
         expect_cache=False)
    in_json = same(homes, "status", "--json", "--backend", "json", expect_cache=False)
    assert json.loads(in_json.stdout)["pending"] == 1
    # The cache now holds for json: one full call caches sqlite again.
    same(homes, "enqueue", '{"id": "in-sqlite", "command": "x"}', expect_cache=False)
    in_sqlite = same(homes, "status", "--json")
    assert json.loads(in_sqlite.stdout)["pending"] == 2
    for home in homes:
        assert [r["id"] for r in rows(home)] == ["taken", "in-sqlite"]
    in_sub = same(homes, "status", "--json", "--home", "sub", expect_cache=False)
    assert json.loads(in_sub.stdout)["pending"] == 0


def test_another_backend_is_cached_on_its_own(homes: tuple[Path, Path]) -> None:
    env = {"QUEUECTL_BACKEND": "json"}
    same(homes, "status", expect_cache=False, env=env)
    same(homes, "status", env=env)  # cached for the json backend now
    same(homes, "status", expect_cache=False)  # and for sqlite again after this


def test_a_job_event_listener_hears_cached_enqueues(tmp_path: Path) -> None:
    """A plugin that listens to job events is called for an enqueue that
    goes through the cache (the App loads the plugins when it must)."""
    plugin_dir = tmp_path / "plugin"
    plugin_dir.mkdir()
    (plugin_dir / "listener_plugin.py").write_text(
        "from queuectl_core import hookimpl\n"
        "import os\n"
        "@hookimpl\n"
        "def queuectl_job_event(event, job, attempt):\n"
        "    with open(os.environ['LISTENER_LOG'], 'a') as fh:\n"
        "        fh.write(f'{event} {job.id}\\n')\n")
    dist = plugin_dir / "listener_plugin-1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: listener-plugin\n"
                                   "Version: 1.0\n")
    (dist / "entry_points.txt").write_text("[queuectl]\nlistener = listener_plugin\n")
    log = tmp_path / "events.log"
    env = {"PYTHONPATH": str(plugin_dir), "LISTENER_LOG": str(log)}
    home = tmp_path / "home"
    assert cli(home, "enqueue", '{"id": "a", "command": "x"}', cached=False,
               env=env).returncode == 0
    result = cli(home, "enqueue", '{"id": "b", "command": "x"}', env=env)
    assert result.returncode == 0, result.stderr
    assert log.read_text().split("\n")[:2] == ["enqueued a", "enqueued b"]
