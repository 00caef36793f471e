"""The PostgreSQL backend under the real ``queuectl`` CLI: an idle worker on
one "machine" is woken by a job enqueued on another, through NOTIFY alone."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
import pytest

from queuectl_postgres import DSN_ENV
from queuectl_postgres.connection import channel_for

QUEUECTL = Path(sys.executable).parent / "queuectl"

Admin = psycopg.Connection[tuple[object, ...]]


@dataclass(frozen=True)
class Home:
    """A QUEUECTL_HOME configured for the postgres backend on ``schema``."""

    path: Path
    schema: str
    dsn: str

    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("QUEUECTL_")}
        env.update(QUEUECTL_HOME=str(self.path), COLUMNS="80")
        env[DSN_ENV] = self.dsn
        return env

    def ok(self, *args: str) -> str:
        """stdout of a call that must succeed."""
        result = subprocess.run([str(QUEUECTL), *args], capture_output=True, text=True,
                                env=self.env(), cwd=self.path, timeout=60)
        assert result.returncode == 0, result
        return result.stdout


def make_home(path: Path, schema: str, dsn: str) -> Home:
    path.mkdir(mode=0o700, parents=True)
    (path / "queuectl.yaml").write_text(
        f"backend: postgres\nbackends:\n  postgres:\n    schema: {schema}\n")
    return Home(path, schema, dsn)


def listening(admin: Admin, channel: str) -> bool:
    """Some session's last statement was a LISTEN on ``channel`` (the
    worker's wake-up connection is up)."""
    row = admin.execute("SELECT count(*) FROM pg_stat_activity WHERE query = %s",
                        (f'LISTEN "{channel}"',)).fetchone()
    return row is not None and row[0] == 1


def wait_for(predicate: Callable[[], Any], timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    interval = 0.02
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout:g}s waiting for {what}")
        time.sleep(min(interval, max(0.0, deadline - time.monotonic())))
        interval = min(interval * 1.5, 0.25)


@contextmanager
def foreground_worker(home: Home, log: Path) -> Iterator[subprocess.Popen[bytes]]:
    """``queuectl worker run`` in ``home`` (its own session), stopped
    afterwards: SIGTERM, then SIGKILL for its whole group if it lingers."""
    with log.open("wb") as out:
        proc = subprocess.Popen([str(QUEUECTL), "worker", "run"], stdin=subprocess.DEVNULL,
                                stdout=out, stderr=subprocess.STDOUT, env=home.env(),
                                cwd=home.path, start_new_session=True)
    try:
        yield proc
    finally:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)


@pytest.mark.slow
def test_an_enqueue_wakes_an_idle_worker_on_another_machine(
        tmp_path: Path, pg_dsn: str, schema: str, pg_admin: Admin) -> None:
    """The worker runs on "another machine": a second home on the same
    schema, so that only PostgreSQL's notification (not the local wake-up
    sockets of the enqueuing home) can tell it about the new job."""
    home = make_home(tmp_path / "home", schema, pg_dsn)
    # Polls and housekeeping (every lease/3) far apart, set before the worker
    # starts: only a notification can make it claim the job within the deadline.
    home.ok("config", "set", "worker-idle-delay", "600000")
    home.ok("config", "set", "lease-seconds", "3600")
    other = make_home(tmp_path / "worker-home", schema, pg_dsn)
    log = tmp_path / "worker.log"
    with foreground_worker(other, log) as proc:
        wait_for(lambda: json.loads(other.ok("status", "--json"))["active_workers"] == 1,
                 30, "the worker to register")
        wait_for(lambda: listening(pg_admin, channel_for(schema)), 30,
                 "the worker's LISTEN connection")
        started = time.monotonic()
        home.ok("enqueue", '{"id": "woken", "command": "true"}')

        def completed() -> dict[str, Any] | None:
            job: dict[str, Any] = json.loads(home.ok("show", "woken", "--json"))
            return job if job["state"] == "completed" else None

        job = wait_for(completed, 30, "the job to complete (the worker was not woken)")
        elapsed = time.monotonic() - started
        assert proc.poll() is None, log.read_text()
    assert job["attempts"] == 1 and elapsed < 30, (job, elapsed)
