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
import ctypes
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


#: prctl(2) options: orphaned descendants are reparented to the nearest
#: ancestor that set this, instead of init.
_PR_SET_CHILD_SUBREAPER = 36
_PR_GET_CHILD_SUBREAPER = 37
#: pid -> is that process a child subreaper (asked once per process).
_SUBREAPER: dict[int, bool] = {}


def _prctl(option: int, arg: object) -> int:
    libc = ctypes.CDLL(None, use_errno=True)
    result: int = libc.prctl(option, arg, 0, 0, 0)
    return result


def become_subreaper() -> bool:
    """Make this process (a worker) a child subreaper: what its commands
    start and leave behind, even outside their process group and session
    (``setsid``, a double fork), becomes its child when orphaned, so that the
    executor can kill it when the attempt ends. False where Linux's prctl is
    missing."""
    try:
        done = _prctl(_PR_SET_CHILD_SUBREAPER, 1) == 0
    except (OSError, AttributeError):
        done = False
    _SUBREAPER[os.getpid()] = done
    return done


def is_subreaper() -> bool:
    """Is this process a child subreaper (:func:`become_subreaper`)?"""
    pid = os.getpid()
    if pid not in _SUBREAPER:
        try:
            flag = ctypes.c_int(0)
            _SUBREAPER[pid] = (_prctl(_PR_GET_CHILD_SUBREAPER, ctypes.byref(flag)) == 0
                               and flag.value != 0)
        except (OSError, AttributeError):
            _SUBREAPER[pid] = False
    return _SUBREAPER[pid]


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
        environ = environ_of(int(name)) or []
        try:
            if want_job in environ and want_attempt in environ and want_worker in environ:
                pgid = os.getpgid(int(name))
                if pgid > 1 and pgid != own:
                    groups.add(pgid)
        except (OSError, ValueError):
            continue  # gone meanwhile, or not ours to read
    return groups


def environ_of(pid: int) -> list[bytes] | None:
    """The environment of process ``pid`` (``NAME=value`` entries), or None
    if it is gone or not ours to read."""
    try:
        with open(f"/proc/{pid}/environ", "rb") as fh:
            return fh.read().split(b"\0")
    except OSError:
        return None


def is_workers_group(pgid: int | None, worker_id: str, job_id: str | None = None) -> bool:
    """Is ``pgid`` still a group that the worker ``worker_id`` started (its
    leader carries ``QUEUECTL_WORKER_ID``, and ``QUEUECTL_JOB_ID`` when
    ``job_id`` is given)? False for a reused pid, a group whose leader is
    gone, or without /proc."""
    if not pgid or pgid <= 1:
        return False
    environ = environ_of(pgid) or []
    wanted = [b"QUEUECTL_WORKER_ID=" + os.fsencode(worker_id)]
    if job_id is not None:
        wanted.append(b"QUEUECTL_JOB_ID=" + os.fsencode(job_id))
    return all(entry in environ for entry in wanted)
