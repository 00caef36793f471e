"""``queuectl logs``: an attempt's output, from its files on this machine or,
failing that, from the tails kept in the store; ``--follow`` streams it while
the attempt runs."""

from __future__ import annotations

import contextlib
import os
import socket
import sys
import time
from pathlib import Path
from typing import IO, TYPE_CHECKING

import click

from ..errors import JobNotFoundError, QueuectlError, TransientStorageError, UsageError
from .jobs import _stored_id
from .main import State, pass_state
from .output import note
from .stalls import StallNotes

if TYPE_CHECKING:
    from ..joblogs import Stream
    from ..ledger import Ledger as Storage
    from ..models import Attempt, Job

CHUNK = 65536
#: --follow: how often the files are polled when nothing new came, and how
#: often the store is asked whether the attempt still runs.
FILE_POLL_S = 0.1
STORE_POLL_S = 0.5
#: Longest a --follow copy loop runs before it polls the store again.
_MAX_SWITCHES = 4

_NAMES = {"out": "stdout", "err": "stderr"}


def _inode(path: Path) -> int | None:
    try:
        return os.stat(path).st_ino
    except OSError:
        return None


class Follower:
    """Copies one stream of an attempt to a sink as it grows, across the
    executor's rotations (the live file renamed to ``.1`` and a new one
    started): the file being read is always drained to its end before the
    next one is opened, and a rotated part that was never read (two
    rotations between polls) is read before the new live file."""

    def __init__(self, live: Path, sink: IO[bytes]) -> None:
        from ..joblogs import rotated_path

        self.live = live
        self.rotated = rotated_path(live)
        self.sink = sink
        self.fh: IO[bytes] | None = None
        self.ino: int | None = None

    def _open(self, path: Path) -> bool:
        from ..joblogs import open_for_reading

        try:
            fh = os.fdopen(open_for_reading(path), "rb")
        except OSError:
            return False
        ino = os.fstat(fh.fileno()).st_ino
        if ino == self.ino:  # the file we already read, under a new name
            fh.close()
            return False
        self.fh, self.ino = fh, ino
        return True

    def _drain(self) -> bool:
        assert self.fh is not None
        moved = False
        while data := self.fh.read(CHUNK):
            self.sink.write(data)
            moved = True
        if moved:
            self.sink.flush()
        return moved

    def pump(self) -> bool:
        """Copy what is new; True if anything was."""
        if self.fh is None and not (self._open(self.rotated) or self._open(self.live)):
            return False
        moved = False
        for _ in range(_MAX_SWITCHES):
            moved |= self._drain()
            live = _inode(self.live)
            if live is None or live == self.ino:
                return moved  # still the live file (or the new one is not there yet)
            moved |= self._drain()  # it was rotated away: take its last bytes
            rotated = _inode(self.rotated)
            old = self.fh
            if rotated is not None and rotated not in (self.ino, live) \
                    and self._open(self.rotated):
                pass  # rotated twice since the last look: that part first
            elif not self._open(self.live):
                return moved
            assert old is not None
            old.close()
        return moved

    def close(self) -> None:
        if self.fh is not None:
            self.fh.close()
            self.fh = None


def _sinks() -> dict[Stream, IO[bytes]]:
    return {"out": sys.stdout.buffer, "err": sys.stderr.buffer}


def _find_attempt(storage: Storage, job_id: str, number: int) -> Attempt | None:
    matches = [a for a in storage.attempts(job_id) if a.number == number]
    return matches[-1] if matches else None


def _wait_for_first_attempt(storage: Storage, job: Job, lease_ms: int) -> Attempt:
    """--follow on a job that has not run yet: wait for its first attempt
    (saying why it does not start, if nothing runs it)."""
    note(f"job {job.id} has not started yet ({job.state.value}); waiting for it to run")
    notes = StallNotes(storage, lease_ms)
    while True:
        time.sleep(STORE_POLL_S)
        try:
            attempts = storage.attempts(job.id)
            current = storage.get(job.id)
        except TransientStorageError:
            continue
        if attempts:
            return attempts[-1]
        if current is None:
            raise JobNotFoundError(job.id)
        notes.check([current])
        if current.state.value in ("completed", "dead", "cancelled", "skipped"):
            raise QueuectlError(f"job {job.id!r} ended {current.state.value} without running")


