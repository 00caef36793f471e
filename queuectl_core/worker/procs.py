"""Processes on this machine: is a pid alive, killing a process group, and
finding a job's processes by their environment.

Every attempt's command carries ``QUEUECTL_JOB_ID`` and ``QUEUECTL_ATTEMPT``
(unique within the job) in its environment, and so does everything it
starts. When a worker dies before it could record its command's process
group (it is SIGKILLed right after starting the command), this is how the
command is still found and killed before the job runs again. Linux only
(``/proc``); elsewhere nothing is found.
"""

from __future__ import annotations

import contextlib
import os
import signal


def pid_alive(pid: int) -> bool:
    """Does a process with this pid exist (ours to signal or not)?"""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def kill_group(pgid: int | None, sig: int = signal.SIGKILL) -> None:
    """Signal a whole process group; nothing for no group, 0 or 1."""
    if not pgid or pgid <= 1:
        return
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


def job_process_groups(job_id: str, attempt: int) -> set[int]:
    """Process groups of the processes whose environment names this job
    and attempt (never our own group, nor groups 0 and 1)."""
    want_job = b"QUEUECTL_JOB_ID=" + os.fsencode(job_id)
    want_attempt = b"QUEUECTL_ATTEMPT=" + str(attempt).encode()
    own = os.getpgrp()
    groups: set[int] = set()
    try:
        entries = os.listdir("/proc")
    except OSError:
        return groups
    for name in entries:
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/environ", "rb") as fh:
                environ = fh.read().split(b"\0")
            if want_job in environ and want_attempt in environ:
                pgid = os.getpgid(int(name))
                if pgid > 1 and pgid != own:
                    groups.add(pgid)
        except (OSError, ValueError):
            continue  # gone meanwhile, or not ours to read
    return groups
