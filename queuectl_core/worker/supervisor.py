"""Running a group of worker processes, and finding and stopping groups
from any terminal.

``worker run --count N`` is a supervisor in the foreground; ``worker start``
starts the same supervisor detached (its own session, output to
``$QUEUECTL_HOME/logs/workers.log``). The supervisor writes
``$QUEUECTL_HOME/run/supervisor-<pid>.json`` listing itself and its workers;
``worker stop`` reads those files and signals the supervisors.

Workers run in their own process group, so Ctrl-C at the terminal reaches
only the supervisor, which forwards one SIGTERM per signal it gets: the
first asks workers to finish their job and exit, the second forces them.
A worker whose supervisor disappears (SIGKILL) notices that its parent
changed and stops on its own.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from ..config import ensure_private_dir
from ..errors import DISK_FULL_ERRNOS, STORE_DAMAGED_EXIT
from ..safefs import open_below, write_atomic
from .procs import kill_group, pid_alive
from .signals import StopSignal

log = logging.getLogger("queuectl.supervisor")

#: A worker that exits this soon after starting counts towards crash looping.
QUICK_EXIT_S = 5.0
MAX_RESTART_DELAY_S = 30.0
#: How soon a run file that could not be written (a full disk) is tried again.
RUN_FILE_RETRY_S = 5


def run_dir(home: Path) -> Path:
    return ensure_private_dir(home / "run")


@dataclass(frozen=True)
class GroupRecord:
    """The contents of a supervisor's run file."""

    pid: int
    hostname: str
    started_at: float
    workers: list[int]
    path: Path

    def supervisor_alive(self) -> bool:
        return _alive(self.pid)

    def live_pids(self) -> list[int]:
        """The supervisor and its workers that are still running (workers
        outlive a killed supervisor until they finish their job)."""
        return [p for p in (self.pid, *self.workers) if _alive(p)]


def _alive(pid: int) -> bool:
    """Is ``pid`` a running queuectl process? Guards against zombies (which
    still answer kill 0) and, on Linux, against PID reuse."""
    if not pid_alive(pid):
        return False
    proc = Path(f"/proc/{pid}")
    if not Path("/proc/self").exists():
        return True
    try:
        stat = (proc / "stat").read_text()
        cmdline = (proc / "cmdline").read_bytes()
    except FileNotFoundError:
        return False
    except OSError:
        return True
    if stat.rsplit(")", 1)[-1].split()[0] in ("Z", "X"):
        return False
    # An empty command line is a process in the middle of exec: count it.
    return not cmdline or b"queuectl" in cmdline


def read_groups(home: Path) -> list[GroupRecord]:
    """Every worker group recorded under ``home`` on this host with a
    process still running; files of groups that are wholly gone are
    removed."""
    records: list[GroupRecord] = []
    directory = home / "run"
    if not directory.is_dir():
        return records
    host = socket.gethostname()
    for path in sorted(directory.glob("supervisor-*.json")):
        try:
            data = json.loads(path.read_text())
            record = GroupRecord(pid=int(data["pid"]), hostname=str(data["hostname"]),
                                 started_at=float(data["started_at"]),
                                 workers=[int(p) for p in data["workers"]], path=path)
        except (OSError, ValueError, KeyError, TypeError):
            continue
        if record.hostname != host:
            continue
        if record.live_pids():
            records.append(record)
        else:
            with contextlib.suppress(OSError):
                path.unlink()
    return records


def _write_json_atomic(path: Path, data: object) -> None:
    # Relative to the home, following no symbolic link (``run`` nor the file).
    write_atomic(path.parent.parent, [path.parent.name, path.name], json.dumps(data))


