"""Ending what an attempt left behind outside its process group.

A command can leave its process group and session (``setsid``, a double
fork), so that killing the group misses it. A worker is a child subreaper
(:func:`queuectl_core.worker.procs.become_subreaper`): once the command's
shell has exited, every such process is a child of the worker, or a
descendant of one. :func:`end_strays` SIGKILLs them with their descendants
and reaps them. In any other process (not a subreaper) it does nothing, so
that embedding the executor never touches the embedder's own children.

The usual case costs one system call: a worker with no child at all has
nothing to end. Linux only (``/proc``).
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from collections.abc import Collection

from queuectl_core.executor import OTHER_CHILDREN
from queuectl_core.worker.procs import is_subreaper

from .process import proc_stats

#: How long end_strays() goes on reaping (a process in uninterruptible
#: sleep dies late; a fork bomb is bounded by it).
STRAY_SECONDS = 2.0
_WAIT_SLICE = 0.01


def _tree() -> dict[int, list[int]]:
    """ppid -> pids of every process on this machine (from /proc)."""
    children: dict[int, list[int]] = {}
    for pid, fields in proc_stats() or ():
        if len(fields) >= 2:
            children.setdefault(int(fields[1]), []).append(pid)
    return children


def _a_dlq_handlers(pid: int) -> bool:
    """Does ``pid`` come from a DLQ handler (``QUEUECTL_EVENT`` in its
    environment, no job attempt), which the command notifier watches itself?"""
    try:
        with open(f"/proc/{pid}/environ", "rb") as fh:
            entries = fh.read().split(b"\0")
    except OSError:
        return False
    return (any(e.startswith(b"QUEUECTL_EVENT=") for e in entries)
            and not any(e.startswith(b"QUEUECTL_ATTEMPT=") for e in entries))


def _has_children() -> bool:
    try:
        os.waitid(os.P_ALL, 0, os.WEXITED | os.WNOHANG | os.WNOWAIT)
    except ChildProcessError:
        return False
    except (AttributeError, OSError):
        pass
    return True


def end_strays(keep: Collection[int]) -> int:
    """SIGKILL and reap this worker's children outside ``keep`` (running
    commands' shells) and :data:`OTHER_CHILDREN`, with all their
    descendants; returns how many processes were ended."""
    if not _has_children() or not is_subreaper():
        return 0
    me = os.getpid()
    ended: set[int] = set()
    deadline = time.monotonic() + STRAY_SECONDS
    while time.monotonic() < deadline:
        tree = _tree()
        roots = [pid for pid in tree.get(me, ()) if pid not in keep
                 and pid not in OTHER_CHILDREN and not _a_dlq_handlers(pid)]
        if not roots:
            break
        stack = list(roots)
        while stack:  # each root's whole tree; orphans of the killed come back to us
            pid = stack.pop()
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)
            ended.add(pid)
            stack.extend(tree.get(pid, ()))
        for pid in roots:
            with contextlib.suppress(ChildProcessError):
                if os.waitpid(pid, os.WNOHANG)[0] == 0:
                    time.sleep(_WAIT_SLICE)  # not dead yet: look again
    return len(ended)
