"""The shell executor's processes: the child's handle (posix_spawn or
Popen), signalling a whole process group and telling whether it is gone."""

from __future__ import annotations

import os
import signal
from typing import Protocol


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
    try:
        names = os.listdir("/proc")
    except OSError:
        return True
    for name in names:
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat", "rb") as fh:
                fields = fh.read().rpartition(b")")[2].split()
        except OSError:
            continue
        # After the command name: state, ppid, pgrp, ...
        if len(fields) >= 3 and fields[2] == str(pgid).encode() and fields[0] != b"Z":
            return True
    return False