class Supervisor:
    """Keeps ``count`` worker processes running until asked to stop."""

    def __init__(self, *, home: Path, count: int, child_argv: list[str],
                 on_worker_crash: Callable[[int], None] | None = None,
                 on_stop: Callable[[int, list[int]], None] | None = None) -> None:
        self.home = home
        #: Called with the number of the stop signal (1: finish, 2: force)
        #: and the workers' pids, once the signal is forwarded to them.
        self.on_stop = on_stop
        self.count = count
        self.child_argv = child_argv
        self.on_worker_crash = on_worker_crash
        self.stop = StopSignal()
        self.children: dict[int, tuple[subprocess.Popen[bytes], float]] = {}
        self.run_file = run_dir(home) / f"supervisor-{os.getpid()}.json"
        self._restart_delay = 0.0
        self._restarts_due = 0
        self._restart_at = 0.0
        self._forwarded = 0
        #: The run file must be written again (after a restart), not before then.
        self._run_file_due = False
        self._run_file_at = 0.0
        #: What wait() returns: 1 once a worker found the store damaged.
        self.exit_code = 0

    def _spawn(self) -> int:
        proc = subprocess.Popen(
            [*self.child_argv, "--parent-pid", str(os.getpid())],
            stdin=subprocess.DEVNULL,
            process_group=0,  # Ctrl-C at the terminal reaches the supervisor only
        )
        self.children[proc.pid] = (proc, time.monotonic())
        return proc.pid

    def _write_run_file(self) -> None:
        _write_json_atomic(self.run_file, {
            "pid": os.getpid(), "hostname": socket.gethostname(), "started_at": time.time(),
            "workers": sorted(self.children),
        })

    def start(self) -> list[int]:
        self.stop.install()
        signal.signal(signal.SIGCHLD, lambda *_: None)  # wakes the loop through the pipe
        pids = [self._spawn() for _ in range(self.count)]
        self._write_run_file()
        return pids

    def _forward_stop(self) -> None:
        while self._forwarded < self.stop.count:
            self._forwarded += 1
            for proc, _ in self.children.values():
                with contextlib.suppress(ProcessLookupError):
                    proc.send_signal(signal.SIGTERM)
            if self.on_stop is not None and self._forwarded <= 2:
                try:
                    self.on_stop(self._forwarded, sorted(self.children))
                except Exception as exc:  # a message: never in the way of stopping
                    log.warning("could not tell which jobs are running: %s", exc)

    def _reap(self) -> None:
        for pid, (proc, started) in list(self.children.items()):
            code = proc.poll()
            if code is None:
                continue
            del self.children[pid]
            if code == STORE_DAMAGED_EXIT:
                # Its error is in the log above. Every worker would fail alike:
                # stop the group instead of restarting them in a loop.
                log.error("worker pid %d stopped: the store is damaged; stopping every worker "
                          "of this group (repair or restore it, then start them again)", pid)
                self.exit_code = 1
                if not self.stop.graceful:
                    self.stop.request()
                continue
            if code != 0:
                log.warning("worker pid %d exited unexpectedly (%s)", pid,
                            f"signal {-code}" if code < 0 else f"exit code {code}")
                if self.on_worker_crash is not None:
                    try:
                        self.on_worker_crash(pid)
                    except Exception as exc:
                        log.error("could not release the jobs of worker pid %d: %s", pid, exc)
            if self.stop.graceful:
                continue
            # Restart later, never sleeping here: every other dead worker
            # must be reaped and released now, whatever the back-off.
            quick = time.monotonic() - started < QUICK_EXIT_S
            self._restart_delay = (min(MAX_RESTART_DELAY_S, max(0.5, self._restart_delay * 2))
                                   if quick else 0.0)
            self._restarts_due += 1
            self._restart_at = max(self._restart_at, time.monotonic() + self._restart_delay)

    def _restart(self) -> None:
        """Start the workers that died, once their crash-loop back-off is over."""
        if self._restarts_due and not self.stop.graceful and time.monotonic() >= self._restart_at:
            for _ in range(self._restarts_due):
                self._spawn()
            self._restarts_due = 0
            self._run_file_due = True
        if self._run_file_due and time.monotonic() >= self._run_file_at:
            try:
                self._write_run_file()
            except OSError as exc:
                # A full disk must not end the supervisor: keep the workers
                # running and try again (the file names them for worker stop).
                what = "disk full" if exc.errno in DISK_FULL_ERRNOS else exc.strerror
                log.warning("cannot update %s (%s); trying again in %d s", self.run_file, what,
                            RUN_FILE_RETRY_S)
                self._run_file_at = time.monotonic() + RUN_FILE_RETRY_S
            else:
                self._run_file_due = False

    def _sleep_time(self) -> float:
        due = [at for at, pending in ((self._restart_at, self._restarts_due),
                                      (self._run_file_at, self._run_file_due)) if pending]
        if due and not self.stop.graceful:
            return max(0.0, min(0.5, min(due) - time.monotonic()))
        return 0.5

    def wait(self) -> int:
        """Supervise until stopped and every worker has exited."""
        try:
            while True:
                self._forward_stop()
                self._reap()
                self._restart()
                if self.stop.graceful and not self.children:
                    return self.exit_code
                self.stop.sleep(self._sleep_time())
        finally:
            with contextlib.suppress(OSError):
                self.run_file.unlink()


