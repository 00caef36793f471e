"""A worker's *held file*: the claims it holds ahead (docs/semantics.md,
"Claiming ahead") whose commands it has not started.

A busy worker claims its next jobs while a command runs and starts them
without writing to the store again, so the store cannot tell a job claimed
ahead from one whose command ran. If the worker dies, recovery would charge
every such claim an attempt (``lost``) although most never ran. The held
file tells them apart on this machine: the worker rewrites it whenever the
set of claims held ahead changes, and always *before* it starts one of
them, so a claim listed there never started. When the worker is found dead,
the jobs listed are given back uncharged (``Storage.release``); the rest of
what it held is recovered as usual, charged.

The file is ``$QUEUECTL_HOME/run/held/<worker id>``, one JSON array
``[claim token, job id]`` per line, written with a single ``pwrite`` at
offset 0 and padded with newlines to the longest content written so far,
so that a reader after the process died sees either the old list or the new
one (page-cache writes outlive the process; a machine crash may lose them,
and then the claims are charged as before). No fsync: this is an
optimisation of the retry count, never of correctness.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
from collections.abc import Iterable
from pathlib import Path

from .config import ensure_private_dir
from .models import Claim, Job, JobState
from .storage import Storage

log = logging.getLogger("queuectl.worker")


def held_dir(home: Path) -> Path:
    return home / "run" / "held"


def held_path(directory: Path, worker_id: str) -> Path:
    # Worker ids are host:pid:hex; a host name never holds a "/".
    return directory / worker_id.replace("/", "_")


class HeldFile:
    """The held file of one running worker."""

    def __init__(self, directory: Path, worker_id: str) -> None:
        ensure_private_dir(directory)
        self.path = held_path(directory, worker_id)
        self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
        self._size = 0
        #: Each listed claim's line, by token (the worker rewrites the file
        #: before every start: encode each claim once).
        self._lines: dict[str, bytes] = {}

    def write(self, claims: Iterable[Claim]) -> None:
        """Replace the list with ``claims`` (one write system call)."""
        lines = {c.token: self._lines.get(c.token)
                 or (json.dumps([c.token, c.job.id]) + "\n").encode() for c in claims}
        self._lines = lines
        padded = b"".join(lines.values()).ljust(self._size, b"\n")
        os.pwrite(self._fd, padded, 0)
        self._size = len(padded)

    def close(self) -> None:
        """Close and remove the file (a clean exit holds nothing ahead)."""
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1
            with contextlib.suppress(OSError):
                self.path.unlink()


def read_held(path: Path) -> list[tuple[str, str]]:
    """``(token, job id)`` of each claim listed; nothing if there is no file.
    A line that does not parse is skipped: its claim is then charged."""
    try:
        text = path.read_text("utf-8", "replace")
    except OSError:
        return []
    held: list[tuple[str, str]] = []
    for line in text.splitlines():
        if not line.strip():
            continue
        try:
            token, job_id = json.loads(line)
        except (ValueError, TypeError):
            continue
        if isinstance(token, str) and isinstance(job_id, str):
            held.append((token, job_id))
    return held


def give_back_unstarted(storage: Storage, directory: Path | None, worker_id: str,
                        now: int) -> list[Job]:
    """The worker ``worker_id`` of this machine is gone: give back, uncharged,
    the claims its held file lists (each is fenced by its token, so one that
    is no longer its claim changes nothing), then remove the file. Returns
    the jobs given back (now ``pending``, ``failed`` or ``cancelled``)."""
    if directory is None:
        return []
    path = held_path(directory, worker_id)
    released: list[Job] = []
    for token, job_id in read_held(path):
        job = storage.get(job_id)
        if job is None or job.state is not JobState.PROCESSING or job.worker_id != worker_id:
            continue
        claim = Claim(job=job, token=token, worker_id=worker_id, attempt=job.attempts,
                      lease_expires_at=job.lease_expires_at or now)
        try:
            back = storage.release(claim, now)
        except NotImplementedError:
            break
        if back is not None:
            log.info("gave back job %s, claimed ahead by worker %s, which is gone; its "
                     "command never started", job_id, worker_id)
            released.append(back)
    with contextlib.suppress(OSError):
        path.unlink()
    return released