def _ran_here(attempt: Attempt) -> bool:
    """Did the attempt's worker run on this machine? Its id starts with the
    host name the worker saw (``host:pid:random``)."""
    from ..joblogs import worker_host

    return worker_host(attempt.worker_id) == socket.gethostname()


def _runs_here(storage: Storage, attempt: Attempt) -> bool:
    """Does the worker of a running attempt run on this machine?"""
    host = socket.gethostname()
    for w in storage.list_workers():
        if w.id == attempt.worker_id:
            return w.hostname == host
    return _ran_here(attempt)


def _print_tails(attempt: Attempt, streams: list[Stream], why: str) -> None:
    tails = {"out": attempt.stdout_tail, "err": attempt.stderr_tail}
    if all(tails[s] is None for s in streams):
        raise QueuectlError(f"no output of attempt {attempt.number} of job {attempt.job_id!r} "
                            f"is available here: {why}, and the store kept none")
    note(f"{why}; showing the end of its output kept in the store (output_tail_bytes "
         "per stream)")
    sinks = _sinks()
    for s in streams:
        text = tails[s]
        if text:
            data = text.encode("utf-8", errors="replace")
            sinks[s].write(data if data.endswith(b"\n") else data + b"\n")
            sinks[s].flush()


def _report_dropped(paths: dict[Stream, Path], streams: list[Stream]) -> None:
    from ..joblogs import dropped_bytes

    for s in streams:
        dropped = dropped_bytes(paths[s])
        if dropped:
            note(f"the first {dropped} bytes of this attempt's {_NAMES[s]} were dropped by "
                 "the size cap (output_max_bytes); the newest output follows")


def _follow(storage: Storage, attempt: Attempt, paths: dict[Stream, Path],
            streams: list[Stream]) -> None:
    sinks = _sinks()
    followers = [Follower(paths[s], sinks[s]) for s in streams]
    running = attempt.outcome == "running"
    check_at = time.monotonic() + STORE_POLL_S
    try:
        while True:
            moved = False
            for f in followers:
                moved |= f.pump()
            if not running and not moved:
                return  # finished, and everything written before that is out
            if running and time.monotonic() >= check_at:
                check_at = time.monotonic() + STORE_POLL_S
                with contextlib.suppress(TransientStorageError):
                    current = _find_attempt(storage, attempt.job_id, attempt.number)
                    running = current is not None and current.outcome == "running"
                if not running:
                    continue  # drain once more before stopping
            if not moved:
                time.sleep(FILE_POLL_S)
    finally:
        for f in followers:
            f.close()


def _await_end(storage: Storage, attempt: Attempt) -> Attempt:
    while attempt.outcome == "running":
        time.sleep(STORE_POLL_S)
        with contextlib.suppress(TransientStorageError):
            current = _find_attempt(storage, attempt.job_id, attempt.number)
            if current is None:
                raise QueuectlError(f"job {attempt.job_id!r} was purged")
            attempt = current
    return attempt


def _pick_attempt(storage: Storage, job: Job, number: int | None, follow: bool,
                  lease_ms: int) -> Attempt:
    """The attempt asked for: ``number``, else the last one, else (with
    --follow) the first one once it starts."""
    attempts = storage.attempts(job.id)
    if number is not None:
        matches = [a for a in attempts if a.number == number]
        if not matches:
            have = (f"its attempts are 1 to {attempts[-1].number}" if attempts
                    else "it has not run yet")
            raise QueuectlError(f"job {job.id!r} has no attempt {number} ({have})")
        return matches[-1]
    if attempts:
        return attempts[-1]
    if follow:
        return _wait_for_first_attempt(storage, job, lease_ms)
    raise QueuectlError(f"job {job.id!r} has not run yet ({job.state.value}); "
                        "there is no output")