def spawn_detached(argv: list[str], log_path: Path) -> subprocess.Popen[bytes]:
    """Start ``argv`` in a new session, detached from the caller's terminal
    and output (so a pipe on the caller's stdout closes when it returns)."""
    # Following no symbolic link below the home (``logs`` nor the file).
    fd = open_below(log_path.parent.parent, [log_path.parent.name, log_path.name],
                    os.O_WRONLY | os.O_CREAT | os.O_APPEND)
    try:
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=fd, stderr=fd,
                                start_new_session=True, close_fds=True)
    finally:
        os.close(fd)
    return proc


def wait_for_group(home: Path, proc: subprocess.Popen[bytes], count: int,
                   timeout: float) -> GroupRecord | None:
    """Wait until the supervisor we just started has written its run file;
    None if it exited or the time ran out."""
    deadline = time.monotonic() + timeout
    path = home / "run" / f"supervisor-{proc.pid}.json"
    while time.monotonic() < deadline:
        if path.exists():
            for record in read_groups(home):
                if record.pid == proc.pid and len(record.workers) >= count:
                    return record
        if proc.poll() is not None:
            return None
        time.sleep(0.02)
    return None


class _Progress:
    """Echoes what a stop waits for, whenever that changes."""

    def __init__(self, echo: Callable[[str], None],
                 waiting_for: Callable[[list[int]], str | None] | None,
                 workers: list[int]) -> None:
        self.echo, self.waiting_for, self.workers = echo, waiting_for, workers
        self.said: str | None = None

    def __call__(self) -> None:
        if self.waiting_for is None:
            return
        try:
            what = self.waiting_for(self.workers)
        except Exception as exc:  # a message: never in the way of stopping
            log.debug("could not tell which jobs are running: %s", exc)
            return
        if what is not None and what != self.said:
            self.echo(what)
        self.said = what


def stop_groups(groups: list[GroupRecord], timeout: float,
                on_forced: Callable[[list[int]], None],
                echo: Callable[[str], None],
                waiting_for: Callable[[list[int]], str | None] | None = None) -> None:
    """Ask each supervisor to stop gracefully; after ``timeout`` force them;
    as a last resort SIGKILL what is left and let ``on_forced`` release the
    jobs of the killed workers. While it waits, ``waiting_for`` (given the
    workers' pids) says what for: each new answer is echoed."""
    tell = _Progress(echo, waiting_for, [p for g in groups for p in g.workers])

    def remaining() -> list[int]:
        return [p for g in groups for p in g.live_pids()]

    def signal_groups() -> None:
        # A live supervisor forwards the signal to its workers; workers whose
        # supervisor was killed are signalled directly.
        for group in groups:
            targets = [group.pid] if group.supervisor_alive() else group.live_pids()
            for pid in targets:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGTERM)

    def wait_gone(seconds: float, telling: bool = False) -> bool:
        deadline = time.monotonic() + seconds
        tell_at = time.monotonic() + (0.3 if telling else seconds)  # a quick stop says nothing
        while time.monotonic() < deadline:
            if not remaining():
                return True
            if time.monotonic() >= tell_at:
                tell()
                tell_at = time.monotonic() + 1.0
            time.sleep(0.05)
        return not remaining()

    signal_groups()
    if wait_gone(timeout, telling=True):
        return
    echo(f"Workers still busy after {timeout:g}s; forcing them to stop "
         "(their jobs are released and will run again).")
    signal_groups()
    if wait_gone(10.0):
        return
    left = remaining()
    for pid in left:
        kill_group(pid)  # workers lead their own process group
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    on_forced([p for g in groups for p in g.workers])
    for group in groups:
        with contextlib.suppress(OSError):
            group.path.unlink()


def configure_logging(verbose: bool = False) -> None:
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s [%(process)d] %(message)s",
        stream=sys.stderr,
    )
