"""Fixtures and helpers for the end-to-end tests.

Every test drives the real ``queuectl`` executable of this virtualenv in
subprocesses, with its own ``QUEUECTL_HOME`` (a ``tmp_path``). Nothing is
mocked. The ``queue`` fixture always stops what a test started: first
``queuectl worker stop --timeout 5``, then, as a safety net, SIGKILL for every
process listed in the run files and for every process that still carries this
test's ``QUEUECTL_HOME`` in its environment (workers, supervisors and the
commands of jobs). A test whose processes had to be killed that way fails in
teardown, because queuectl should not leave anything behind.

Tests may run in parallel (pytest-xdist): everything a test touches is its
own (``tmp_path``, a PostgreSQL schema named after the worker's pid), and a
PostgreSQL test holds a lock on the server that only the tests marked
``restarts_postgres`` take exclusively (``tests/postgres_lock.py``).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import select
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import IO, Any, TypeVar

import pytest

from tests.postgres_lock import postgres_exclusive, postgres_shared

#: The console script installed in the same virtualenv as the running Python.
QUEUECTL = Path(sys.executable).parent / "queuectl"

#: Matches what ``--json`` prints for timestamps, e.g. 2026-11-28T13:15:17.123Z.
ISO_RE = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?Z$")

T = TypeVar("T")


class WaitTimeout(AssertionError):
    """``wait_until`` ran out of time."""


def wait_until(predicate: Callable[[], T | None], timeout: float, interval: float = 0.05,
               message: str | Callable[[], str] = "", max_interval: float | None = None) -> T:
    """Call ``predicate`` until it returns a truthy value and return that value.

    Raises :class:`WaitTimeout` after ``timeout`` seconds, naming what was
    awaited (``message``, which may be a callable producing diagnostics) and
    the last value the predicate returned. With ``max_interval``, the pause
    between calls grows by half after each miss, from ``interval`` up to
    ``max_interval``: for predicates that are expensive themselves (a
    ``queuectl`` call costs a process start), so that a long wait does not
    keep a core busy.
    """
    deadline = time.monotonic() + timeout
    while True:
        last = predicate()
        if last:
            return last
        if time.monotonic() >= deadline:
            what = message() if callable(message) else message
            name = getattr(predicate, "__name__", repr(predicate))
            raise WaitTimeout(
                f"timed out after {timeout:g}s waiting for {what or name}; "
                f"last value: {last!r}"
            )
        time.sleep(min(interval, max(deadline - time.monotonic(), 0.0)))
        if max_interval is not None:
            interval = min(interval * 1.5, max_interval)


def now_ms() -> int:
    """Wall-clock epoch milliseconds (the unit of ``run_at`` in job JSON)."""
    return time.time_ns() // 1_000_000


def iso_ms(text: str) -> int:
    """An ISO-8601 ``...Z`` timestamp printed by ``--json`` as epoch ms."""
    assert isinstance(text, str) and ISO_RE.match(text), f"not an ISO-8601 Z time: {text!r}"
    return round(datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp() * 1000)


# ------------------------------------------------------------------ processes

def proc_state(pid: int) -> str | None:
    """The one-letter state of ``pid`` from /proc (``Z`` for a zombie), or
    None if there is no such process."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return None
    except OSError:
        return "?"
    return stat.rsplit(")", 1)[1].split()[0]


def pid_running(pid: int) -> bool:
    """True if ``pid`` exists and is not a zombie. (The init process of some
    containers never reaps orphans, so exited orphans stay zombies.)"""
    if Path("/proc/self").exists():
        return proc_state(pid) not in (None, "Z", "X")
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def processes_with_home(home: Path) -> dict[int, str]:
    """Live processes whose environment has ``QUEUECTL_HOME=<home>``: every
    supervisor, worker and job command started for this test. pid -> cmdline."""
    wanted = b"QUEUECTL_HOME=" + str(home).encode()
    found: dict[int, str] = {}
    proc = Path("/proc")
    if not proc.is_dir():
        return found
    for entry in proc.iterdir():
        if not entry.name.isdigit():
            continue
        pid = int(entry.name)
        if pid == os.getpid():
            continue
        try:
            environ = (entry / "environ").read_bytes()
            cmdline = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        if wanted in environ.split(b"\0") and pid_running(pid):
            found[pid] = cmdline.replace(b"\0", b" ").decode(errors="replace").strip()
    return found


def process_group(pid: int) -> int | None:
    """The process group of ``pid`` (from /proc), or None."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return int(stat.rsplit(")", 1)[1].split()[2])


def _belongs_to(pid: int, home: Path) -> bool:
    """Guard against PID reuse before killing a recorded pid."""
    return pid in processes_with_home(home)


def kill_hard(pid: int) -> None:
    """SIGKILL ``pid`` and the process group it leads, if any."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGKILL)
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.kill(pid, signal.SIGKILL)


