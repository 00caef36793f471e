"""A store or home this user cannot write gets one accurate message, the same
for every command, and exit 1 (issue 21, item 11): never a traceback, never
"database is busy" or "damaged", never `worker start`'s "Starting..." first.

File modes do not bind root, so as root the commands run without the
capability that overrides them (``setpriv --bounding-set=-dac_override``):
root can still read every file (the virtualenv may live under /root) but
writes obey the modes, as for any user. Skipped, saying why, where that is
not possible (it is in CI)."""

from __future__ import annotations

import functools
import os
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from .conftest import QUEUECTL

DROP = ["setpriv", "--bounding-set=-dac_override", "--"]
COMMANDS = (["status"], ["list"], ["enqueue", "-c", "true"], ["worker", "start"])


@functools.cache
def _prefix() -> list[str] | None:
    """What runs a command with file modes binding it; None if impossible."""
    if os.geteuid() != 0:
        return []
    if shutil.which("setpriv") is None:
        return None
    probe = subprocess.run([*DROP, "true"], capture_output=True, check=False)
    return DROP if probe.returncode == 0 else None


def _run(home: Path, backend: str, *args: str, bound: bool = True
         ) -> subprocess.CompletedProcess[str]:
    prefix = _prefix()
    assert prefix is not None
    env = {k: v for k, v in os.environ.items() if not k.startswith("QUEUECTL_")}
    env.update(QUEUECTL_HOME=str(home), QUEUECTL_BACKEND=backend)
    return subprocess.run([*(prefix if bound else []), str(QUEUECTL), *args],
                          capture_output=True, text=True, env=env, timeout=60, check=False)


def _read_only(*paths: Path) -> None:
    for path in paths:
        path.chmod(path.stat().st_mode & ~0o222)


def _removed(path: Path) -> Path:
    shutil.rmtree(path)
    return path


SCENARIOS: dict[str, tuple[str, Callable[[Path], None], str]] = {
    "read-only queue.db": (
        "sqlite", lambda home: _read_only(home / "queue.db"),
        "cannot open SQLite database HOME/queue.db: Permission denied"),
    "read-only home, SQLite": (
        "sqlite", lambda home: _read_only(home),
        "cannot write in HOME: Permission denied (SQLite keeps queue.db-wal and "
        "queue.db-shm next to the database, for reads too)"),
    "read-only JSON store": (
        "json", lambda home: _read_only(*(home / "json").rglob("*"), home / "json"),
        "cannot open JSON store HOME/json: Permission denied"),
    "unwritable parent of the home": (
        "sqlite", lambda home: _read_only(_removed(home).parent),
        "cannot create HOME: Permission denied"),
}


def _need_file_modes() -> None:
    if _prefix() is None:
        if os.environ.get("CI"):
            pytest.fail("CI must be able to run commands bound by file modes (setpriv)")
        pytest.skip("running as root without setpriv able to drop CAP_DAC_OVERRIDE: "
                    "file modes cannot be tested here")


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_every_command_gets_the_same_one_line_error(tmp_path: Path, scenario: str) -> None:
    _need_file_modes()
    backend, make_read_only, message = SCENARIOS[scenario]
    parent = tmp_path / "parent"
    home = parent / "home"
    assert _run(home, backend, "enqueue", "-c", "true", "--id", "a1", bound=False
                ).returncode == 0
    make_read_only(home)
    try:
        for args in COMMANDS:
            result = _run(home, backend, *args)
            assert (result.returncode, result.stdout) == (1, ""), (args, result)
            assert result.stderr.replace(str(home), "HOME") == f"Error: {message}\n", args
    finally:
        for path in (parent, *parent.rglob("*")):
            path.chmod(path.stat().st_mode | 0o200)


def test_worker_start_says_the_log_cannot_be_written_before_starting(tmp_path: Path) -> None:
    _need_file_modes()
    home = tmp_path / "home"
    assert _run(home, "sqlite", "status", bound=False).returncode == 0
    (home / "logs").mkdir()
    _read_only(home / "logs")
    try:
        result = _run(home, "sqlite", "worker", "start")
    finally:
        (home / "logs").chmod(0o700)
    assert (result.returncode, result.stdout) == (1, ""), result
    assert result.stderr == f"Error: cannot write the worker log {home}/logs/workers.log: " \
                            "Permission denied\n"
    assert not list((home / "run").glob("supervisor-*.json")), "a supervisor was started"
