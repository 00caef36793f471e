"""Processes on this machine: is a pid alive, killing a process group, and
finding a job's processes by their environment.

Every attempt's command carries ``QUEUECTL_JOB_ID``, ``QUEUECTL_ATTEMPT``
(unique within the job) and ``QUEUECTL_WORKER_ID`` (unique to its worker:
another queue on the machine may run a job of the same id and attempt) in
its environment, and so does everything it starts. When a worker dies
before it could record its command's process group (it is SIGKILLed right
after starting the command), this is how the command is still found and
killed before the job runs again; and a recorded group is killed only if it
is still that command's (pids are reused). Linux only (``/proc``);
elsewhere nothing is found.
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


def job_process_groups(job_id: str, attempt: int, worker_id: str) -> set[int]:
    """Process groups of the processes whose environment names this job,
    attempt and worker (never our own group, nor groups 0 and 1)."""
    want_job = b"QUEUECTL_JOB_ID=" + os.fsencode(job_id)
    want_attempt = b"QUEUECTL_ATTEMPT=" + str(attempt).encode()
    want_worker = b"QUEUECTL_WORKER_ID=" + os.fsencode(worker_id)
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
            if want_job in environ and want_attempt in environ and want_worker in environ:
                pgid = os.getpgid(int(name))
                if pgid > 1 and pgid != own:
                    groups.add(pgid)
        except (OSError, ValueError):
            continue  # gone meanwhile, or not ours to read
    return groups


def is_workers_group(pgid: int | None, worker_id: str) -> bool:
    """Is ``pgid`` still a group that the worker ``worker_id`` started (its
    leader carries ``QUEUECTL_WORKER_ID``)? False for a reused pid, a group
    whose leader is gone, or without /proc."""
    if not pgid or pgid <= 1:
        return False
    try:
        with open(f"/proc/{pgid}/environ", "rb") as fh:
            environ = fh.read().split(b"\0")
    except OSError:
        return False
    return b"QUEUECTL_WORKER_ID=" + os.fsencode(worker_id) in environ