def read_line(stream: IO[bytes] | None, timeout: float) -> str:
    """One line from a subprocess pipe, waiting at most ``timeout`` seconds."""
    assert stream is not None
    deadline = time.monotonic() + timeout
    data = b""
    fd = stream.fileno()
    while not data.endswith(b"\n"):
        left = deadline - time.monotonic()
        if left <= 0:
            raise WaitTimeout(f"no complete line within {timeout:g}s; got {data!r}")
        ready, _, _ = select.select([fd], [], [], left)
        if ready:
            chunk = os.read(fd, 1)
            if not chunk:
                break
            data += chunk
    return data.decode()


# ------------------------------------------------------------------ the queue

@dataclass(frozen=True)
class WorkerGroup:
    """What ``queuectl worker start`` reported."""

    supervisor: int
    workers: list[int]
    stdout: str


class Queue:
    """One queue (one QUEUECTL_HOME) driven through the real CLI."""

    def __init__(self, home: Path, workdir: Path, backend: str = "sqlite") -> None:
        self.home = home
        self.workdir = workdir
        self.backend = backend
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("QUEUECTL_")}
        self.env["QUEUECTL_HOME"] = str(home)
        self.env["QUEUECTL_BACKEND"] = backend
        self.pg_schema: str | None = None
        if backend == "postgres":
            # One schema per queue, in the shared test database, dropped at cleanup.
            self.pg_schema = f"qit_{os.getpid()}_{abs(hash(str(home))) % 10**10}"
            self.env["QUEUECTL_POSTGRES_DSN"] = postgres_dsn()
            home.mkdir(mode=0o700, parents=True, exist_ok=True)
            (home / "queuectl.yaml").write_text(
                f"backends:\n  postgres:\n    schema: {self.pg_schema}\n")
        self.popens: list[subprocess.Popen[bytes]] = []
        self.known_pids: set[int] = set()

    # ------------------------------------------------------------ running
    def run(self, *args: str, check: bool = True, stdin: str | None = None,
            timeout: float = 60.0, env: dict[str, str] | None = None
            ) -> subprocess.CompletedProcess[str]:
        """Run ``queuectl ARGS``; with ``check``, a non-zero exit fails the test
        and shows the output."""
        kwargs: dict[str, Any] = {"input": stdin} if stdin is not None else {
            "stdin": subprocess.DEVNULL}
        proc = subprocess.run(
            [str(QUEUECTL), *args], capture_output=True, text=True, timeout=timeout,
            env=env or self.env, cwd=self.workdir, check=False, **kwargs,
        )
        if check and proc.returncode != 0:
            raise AssertionError(
                f"queuectl {' '.join(args)} exited {proc.returncode}\n"
                f"stdout: {proc.stdout}\nstderr: {proc.stderr}"
            )
        return proc

    def json(self, *args: str) -> Any:
        """Run ``queuectl ARGS --json`` and decode its stdout."""
        if "--json" not in args:
            args = (*args, "--json")
        return json.loads(self.run(*args).stdout)

    def popen(self, *args: str, log: Path) -> subprocess.Popen[bytes]:
        """Start ``queuectl ARGS`` in the foreground of a new session (so a
        test can signal its process group like a terminal would). Output goes
        to ``log``; the fixture kills the session's group at teardown."""
        with log.open("ab") as out:
            proc = subprocess.Popen(
                [str(QUEUECTL), *args], stdin=subprocess.DEVNULL, stdout=out,
                stderr=subprocess.STDOUT, env=self.env, cwd=self.workdir,
                start_new_session=True,
            )
        self.popens.append(proc)
        self.known_pids.add(proc.pid)
        return proc

    # ------------------------------------------------------------ jobs
    def enqueue(self, job: dict[str, Any], *global_args: str) -> str:
        out = self.run(*global_args, "enqueue", json.dumps(job)).stdout
        match = re.fullmatch(r"Job enqueued with ID: (.+)\n", out)
        assert match, f"unexpected enqueue output: {out!r}"
        return match.group(1)

    def enqueue_many(self, jobs: list[dict[str, Any]]) -> None:
        lines = "".join(json.dumps(j) + "\n" for j in jobs)
        out = self.run("enqueue", "--file", "-", stdin=lines).stdout
        assert out == f"Enqueued {len(jobs)} jobs.\n", out

    def status(self) -> dict[str, int]:
        data: dict[str, int] = self.json("status")
        return data

    def jobs(self, state: str | None = None) -> list[dict[str, Any]]:
        args = ["list", "--limit", "0"] + ([] if state is None else ["--state", state])
        data: list[dict[str, Any]] = self.json(*args)
        return data

    def show(self, job_id: str) -> dict[str, Any]:
        data: dict[str, Any] = self.json("show", job_id)
        return data

    def config_set(self, **values: float | int) -> None:
        for key, value in values.items():
            self.run("config", "set", key, str(value))

    def fast(self, **extra: float | int) -> None:
        """Settings that keep the suite quick: 50 ms idle polls (plus ``extra``)."""
        self.config_set(worker_idle_delay=50, **extra)

    # ------------------------------------------------------------ workers
    def start_workers(self, count: int = 1, *global_args: str, alias: bool = False
                      ) -> WorkerGroup:
        cmd = ["worker-start"] if alias else ["worker", "start"]
        # A second group beside one this test started takes --add.
        if any(pid_running(p) for p in self.known_pids):
            cmd.append("--add")
        out = self.run(*global_args, *cmd, "--count", str(count), timeout=30).stdout
        workers = [int(p) for _, p in
                   re.findall(r"^Worker (\d+) started with PID: (\d+)$", out, re.M)]
        sup = re.search(r"^Supervisor PID: (\d+)", out, re.M)
        assert sup and len(workers) == count, f"unexpected worker start output: {out!r}"
        group = WorkerGroup(int(sup.group(1)), workers, out)
        self.known_pids.update([group.supervisor, *workers])
        return group

    def stop_workers(self, alias: bool = False, timeout: float = 30.0) -> str:
        cmd = ["worker-stop"] if alias else ["worker", "stop"]
        return self.run(*cmd, "--timeout", str(timeout), timeout=timeout + 30).stdout

    def wait_active_workers(self, count: int, timeout: float = 10.0) -> None:
        self.wait_until(lambda: self.status()["active_workers"] == count, timeout,
                        f"{count} active worker(s)")

    # ------------------------------------------------------------ waiting
    def diagnostics(self) -> str:
        parts = []
        with contextlib.suppress(Exception):
            jobs = self.jobs()
            parts.append("jobs: " + "; ".join(
                f"{j['id']}={j['state']}/{j['attempts']} ({j['last_error']})" for j in jobs[:30]))
        log = self.home / "logs" / "workers.log"
        if log.exists():
            parts.append("workers.log tail:\n" + "\n".join(log.read_text().splitlines()[-25:]))
        return "\n".join(parts)

    def wait_until(self, predicate: Callable[[], T | None], timeout: float, what: str,
                   interval: float = 0.05, max_interval: float = 0.25) -> T:
        """``wait_until`` for predicates that run ``queuectl``: the pause
        grows up to ``max_interval`` (a call costs up to 0.3 s of CPU on
        PostgreSQL; polling every 50 ms would keep a core busy)."""
        return wait_until(predicate, timeout, interval,
                          lambda: f"{what}\n{self.diagnostics()}",
                          max(interval, max_interval))

    def wait_state(self, job_id: str, state: str, timeout: float = 15.0) -> dict[str, Any]:
        """Wait until the job is in ``state``; returns its ``show --json``."""

        def reached() -> dict[str, Any] | None:
            job = self.show(job_id)
            return job if job["state"] == state else None

        return self.wait_until(reached, timeout, f"job {job_id} to be {state}")

    def wait_counts(self, timeout: float = 20.0, **expected: int) -> dict[str, int]:
        def reached() -> dict[str, int] | None:
            st = self.status()
            return st if all(st[k] == v for k, v in expected.items()) else None

        return self.wait_until(reached, timeout, f"status {expected}")

    # ------------------------------------------------------------ teardown
    def run_file_pids(self) -> set[int]:
        pids: set[int] = set()
        for path in (self.home / "run").glob("supervisor-*.json"):
            with contextlib.suppress(OSError, ValueError, KeyError, TypeError):
                data = json.loads(path.read_text())
                pids.add(int(data["pid"]))
                pids.update(int(p) for p in data["workers"])
        return pids

    def cleanup(self) -> dict[int, str]:
        """Stop everything this test started; returns the processes that
        survived ``worker stop`` (and were then killed)."""
        # Read the run files first: `worker stop` deletes those of dead supervisors.
        recorded = self.known_pids | self.run_file_pids()
        # Only if something may still run: most tests stopped their workers
        # themselves, and a `queuectl` call costs a process start.
        if (processes_with_home(self.home) or any(pid_running(p) for p in recorded)
                or any(proc.poll() is None for proc in self.popens)):
            with contextlib.suppress(Exception):
                self.run("worker", "stop", "--timeout", "5", check=False, timeout=60)
        for proc in self.popens:  # foreground `worker run`s stop with the rest
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=15)
        recorded |= self.run_file_pids()
        with contextlib.suppress(WaitTimeout):
            wait_until(lambda: not processes_with_home(self.home), 5.0)
        strays = processes_with_home(self.home)

        # Safety net: SIGKILL the recorded pids and their process groups, the
        # foreground sessions' groups, and anything else still in this home.
        for pid in recorded:
            if _belongs_to(pid, self.home):
                kill_hard(pid)
        for proc in self.popens:
            if proc.poll() is None or any(process_group(p) == proc.pid
                                          for p in processes_with_home(self.home)):
                kill_hard(proc.pid)
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=10)
        for _ in range(3):
            for pid in processes_with_home(self.home):
                kill_hard(pid)
            with contextlib.suppress(WaitTimeout):
                wait_until(lambda: not processes_with_home(self.home), 5.0)
        left = processes_with_home(self.home)
        if self.pg_schema is not None:
            drop_pg_schema(self.pg_schema)
        assert not left, f"processes survived SIGKILL: {left}"
        return strays


