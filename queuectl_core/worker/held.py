"""A worker's *held files*: what a busy worker holds that the store does not
know yet (docs/semantics.md, "Claiming ahead"), so that a crash of the
worker costs neither an attempt nor a result.

A busy worker claims its next jobs while a command runs, starts them without
writing to the store again, and records finished jobs' results in batches.
The store therefore cannot tell a job claimed ahead from one whose command
ran, nor a job whose command finished from one still running. Without help,
recovery would charge every claim of a dead worker an attempt (``lost``) and
run every finished job whose result was not recorded again. Two files per
worker, in ``$QUEUECTL_HOME/run/held/``, tell them apart on this machine:

``<worker id>``: the claims held ahead whose commands have not started, one
JSON array ``[claim token, job id]`` per line. The worker rewrites it
whenever that set changes, and always *before* it starts one of them, so a
claim listed there never started. It is written with a single ``pwrite`` at
offset 0, padded with newlines to the longest content written so far, so that
a reader after the process died sees either the old list or the new one.

``<worker id>.results``: the results not recorded yet, one JSON object per
line, appended (``O_APPEND``, one ``write``) when a command ends and emptied
once a batch of them is committed. A line names the claim and holds what the
store needs to record it (exit code, signal, error, retry time, start and end
times; not the output tails, which stay in the attempt's files on this
machine).

When a worker is found dead on this machine, :func:`recover_held` records the
results listed (fenced by their claim tokens: a result committed before the
crash changes nothing), gives back the claims listed uncharged
(``Ledger.release``), then removes both files; recovery then charges what
is left as usual: the command that was running. Neither file is fsynced:
page-cache writes outlive the process, and after a machine crash the old,
charged behaviour applies. An optimisation of attempts and reruns, never of
correctness.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from ..config import ensure_private_dir
from ..ledger import Ledger
from ..models import Claim, ExecResult, Job, JobState, Outcome
from ..safefs import open_below

log = logging.getLogger("queuectl.worker")

#: Longest error text kept for a result in the results file.
MAX_ERROR_CHARS = 4000


def held_dir(home: Path) -> Path:
    return home / "run" / "held"


def held_path(directory: Path, worker_id: str) -> Path:
    # Worker ids are host:pid:hex; a host name never holds a "/".
    return directory / worker_id.replace("/", "_")


def results_path(directory: Path, worker_id: str) -> Path:
    held = held_path(directory, worker_id)
    return held.with_name(held.name + ".results")


class HeldFile:
    """The held files of one running worker."""

    def __init__(self, directory: Path, worker_id: str) -> None:
        ensure_private_dir(directory)
        self.path = held_path(directory, worker_id)
        self.results = results_path(directory, worker_id)
        # Never through a symbolic link (the files, ``run`` nor ``held``).
        base, parts = directory.parent.parent, [directory.parent.name, directory.name]
        flags = os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC
        self._fd = open_below(base, [*parts, self.path.name], os.O_RDWR | flags)
        try:
            self._results_fd = open_below(base, [*parts, self.results.name],
                                          os.O_WRONLY | os.O_APPEND | flags)
        except OSError:
            os.close(self._fd)
            raise
        self._size = 0
        self._results_size = 0
        #: Each listed claim's line, by token (the worker rewrites the file
        #: before every start: encode each claim once).
        self._lines: dict[str, bytes] = {}

    def write(self, claims: Iterable[Claim]) -> None:
        """Replace the list of claims held ahead with ``claims`` (one write
        system call)."""
        lines = {c.token: self._lines.get(c.token)
                 or (json.dumps([c.token, c.job.id]) + "\n").encode() for c in claims}
        self._lines = lines
        padded = b"".join(lines.values()).ljust(self._size, b"\n")
        os.pwrite(self._fd, padded, 0)
        self._size = len(padded)

    def add_result(self, outcome: Outcome) -> None:
        """Append a result that is not recorded yet (one write system call)."""
        claim, result = outcome.claim, outcome.result
        error = result.error
        if error is not None and len(error) > MAX_ERROR_CHARS:
            error = error[:MAX_ERROR_CHARS]
        line = json.dumps({
            "token": claim.token, "job": claim.job.id, "attempt": claim.attempt,
            "exit_code": result.exit_code, "signal": result.signal, "error": error,
            "retry_at": outcome.retry_at, "finished_at": outcome.finished_at,
            "started_at": outcome.started_at,
        }) + "\n"
        data = line.encode("utf-8", "surrogateescape")
        os.write(self._results_fd, data)
        self._results_size += len(data)

    def clear_results(self) -> None:
        """Every result listed is recorded: empty the results file."""
        if self._results_size:
            os.ftruncate(self._results_fd, 0)
            self._results_size = 0

    def close(self) -> None:
        """Close and remove the files (a clean exit holds nothing)."""
        for attr, path in (("_fd", self.path), ("_results_fd", self.results)):
            fd = getattr(self, attr)
            if fd >= 0:
                os.close(fd)
                setattr(self, attr, -1)
                with contextlib.suppress(OSError):
                    path.unlink()


def held_workers(directory: Path) -> list[str]:
    """The ids of the workers that have held files in ``directory``."""
    try:
        names = os.listdir(directory)
    except OSError:
        return []
    suffix = ".results"
    return sorted({name[:-len(suffix)] if name.endswith(suffix) else name for name in names})


def _lines(path: Path) -> list[Any]:
    """The JSON value of each line of ``path`` (none if there is no file);
    a line that does not parse (torn by a machine crash) is skipped."""
    try:
        text = path.read_text("utf-8", "surrogateescape")
    except OSError:
        return []
    values = []
    for line in text.splitlines():
        if line.strip():
            with contextlib.suppress(ValueError):
                values.append(json.loads(line))
    return values


def read_held(path: Path) -> list[tuple[str, str]]:
    """``(token, job id)`` of each claim listed in a held file."""
    return [(v[0], v[1]) for v in _lines(path)
            if isinstance(v, list) and len(v) == 2 and all(isinstance(x, str) for x in v)]


def read_results(path: Path) -> list[dict[str, Any]]:
    """The results listed in a results file, each as written by add_result."""
    return [v for v in _lines(path)
            if isinstance(v, dict) and isinstance(v.get("token"), str)
            and isinstance(v.get("job"), str)]


def _claim_of(storage: Ledger, job_id: str, token: str, worker_id: str, attempt: int,
              now: int) -> Claim | None:
    """The worker's claim on ``job_id``, if the job is still processing under
    that worker (the token fences the rest)."""
    job = storage.get(job_id)
    if job is None or job.state is not JobState.PROCESSING or job.worker_id != worker_id:
        return None
    return Claim(job=job, token=token, worker_id=worker_id, attempt=attempt,
                 lease_expires_at=job.lease_expires_at or now)


def _int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def recover_held(storage: Ledger, directory: Path | None, worker_id: str,
                 now: int) -> tuple[list[Job], list[Job]]:
    """The worker ``worker_id`` of this machine is gone: record the results
    its results file lists, give back uncharged the claims its held file
    lists, then remove both files. Returns the jobs whose results were
    recorded and the jobs given back (``pending``, ``failed`` or
    ``cancelled``). A result or claim that is no longer the worker's changes
    nothing."""
    if directory is None:
        return [], []
    held, results = held_path(directory, worker_id), results_path(directory, worker_id)
    outcomes = []
    for line in read_results(results):
        attempt = _int(line.get("attempt")) or 0
        claim = _claim_of(storage, line["job"], line["token"], worker_id, attempt, now)
        if claim is None:
            continue
        error = line.get("error")
        outcomes.append(Outcome(
            claim=claim,
            result=ExecResult(exit_code=_int(line.get("exit_code")),
                              signal=_int(line.get("signal")),
                              error=error if isinstance(error, str) else None),
            retry_at=_int(line.get("retry_at")), finished_at=_int(line.get("finished_at")),
            started_at=_int(line.get("started_at"))))
    recorded: list[Job] = []
    if outcomes:
        dones, _ = storage.record_and_claim(outcomes, now, worker_id=worker_id, lease_ms=0,
                                            limit=0)
        recorded = [job for job in dones if job is not None]
        for job in recorded:
            log.info("recorded the result of job %s (%s), left by worker %s, which is gone",
                     job.id, job.state.value, worker_id)
    released: list[Job] = []
    for token, job_id in read_held(held):
        claim = _claim_of(storage, job_id, token, worker_id, 0, now)
        if claim is None:
            continue
        back = storage.release(claim, now)
        if back is not None:
            log.info("gave back job %s, claimed ahead by worker %s, which is gone; its "
                     "command never started", job_id, worker_id)
            released.append(back)
    for path in (held, results):
        with contextlib.suppress(OSError):
            path.unlink()
    return recorded, released


def running_jobs(storage: Ledger, directory: Path, hostname: str, pids: Iterable[int]
                 ) -> list[str]:
    """The ids of the jobs whose commands the workers ``pids`` of this
    machine are running: their ``processing`` jobs, less the claims their
    held files list (held ahead, or finished and not recorded yet). For
    messages while a stop waits; it may be stale when it returns."""
    prefixes = tuple(f"{hostname}:{pid}:" for pid in pids)
    if not prefixes:
        return []
    mine = [job for job in storage.list_jobs(JobState.PROCESSING)
            if job.worker_id is not None and job.worker_id.startswith(prefixes)]
    not_running: set[str] = set()
    for worker_id in {job.worker_id for job in mine if job.worker_id is not None}:
        not_running.update(token for token, _ in read_held(held_path(directory, worker_id)))
        not_running.update(line["token"]
                           for line in read_results(results_path(directory, worker_id)))
    return [job.id for job in mine if job.claim_token not in not_running]
