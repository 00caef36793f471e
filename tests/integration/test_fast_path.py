"""The CLI's fast path (queuectl_core/cli/fast.py) against the full CLI.

Each case runs the real ``queuectl`` twice, in two fresh homes: once as
users get it (fast path on, in debug mode so that it says when it falls
back) and once with ``QUEUECTL_FAST_PATH=0``. Output, exit code and the
stored rows must be the same; the cases meant for the fast path must not
fall back, and every error must (its message comes from the full CLI).
"""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from queuectl_core.cli import fast
from queuectl_core.models import SETTING_SPECS

from .conftest import QUEUECTL

DECLINED = "queuectl: fast path declined:"


def cli(home: Path, *args: str, fast_path: bool = True, cwd: Path | None = None,
        env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    full_env = {**os.environ, "QUEUECTL_HOME": str(home), "COLUMNS": "80",
                "QUEUECTL_FAST_PATH": "debug" if fast_path else "0", **(env or {})}
    for key in ("QUEUECTL_CONFIG", "QUEUECTL_BACKEND", "QUEUECTL_DISABLE_PLUGINS"):
        if env is None or key not in env:
            full_env.pop(key, None)
    return subprocess.run([str(QUEUECTL), *args], capture_output=True, text=True,
                          env=full_env, cwd=cwd, timeout=60)


def declined(result: subprocess.CompletedProcess[str]) -> bool:
    return DECLINED in result.stderr


def stderr_of(result: subprocess.CompletedProcess[str]) -> str:
    return "".join(line for line in result.stderr.splitlines(keepends=True)
                   if not line.startswith(DECLINED))


def rows(home: Path) -> list[dict[str, Any]]:
    conn = sqlite3.connect(home / "queue.db")
    conn.row_factory = sqlite3.Row
    try:
        return [dict(r) for r in conn.execute("SELECT * FROM jobs ORDER BY seq")]
    finally:
        conn.close()


def comparable(row: dict[str, Any], generated_id: bool) -> dict[str, Any]:
    """A stored row without what differs between two runs: times taken from
    the clock, the sequence number and a generated id."""
    out = dict(row)
    for key in ("seq", "created_at", "updated_at"):
        out.pop(key)
    if out["run_at"] == row["created_at"]:
        out["run_at"] = "now"
    if generated_id:
        assert len(out["id"]) == 12 and int(out["id"], 16) >= 0
        out["id"] = "generated"
    return out


@pytest.fixture
def homes(tmp_path: Path) -> tuple[Path, Path]:
    """Two homes with a store, a fast-path cache and one job ``taken``."""
    pair = (tmp_path / "fast", tmp_path / "full")
    for home in pair:
        first = cli(home, "enqueue", '{"id": "taken", "command": "true"}', fast_path=False)
        assert first.returncode == 0, first.stderr
        assert (home / "cache" / "fastpath.json").is_file()
    return pair


SHOULD_BE_FAST = [
    '{"command": "echo hi"}',
    '{"id": "job1", "command": "echo hi"}',
    '{"id": "j2", "command": "sleep 1", "max_retries": 0, "priority": -5, "queue": "q.1"}',
    '{"id": "j3", "command": "x", "timeout": 2, "run_at": 1700000000000}',
    '{"id": "j4", "command": "x", "timeout": 0.25, "run_at": "2030-01-02T03:04:05.678Z"}',
    '{"id": "j5", "command": "x", "cwd": "sub/../sub", "env": {"LANG": "C", "É": "ü ✓"}}',
    '{"id": "j6", "command": "x", "cwd": "/", "env": {}, "run_at": null, "max_retries": null}',
    '{"id": "ünï code ✓", "command": "echo \'ü\' \\"$HOME\\""}',
]

SHOULD_FALL_BACK = [
    '{"id": "taken", "command": "true"}',  # duplicate
    '{"command": ""}',
    '{"command": "x", "bogus": 1}',
    '{"command": "x", "max_retries": "3"}',
    '{"command": "x", "run_at": "yesterday"}',
    '{"command": "x", "retry": {"policy": "linear"}}',
    '{"command": "x", "retry": {"policy": "nonesuch"}}',
    '{"command": "x", "cwd": "does-not-exist"}',  # stored, with a warning
    '["not", "an", "object"]',
    '{"command": "x",}',
    '{"command": "x", "queue": "-bad"}',
]


@pytest.mark.parametrize("job", SHOULD_BE_FAST + SHOULD_FALL_BACK)
@pytest.mark.parametrize("as_json", [False, True])
def test_enqueue_matches_the_full_cli(homes: tuple[Path, Path], job: str,
                                      as_json: bool) -> None:
    results = []
    for home, fast_path in zip(homes, (True, False), strict=True):
        (home / "sub").mkdir(exist_ok=True)
        args = ["enqueue", job] + (["--json"] if as_json else [])
        results.append(cli(home, *args, fast_path=fast_path, cwd=home))
    fast_run, full_run = results
    assert declined(fast_run) == (job in SHOULD_FALL_BACK), fast_run.stderr
    assert fast_run.returncode == full_run.returncode, (fast_run, full_run)
    generated = '"id"' not in job
    if generated and fast_run.returncode == 0:
        for result, home in zip(results, homes, strict=True):
            new_id = rows(home)[-1]["id"]
            assert new_id in result.stdout
        assert fast_run.stdout.replace(rows(homes[0])[-1]["id"], "ID") == \
            full_run.stdout.replace(rows(homes[1])[-1]["id"], "ID")
    else:
        assert fast_run.stdout == full_run.stdout
    assert stderr_of(fast_run).replace(str(homes[0]), "HOME") == \
        stderr_of(full_run).replace(str(homes[1]), "HOME")
    fast_rows = [comparable(r, generated and r["id"] != "taken") for r in rows(homes[0])]
    full_rows = [comparable(r, generated and r["id"] != "taken") for r in rows(homes[1])]
    for row in fast_rows + full_rows:
        if row["cwd"] is not None:
            row["cwd"] = row["cwd"].replace(str(homes[0]), "HOME").replace(str(homes[1]), "HOME")
    assert fast_rows == full_rows


def _status_pair(homes: tuple[Path, Path], *args: str, env: dict[str, str] | None = None
                 ) -> tuple[subprocess.CompletedProcess[str], subprocess.CompletedProcess[str]]:
    fast_run = cli(homes[0], "status", *args, env=env)
    full_run = cli(homes[1], "status", *args, fast_path=False, env=env)
    assert fast_run.returncode == full_run.returncode == 0, (fast_run, full_run)
    assert fast_run.stdout.replace(str(homes[0]), "HOME") == \
        full_run.stdout.replace(str(homes[1]), "HOME")
    return fast_run, full_run


def test_status_matches_the_full_cli(homes: tuple[Path, Path]) -> None:
    for home in homes:
        for args in (["enqueue", "-c", "x", "--queue", "other"], ["pause", "other"],
                     ["pause", "zzz"], ["cancel", "taken"]):
            assert cli(home, *args, fast_path=False).returncode == 0
    for args in ([], ["--json"]):
        fast_run, _ = _status_pair(homes, *args)
        assert not declined(fast_run), fast_run.stderr
    # Options the fast path leaves to the full CLI.
    fast_run, _ = _status_pair(homes, "--queue", "other")
    assert declined(fast_run)


def test_settings_and_yaml_defaults_apply(homes: tuple[Path, Path]) -> None:
    """The stored max_retries wins over the YAML default, which wins over
    the built-in one; a changed YAML file sends the next call to the full
    CLI, which caches it again."""
    fast_home = homes[0]
    (fast_home / "queuectl.yaml").write_text("defaults:\n  max_retries: 7\n")
    first = cli(fast_home, "enqueue", '{"id": "y1", "command": "x"}')
    assert declined(first) and first.returncode == 0  # "config file changed"
    second = cli(fast_home, "enqueue", '{"id": "y2", "command": "x"}')
    assert not declined(second), second.stderr
    assert cli(fast_home, "config", "set", "max-retries", "9").returncode == 0
    third = cli(fast_home, "enqueue", '{"id": "y3", "command": "x"}')
    assert not declined(third), third.stderr
    (fast_home / "queuectl.yaml").write_text("defaults:\n  max_retries: 8\n")
    fourth = cli(fast_home, "status")
    assert declined(fourth) and fourth.returncode == 0
    assert {r["id"]: r["max_retries"] for r in rows(fast_home)}["y1"] == 7
    assert {r["id"]: r["max_retries"] for r in rows(fast_home)}["y2"] == 7
    assert {r["id"]: r["max_retries"] for r in rows(fast_home)}["y3"] == 9
    # A broken YAML file is the full CLI's to report.
    (fast_home / "queuectl.yaml").write_text("defaults: [\n")
    broken = cli(fast_home, "status")
    assert declined(broken) and broken.returncode == 2
    assert "not valid YAML" in broken.stderr


def test_another_backend_or_plugin_set_falls_back(homes: tuple[Path, Path]) -> None:
    home = homes[0]
    other = cli(home, "status", env={"QUEUECTL_BACKEND": "json"})
    assert declined(other) and other.returncode == 0 and "json" in other.stdout
    fewer = cli(home, "status", env={"QUEUECTL_DISABLE_PLUGINS": "queuectl-json"})
    assert declined(fewer) and fewer.returncode == 0
    # One cache per home: the call after an environment change re-caches.
    assert declined(cli(home, "status"))
    again = cli(home, "status")
    assert not declined(again), again.stderr


def test_help_and_version_match_click(tmp_path: Path) -> None:
    for args in (["--help"], ["-h"], ["--version"]):
        fast_run = cli(tmp_path, *args)
        full_run = cli(tmp_path, *args, fast_path=False)
        assert not declined(fast_run), fast_run.stderr
        assert (fast_run.returncode, fast_run.stdout) == (full_run.returncode, full_run.stdout), \
            "update HELP in queuectl_core/cli/fast.py to what click prints"
    narrow = cli(tmp_path, "--help", env={"COLUMNS": "60"})
    assert declined(narrow) and narrow.stdout == cli(
        tmp_path, "--help", fast_path=False, env={"COLUMNS": "60"}).stdout


def test_no_heavy_imports_on_the_fast_path(homes: tuple[Path, Path]) -> None:
    """What makes it fast: none of these modules is loaded (beyond what the
    interpreter loaded before: an editable install's finder loads pathlib)."""
    probe = (
        "import sys\n"
        "before = set(sys.modules)\n"
        "from queuectl_core.cli import fast\n"
        "code = fast.run(sys.argv[1:])\n"
        "heavy = {'click', 'pluggy', 'pydantic', 'yaml', 'queuectl_core.models', "
        "'queuectl_sqlite.store', 'typing', 'pathlib', 'socket'} & (set(sys.modules) - before)\n"
        "print(sorted(heavy))\n"
    )
    env = {**os.environ, "QUEUECTL_HOME": str(homes[0])}
    for args in (["status"], ["enqueue", '{"command": "true"}']):
        out = subprocess.run([sys.executable, "-c", probe, *args], capture_output=True,
                             text=True, env=env, check=True, timeout=60).stdout
        assert out.splitlines()[-1] == "[]", out


def test_builtin_setting_defaults_match_the_model() -> None:
    for name, default, bounds in (
            ("max_retries", fast.DEFAULT_MAX_RETRIES, fast.MAX_RETRIES_RANGE),
            ("lease_seconds", fast.DEFAULT_LEASE_SECONDS, fast.LEASE_SECONDS_RANGE)):
        spec = SETTING_SPECS[name]
        assert (spec.default, (spec.low, spec.high)) == (default, bounds)


def test_a_job_event_listener_keeps_enqueue_on_the_full_path(
        homes: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    """A plugin that listens to job events must hear about every enqueue."""
    from queuectl_core import fastpath, hookimpl
    from queuectl_core.app import App
    from queuectl_core.config import resolve_config

    class Listener:
        @hookimpl
        def queuectl_job_event(self, event: str, job: Any, attempt: Any) -> None:
            pass

    home = homes[0]
    monkeypatch.setenv("QUEUECTL_HOME", str(home))
    for key in ("QUEUECTL_CONFIG", "QUEUECTL_BACKEND", "QUEUECTL_DISABLE_PLUGINS"):
        monkeypatch.delenv(key, raising=False)
    app = App(resolve_config(home=None, config=None, backend=None))
    app.plugins.register(Listener(), name="listener")
    fastpath.remember(app)
    app.close()
    cached = json.loads((home / "cache" / "fastpath.json").read_text())
    assert cached["job_event_listeners"] is True
    with pytest.raises(fast.Decline, match="listens"):
        fast.run(["enqueue", '{"command": "true"}'])
    assert fast.run(["status"]) == 0  # status has no events