#: Every CLI scenario runs against each of these storage backends (selected
#: with QUEUECTL_BACKEND); mark a test ``@pytest.mark.backends("sqlite")`` to
#: narrow it. PostgreSQL scenarios skip when no server is reachable, unless
#: QUEUECTL_REQUIRE_POSTGRES=1 (set by CI), which turns the skip into a failure.
BACKENDS = ("sqlite", "json", "postgres")


def postgres_dsn() -> str:
    return os.environ.get("QUEUECTL_TEST_POSTGRES_DSN", "postgresql://127.0.0.1:5432/test")


_PG_PROBLEM: list[str | None] = []


def postgres_problem() -> str | None:
    """Why PostgreSQL scenarios cannot run here, or None if they can."""
    if not _PG_PROBLEM:
        try:
            import psycopg

            with psycopg.connect(postgres_dsn(), connect_timeout=3):
                pass
            _PG_PROBLEM.append(None)
        except Exception as exc:
            _PG_PROBLEM.append(
                f"PostgreSQL not reachable at {postgres_dsn()} ({type(exc).__name__}); start it "
                "or set QUEUECTL_TEST_POSTGRES_DSN (CI sets QUEUECTL_REQUIRE_POSTGRES=1)")
    return _PG_PROBLEM[0]


def drop_pg_schema(schema: str) -> None:
    import psycopg

    with psycopg.connect(postgres_dsn(), autocommit=True, connect_timeout=5) as conn:
        conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "queue" in metafunc.fixturenames:
        marker = metafunc.definition.get_closest_marker("backends")
        names = marker.args if marker else BACKENDS
        metafunc.parametrize("backend", names)