def _shown_without_files(storage: Storage, attempt: Attempt, streams: list[Stream],
                         follow: bool) -> bool:
    """An attempt with no output files on this machine: print the tails kept
    in the store, or nothing, and say why. False if its worker runs here
    (its files are still to come)."""
    if attempt.outcome != "running":
        if not _ran_here(attempt):
            why = (f"the output files of attempt {attempt.number} are not on this "
                   "machine (it ran on another one, or they were removed)")
        elif attempt.stdout_tail or attempt.stderr_tail:
            why = (f"the output files of attempt {attempt.number} were removed from "
                   "this machine")
        else:
            return True  # it ran here and wrote nothing: there is nothing to print
        _print_tails(attempt, streams, why)
        return True
    if _runs_here(storage, attempt):
        return False
    what = f"attempt {attempt.number} runs on another machine (worker {attempt.worker_id})"
    if not follow:
        note(f"{what}; its output is there, and its end is kept in the store when it "
             "finishes")
        return True
    note(f"{what}; its output is shown when it finishes")
    _print_tails(_await_end(storage, attempt), streams,
                 f"attempt {attempt.number} ran on another machine")
    return True


@click.command()
@click.argument("job_id", metavar="ID")
@click.option("--attempt", "-a", "number", type=click.IntRange(min=1), metavar="N",
              help="Which attempt (default: the last one; numbers as in 'show').")
@click.option("--stdout", "only_stdout", is_flag=True, help="Only the job's stdout.")
@click.option("--stderr", "only_stderr", is_flag=True, help="Only the job's stderr.")
@click.option("--follow", "-f", is_flag=True,
              help="Keep printing new output until the attempt ends (Ctrl-C stops).")
@pass_state
def logs(state: State, job_id: str, number: int | None, only_stdout: bool, only_stderr: bool,
         follow: bool) -> None:
    """Print the output of a job's attempt: the job's stdout on stdout and
    its stderr on stderr (like 'docker logs'), unless --stdout or --stderr
    picks one.

    \b
      queuectl logs job1                 # the last attempt
      queuectl logs job1 --attempt 2 --stderr
      queuectl logs job1 --follow        # stream it while it runs

    Output is read from $QUEUECTL_HOME/logs/jobs on this machine; an
    attempt that ran here and wrote nothing has no files and prints
    nothing. When the attempt ran elsewhere (workers on other machines
    sharing a PostgreSQL store) or its files were removed, the end of each
    stream kept in the store is shown instead, with a note on stderr.
    --follow on a job that has not started yet waits for its first attempt.
    """
    from ..joblogs import STREAMS, attempt_path, job_log_dir, rotated_path

    if only_stdout and only_stderr:
        raise UsageError("use --stdout or --stderr, not both (neither shows both)")
    streams: list[Stream] = ["out"] if only_stdout else ["err"] if only_stderr \
        else list(STREAMS)
    app = state.app()
    storage = app.ledger
    job = storage.get(_stored_id(job_id))
    if job is None:
        raise JobNotFoundError(job_id)
    try:
        attempt = _pick_attempt(storage, job, number, follow,
                                app.settings().lease_seconds * 1000 if follow else 0)
        log_dir = job_log_dir(app.config.home / "logs" / "jobs", job.id)
        paths = {s: attempt_path(log_dir, attempt.number, s) for s in STREAMS}
        # Files exist only for streams that wrote something (the executor
        # creates them on the first output).
        here = any(p.exists() or rotated_path(p).exists() for p in paths.values())
        if not here and _shown_without_files(storage, attempt, streams, follow):
            return
        # (Without files yet, its worker is here: the files appear when the
        # command first writes, and --follow waits for them.)
        _report_dropped(paths, streams)
        if follow:
            _follow(storage, attempt, paths, streams)
            return
        from ..joblogs import read_chunks

        sinks = _sinks()
        for s in streams:
            for chunk in read_chunks(paths[s], CHUNK):
                sinks[s].write(chunk)
            sinks[s].flush()
    except KeyboardInterrupt:
        if not follow:
            raise
        # Ctrl-C ends --follow (or its wait for a first attempt) quietly, exit 0.
