"""The shell executor's processes: the child's handle (posix_spawn or
Popen), signalling a whole process group and telling whether it is gone."""

from __future__ import annotations

import os
import signal
import subprocess
from typing import Protocol

#: Signals Python ignores at start-up, which a command must not inherit
#: ignored (subprocess's ``restore_signals`` resets the same ones).
_RESTORED_SIGNALS = tuple(getattr(signal, name) for name in ("SIGPIPE", "SIGXFZ", "SIGXFSZ")
                          if hasattr(signal, name))
#: Start commands with posix_spawn (half the cost of subprocess.Popen here).
_POSIX_SPAWN = hasattr(os, "posix_spawnp") and hasattr(os, "POSIX_SPAWN_DUP2")


def _inheritable_fds() -> list[int]:
    """This process's descriptors above 2 that a child would inherit (most
    are close-on-exec: Python opens them so)."""
    try:
        names = os.listdir("/proc/self/fd")
    except OSError:
        names = [str(fd) for fd in range(3, 256)]
    found = []
    for name in names:
        fd = int(name)
        if fd > 2:
            try:
                if os.get_inheritable(fd):
                    found.append(fd)
            except OSError:  # the listing's own descriptor, closed since
                pass
    return found


class _Child(Protocol):
    """What an execution needs of the shell's process (subprocess.Popen has it)."""

    pid: int

    def poll(self) -> int | None: ...

    def wait(self) -> int: ...


class _Spawned:
    """A child started with posix_spawn: its exit status, reaped like Popen's
    (negative: killed by that signal)."""

    __slots__ = ("pid", "returncode")

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.returncode: int | None = None

    def poll(self) -> int | None:
        if self.returncode is None:
            pid, status = os.waitpid(self.pid, os.WNOHANG)
            if pid:
                self.returncode = os.waitstatus_to_exitcode(status)
        return self.returncode

    def wait(self) -> int:
        if self.returncode is None:
            _, status = os.waitpid(self.pid, 0)
            self.returncode = os.waitstatus_to_exitcode(status)
        return self.returncode


def _signal_text(num: int) -> str:
    """``SIGKILL (9)``; unknown numbers as ``signal 42``."""
    try:
        return f"{signal.Signals(num).name} ({num})"
    except ValueError:
        return f"signal {num}"


def _signal_group(pgid: int, sig: int) -> bool:
    """Send ``sig`` to the process group; False if the group is gone."""
    try:
        os.killpg(pgid, sig)
    except ProcessLookupError:
        return False
    except PermissionError:  # a member we may not signal (e.g. setuid): nothing to do
        pass
    return True


def _group_running(pgid: int) -> bool:
    """Is a process of the group still running? Zombies count as gone: they
    wait for their new parent (init, which in some containers and VMs reaps
    late or never) and hold nothing. Without /proc, any member counts."""
    if not _signal_group(pgid, 0):
        return False
    stats = proc_stats()
    if stats is None:
        return True
    group = str(pgid).encode()
    # After the command name: state, ppid, pgrp, ...
    return any(len(fields) >= 3 and fields[2] == group and fields[0] != b"Z"
               for _, fields in stats)


def proc_stats() -> list[tuple[int, list[bytes]]] | None:
    """Every process on this machine with the fields of its ``/proc/PID/stat``
    after the command name (state, ppid, pgrp, ...); None without /proc."""
    try:
        names = os.listdir("/proc")
    except OSError:
        return None
    found = []
    for name in names:
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat", "rb") as fh:
                found.append((int(name), fh.read().rpartition(b")")[2].split()))
        except OSError:
            continue
    return found


def spawn(argv: list[str], cwd: str | None, env: dict[bytes, bytes],
          fds: tuple[int, int, int], here: int) -> _Child:
    """Start the shell as subprocess.Popen(argv, stdin=, stdout=, stderr=,
    cwd=, env=, close_fds=True, start_new_session=True) would, with
    posix_spawn when it can. posix_spawn cannot change directory: the
    worker (one thread) steps into ``cwd`` around the call and back by
    ``here``, a descriptor of its own directory, so an error names ``cwd``
    as Popen's does. Descriptors: the worker's are close-on-exec (Python's
    default); any made inheritable is closed in the child, so that it gets
    only 0, 1 and 2, as with close_fds."""
    stdin, stdout, stderr = fds
    if not _POSIX_SPAWN or min(fds) <= 2:
        return subprocess.Popen(argv, stdin=stdin, stdout=stdout, stderr=stderr, cwd=cwd,
                                env=env, close_fds=True, start_new_session=True)
    actions: list[tuple[int, ...]] = [
        (os.POSIX_SPAWN_DUP2, stdin, 0), (os.POSIX_SPAWN_DUP2, stdout, 1),
        (os.POSIX_SPAWN_DUP2, stderr, 2)]
    actions += [(os.POSIX_SPAWN_CLOSE, fd) for fd in _inheritable_fds()]
    if cwd is not None:
        os.chdir(cwd)
    try:
        pid = os.posix_spawnp(argv[0], argv, env, file_actions=actions, setsid=True,
                              setsigdef=_RESTORED_SIGNALS)
    finally:
        if cwd is not None:
            os.fchdir(here)
    return _Spawned(pid)