def postgres_lock(request: pytest.FixtureRequest) -> contextlib.AbstractContextManager[None]:
    """What a PostgreSQL test holds while it runs (see ``tests/postgres_lock.py``):
    exclusive for a test marked ``restarts_postgres``, else shared."""
    if request.node.get_closest_marker("restarts_postgres") is not None:
        return postgres_exclusive(postgres_dsn())
    return postgres_shared(postgres_dsn())


@pytest.fixture
def queue(request: pytest.FixtureRequest, tmp_path: Path, backend: str) -> Iterator[Queue]:
    """A fresh queue in ``tmp_path/home`` on ``backend``; every process is
    gone afterwards."""
    with contextlib.ExitStack() as stack:
        if backend == "postgres":
            stack.enter_context(postgres_lock(request))
            if (problem := postgres_problem()) is not None:
                if os.environ.get("QUEUECTL_REQUIRE_POSTGRES") == "1":
                    pytest.fail(problem)
                pytest.skip(problem)
        home = tmp_path / "home"
        work = tmp_path / "work"
        work.mkdir()
        q = Queue(home, work, backend)
        try:
            yield q
        finally:
            strays = q.cleanup()
    if strays:
        pytest.fail(f"processes outlived 'queuectl worker stop' and had to be killed: {strays}")


def one_error(res: subprocess.CompletedProcess[str], code: int, *words: str) -> None:
    """Exit ``code``, nothing on stdout, one ``Error:`` line naming ``words``."""
    assert res.returncode == code, res
    lines = res.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), res.stderr
    for word in words:
        assert word in lines[0], (word, lines[0])
    assert res.stdout == "", res.stdout


def log_dir(queue: Queue, job_id: str) -> Path:
    return queue.home / "logs" / "jobs" / job_id


def spawn(queue: Queue, *args: str) -> subprocess.Popen[bytes]:
    """``queuectl ARGS`` in the background with stdout and stderr kept apart
    (the fixture kills its session at teardown if it is still there)."""
    proc = subprocess.Popen([str(QUEUECTL), *args], stdin=subprocess.DEVNULL,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            env=queue.env, cwd=queue.workdir, start_new_session=True)
    queue.popens.append(proc)
    queue.known_pids.add(proc.pid)
    return proc


def finish(proc: subprocess.Popen[bytes], timeout: float) -> tuple[str, str]:
    out, err = proc.communicate(timeout=timeout)
    return out.decode(), err.decode()
