"""Claiming ahead and batched results: the worker's optional strategy for a
backlog of short jobs.

A busy worker keeps the store off the path from one command to the next:
while a command runs, it holds the claims on its next jobs ("claimed
ahead", up to AHEAD_BATCH) and makes the first one's command ready; when
the command ends it starts the next one first and records the result after.
Results wait while claims ahead remain, up to AHEAD_BATCH of them and
RESULT_WAIT_MS; then all are recorded, and the next jobs claimed ahead, in
one storage call (``Ledger.record_and_claim``). A worker claims ahead about
RESULT_WAIT_MS of work at its pace, and at most its share of the due jobs
(due jobs divided by workers), so that no idle worker waits for a job held
here; it gives such jobs back (``Ledger.release``) when the current
command runs longer than AHEAD_HOLD_MS. Its held files cover what the
store does not know yet, should it die (``held.py``).
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections import deque
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Protocol, TypeVar

from ..errors import TransientStorageError
from ..executor import Execution, Executor, Prepared
from ..joblogs import job_log_dir
from ..ledger import Ledger
from ..models import Claim, ExecResult, Job, JobState, Outcome
from ..plugins import Plugins
from ..settings import Settings
from ..timeutil import now_ms
from ..wakeup import WakeupListener
from .events import announce_recorded
from .held import HeldFile
from .lease import RESULT_RETRY_S, call_deadline_ms
from .signals import StopSignal

log = logging.getLogger("queuectl.worker")

#: If the current job is still running this long, the jobs claimed ahead are
#: given back for any worker to take, and the worker claims ahead again only
#: after a job that ran shorter.
AHEAD_HOLD_MS = 50
#: At most this many jobs are claimed ahead at a time, and at most this many
#: results wait to be recorded together with the next claims.
AHEAD_BATCH = 32
#: ... and no result waits longer than this (counted from the end of the
#: first one waiting). A worker also claims ahead only about this much work:
#: as many jobs as it has been finishing in this time (its pace).
RESULT_WAIT_MS = 50

#: A job whose command was started before the previous result was recorded:
#: (claim, execution, result of a failed start).
Started = tuple[Claim, Execution | None, ExecResult | None]
T = TypeVar("T")


class Host(Protocol):
    """What the strategy uses of its worker (``loop.Worker``)."""

    id: str
    ledger: Ledger
    executor: Executor
    plugins: Plugins
    settings: Settings
    stop: StopSignal
    wakeup: WakeupListener | None
    log_root: Path
    worker_count: int
    next_claim: Claim | None

    @property
    def lease_ms(self) -> int: ...

    @property
    def queues(self) -> Sequence[str] | None: ...

    def chain_next(self, now: int) -> bool: ...

    def housekeeping_due(self, now: int) -> bool: ...

    def housekeeping(self, now: int) -> None: ...

    def retry_transient(self, what: str, call: Callable[[], T],
                        max_delay: float = ...) -> T | None: ...

    def start(self, claim: Claim, prepared: Prepared | None = None
              ) -> tuple[Execution | None, ExecResult | None]: ...


class ClaimAhead:
    """The claims a worker holds ahead and the results it has not recorded."""

    def __init__(self, worker: Host, held_dir: Path | None) -> None:
        self.worker = worker
        self.ledger = worker.ledger
        #: Claimed ahead, their commands not started yet, in claim order.
        self.held: deque[Claim] = deque()
        #: The first of them, made ready to start while the current command
        #: runs (prepare_next).
        self._prepared: tuple[Claim, Prepared] | None = None
        #: May a job claimed ahead start without reading it again
        #: (unchanged)? Only if a cancel of it would poke this worker: it
        #: has a wake-up socket, and the store lives on this machine.
        self._pokes_cover_cancels = (worker.wakeup is not None
                                     and bool(self.ledger.local_paths()))
        #: Tokens of jobs claimed ahead that were held when a poke came: each
        #: is read before its command starts.
        self._suspect: set[str] = set()
        #: Finished while the next command already ran, not recorded yet.
        self.pending: list[Outcome] = []
        #: When the first of them was kept (now_ms).
        self._pending_since = 0
        #: Did the last job run shorter than AHEAD_HOLD_MS? Only then is the
        #: next job claimed ahead.
        self._ahead_ok = True
        #: Milliseconds between the ends of this worker's last jobs (a moving
        #: average; None until two jobs in a row have ended).
        self._pace_ms: float | None = None
        self._last_end: float | None = None
        self._started: Started | None = None
        #: Monotonic times of the current command's checks (while_running).
        self._hold_until = 0.0
        self._flush_at = 0.0
        #: The worker's held files (None: none; claims ahead of a crashed
        #: worker are then charged).
        self._files: HeldFile | None = None
        if held_dir is not None:
            try:
                self._files = HeldFile(held_dir, worker.id)
            except OSError as exc:
                log.warning("no held file (%s): if this worker crashes, the jobs it claimed "
                            "ahead count an attempt", exc)

    # ---------------------------------------------------------- the loop's calls
    def busy(self) -> bool:
        """Has a command of a job claimed ahead been started?"""
        return self._started is not None

    def take_started(self) -> Started | None:
        started, self._started = self._started, None
        return started

    def next_held(self) -> Claim | None:
        """A job claimed ahead to run now: the previous result was recorded
        alone (a housekeeping was due, or the previous claim was lost), so it
        runs after the housekeeping that stopped the chain (unless a cancel
        reached it meanwhile)."""
        if not self.held:
            return None
        worker = self.worker
        now = now_ms()
        if worker.housekeeping_due(now):
            worker.housekeeping(now)
        while self.held:
            ahead = self.held.popleft()
            self._note_held()
            if self._unchanged(ahead) or self._startable(ahead):
                return ahead
            self._discard_prepared()
        return None

    def note_idle(self) -> None:
        self._last_end = None  # the pace is that of a run of jobs

    def while_running(self) -> None:
        """A command has started: claim the next jobs ahead if it is worth
        it, and make the next one's command ready."""
        if not self.held and self.worker.next_claim is None:
            self._claim_ahead()
        self._prepare_next()
        started = time.monotonic()
        self._hold_until = started + AHEAD_HOLD_MS / 1000
        # The results waiting are recorded RESULT_WAIT_MS after the first of
        # them came in, also while this command runs.
        self._flush_at = started + max(0, self._pending_since + RESULT_WAIT_MS - now_ms()) / 1000

    def next_tick(self) -> float:
        """Seconds until :meth:`tick` has something to do."""
        now = time.monotonic()
        wait = float("inf")
        if self.held:
            wait = min(wait, max(0.0, self._hold_until - now))
        if self.pending:
            wait = min(wait, max(0.0, self._flush_at - now))
        return wait

    def tick(self) -> None:
        """While the command runs: record the results that waited long
        enough; give back the jobs held ahead once it runs long."""
        if self.pending and time.monotonic() >= self._flush_at:
            self.flush(now_ms(), 0)
        if self.held and time.monotonic() >= self._hold_until:
            self.give_back()
            self._ahead_ok = False

    def finished(self, outcome: Outcome, ran_ms: float) -> None:
        """A command has ended: keep its result (in the results file until
        recorded), start the next job claimed ahead, then record."""
        self._keep_result(outcome)
        self._ahead_ok = ran_ms < AHEAD_HOLD_MS
        self._note_end()
        if self.held:
            if self.worker.chain_next(now_ms()):
                self._start_ahead()
            elif self.worker.stop.graceful:
                self.give_back()
        self._record(outcome)

    def abandon(self, *, patient: bool = False) -> None:
        """The worker stops running jobs (a forced stop, an error): record
        the results waiting and give back the jobs held ahead."""
        with contextlib.suppress(TransientStorageError):
            self.flush(now_ms(), 0, patient=patient)
        with contextlib.suppress(TransientStorageError):
            self.give_back()

    def close(self) -> None:
        if self.pending:  # not expected: every path out records them first
            self.flush(now_ms(), 0)
        self._discard_prepared()
        if self._files is not None:
            self._files.close()

    # ---------------------------------------------------------- claims ahead
    def _want_ahead(self, now: int) -> int:
        """How many jobs to claim ahead now: none while chaining is off or
        after a long job; else up to AHEAD_BATCH held in all, and at most
        this worker's share of the due jobs."""
        room = self._depth() - len(self.held)
        if room <= 0 or not self._ahead_ok or not self.worker.chain_next(now):
            return 0
        workers = self.worker.worker_count
        try:
            due = self.ledger.due_count(now, self.worker.queues, limit=workers * AHEAD_BATCH)
        except TransientStorageError:
            return 0
        return min(room, due // workers)

    def _depth(self) -> int:
        """How many jobs to hold ahead: about RESULT_WAIT_MS of work at this
        worker's pace, 1 to AHEAD_BATCH (1 until the pace is known)."""
        if self._pace_ms is None:
            return 1
        return max(1, min(AHEAD_BATCH, int(RESULT_WAIT_MS / max(self._pace_ms, 0.1))))

    def _note_end(self) -> None:
        end = time.monotonic()
        if self._last_end is not None:
            gap = (end - self._last_end) * 1000
            self._pace_ms = gap if self._pace_ms is None else 0.8 * self._pace_ms + 0.2 * gap
        self._last_end = end

    def _claim_ahead(self) -> None:
        now = now_ms()
        count = self._want_ahead(now)
        if not count:
            return
        self._note_pokes()
        worker = self.worker
        with contextlib.suppress(TransientStorageError):
            _, claims = self.ledger.record_and_claim(
                [], now, worker_id=worker.id, lease_ms=worker.lease_ms, queues=worker.queues,
                limit=count)
            self.held.extend(claims)
            self._note_held()

    def give_back(self) -> bool:
        """Release the jobs claimed ahead, if any. False if the store could
        not be reached: the claims not given back are then still held (and
        will run)."""
        self._discard_prepared()
        self._suspect.clear()
        while self.held:
            ahead = self.held[0]
            try:
                released = self.ledger.release(ahead, now_ms())
            except TransientStorageError as exc:
                log.warning("could not give back job %s claimed ahead (%s); will run it",
                            ahead.job.id, exc)
                return False
            self.held.popleft()
            self._note_held()
            if released is not None and released.state is JobState.CANCELLED:
                self.worker.plugins.job_event("cancelled", released, None)
            elif released is not None and self.worker.wakeup is not None:
                self.worker.wakeup.poke_others()  # an idle worker may take it now
            log.debug("gave back job %s claimed ahead", ahead.job.id)
        return True

    def _start_ahead(self) -> None:
        """Start the command of the next job claimed ahead (skipping any that
        a cancel reached meanwhile) before the previous result is recorded."""
        while self.held:
            ahead = self.held.popleft()
            prepared = self.take_prepared(ahead)
            if not self._unchanged(ahead) and not self._startable(ahead):
                if prepared is not None:
                    prepared.discard()
                continue
            self._note_held()  # before the start: a claim listed never started
            self._started = (ahead, *self.worker.start(ahead, prepared))
            return

    def _note_pokes(self) -> bool:
        """Drain the wake-up socket: if a cancel poked this worker, every job
        held ahead is read before it starts. True if a cancel poke had come
        (pokes for new work change nothing here)."""
        wakeup = self.worker.wakeup
        if not self._pokes_cover_cancels or wakeup is None:
            return False
        if not wakeup.cancel_poked():
            return False
        self._suspect.update(c.token for c in self.held)
        return True

    def _unchanged(self, ahead: Claim) -> bool:
        """Can a job claimed ahead start without reading it again? A cancel
        requested after the claim pokes the workers of this machine once it
        is stored (``queuectl cancel``); sockets are drained before every
        claim ahead (_note_pokes). So with no poke since, and the claim far
        from its lease's end (nothing can have taken it back), the job is as
        claimed. Otherwise, or if this worker cannot rely on pokes (no
        socket, or a store shared with other machines), it is read."""
        if not self._pokes_cover_cancels:
            return False
        if self._note_pokes() or ahead.token in self._suspect:
            self._suspect.discard(ahead.token)
            return False
        return now_ms() < ahead.lease_expires_at - self.worker.lease_ms // 2

    def _startable(self, ahead: Claim) -> bool:
        """Read a job claimed ahead before its command starts: False if it is
        no longer this worker's (taken back meanwhile: dropped) or a cancel
        was requested (given back, which makes it cancelled)."""
        try:
            job = self.ledger.get(ahead.job.id)
        except TransientStorageError:
            # Unreadable: start it only while its lease surely holds (else
            # it may be running elsewhere by now; a sweep takes it back).
            if now_ms() + call_deadline_ms(self.worker.lease_ms) >= ahead.lease_expires_at:
                return False
            job = ahead.job
        if job is None or job.state is not JobState.PROCESSING or job.claim_token != ahead.token:
            return False  # taken back meanwhile: not ours any more
        if job.cancel_requested_at is not None:
            self._release_cancelled(ahead)
            return False
        return True

    def _release_cancelled(self, claim: Claim) -> None:
        try:
            released = self.ledger.release(claim, now_ms())
        except TransientStorageError as exc:
            log.warning("could not give back cancelled job %s (%s); its lease will end",
                        claim.job.id, exc)
            return
        if released is not None and released.state is JobState.CANCELLED:
            self.worker.plugins.job_event("cancelled", released, None)

    # ---------------------------------------------------------- prepared commands
    def _prepare_next(self) -> None:
        """While a command runs: have the executor make the command of the
        next job claimed ahead ready (output pipes, environment)."""
        if not self.held or self._prepared is not None:
            return
        ahead = self.held[0]
        job, worker = ahead.job, self.worker
        try:
            prepared = worker.executor.prepare(
                job, attempt=ahead.attempt, log_dir=job_log_dir(worker.log_root, job.id),
                output_max_bytes=worker.settings.output_max_bytes,
                tail_bytes=worker.settings.output_tail_bytes)
        except Exception as exc:
            log.debug("could not prepare job %s ahead (%s); it starts the usual way", job.id,
                      exc)
            return
        self._prepared = (ahead, prepared)

    def take_prepared(self, claim: Claim) -> Prepared | None:
        """The prepared command of ``claim``, if that is the one prepared
        (any other is discarded)."""
        if self._prepared is None:
            return None
        held, prepared = self._prepared
        self._prepared = None
        if held.token == claim.token:
            return prepared
        with contextlib.suppress(Exception):
            prepared.discard()
        return None

    def _discard_prepared(self) -> None:
        if self._prepared is not None:
            _, prepared = self._prepared
            self._prepared = None
            with contextlib.suppress(Exception):
                prepared.discard()

    # ---------------------------------------------------------- held files
    def _note_held(self) -> None:
        """Rewrite the held file: the claims held ahead, none started."""
        if self._files is not None:
            files = self._files
            self._files_ok("write the held file", lambda: files.write(self.held))

    def _keep_result(self, outcome: Outcome) -> None:
        if self._files is not None:
            files = self._files
            self._files_ok("write the results file", lambda: files.add_result(outcome))

    def _files_ok(self, what: str, call: Callable[[], None]) -> None:
        """Run an update of the held files. If it fails, stop using them and
        remove them: a stale held file could list a claim whose command has
        started, which recovery would then give back uncharged."""
        assert self._files is not None
        try:
            call()
        except OSError as exc:
            log.warning("cannot %s in %s (%s); no longer keeping held files", what,
                        self._files.path.parent, exc)
            self._files.close()
            self._files = None

    # ---------------------------------------------------------- results
    def _record(self, outcome: Outcome) -> None:
        """Record an outcome, or keep it for the next batch. A busy worker
        claims its next jobs in the same storage call: ahead of time if the
        next command already runs, else one to run now."""
        now = now_ms()
        if not self.pending:
            self._pending_since = outcome.at(now)
        self.pending.append(outcome)
        worker = self.worker
        if self._started is not None:
            if (self.held and len(self.pending) < AHEAD_BATCH
                    and now - self._pending_since < RESULT_WAIT_MS):
                return  # recorded with a later batch, while commands run
            limit = self._want_ahead(now)
        else:
            limit = int(worker.next_claim is None and not self.held and worker.chain_next(now))
        self.flush(now, limit)

    def flush(self, now: int, limit: int, *, patient: bool = True) -> None:
        """Record the results waiting, and claim up to ``limit`` jobs in the
        same storage call: ahead if a command already runs, else the first
        one to run next. Retries while the store is unreachable, unless not
        ``patient`` (then one try)."""
        pending, self.pending = self.pending, []
        if not pending and not limit:
            return
        worker = self.worker
        ids = ", ".join(o.claim.job.id for o in pending) or "nothing"
        dones: list[Job | None] = []
        claims: list[Claim] = []
        if limit:
            self._note_pokes()  # the jobs claimed now are as claimed until the next poke
        while True:  # until every result is recorded
            rest = pending[len(dones):]

            def call(rest: list[Outcome] = rest) -> tuple[list[Job | None], list[Claim]]:
                return self.ledger.record_and_claim(
                    rest, now, worker_id=worker.id, lease_ms=worker.lease_ms,
                    queues=worker.queues, limit=limit)

            pair = (worker.retry_transient(f"record job(s) {ids}", call, RESULT_RETRY_S)
                    if patient else call())
            if pair is None:  # a forced stop gave up on an unreachable store
                log.error("results of job(s) %s not recorded; their leases will end and "
                          "they will run again", ids)
                return
            dones.extend(pair[0])
            claims.extend(pair[1])
            if len(dones) >= len(pending):
                break
        self.held.extend(claims)
        if self._started is not None:
            if claims:
                self._note_held()
        elif claims:
            # The job to run next (say a chain's next link, which the result
            # just recorded released): start it now, before the bookkeeping
            # below, as a job claimed ahead would be.
            self._start_ahead()
        if self._files is not None:
            self._files_ok("empty the results file", self._files.clear_results)
        for outcome, done in zip(pending, dones, strict=True):
            announce_recorded(worker.plugins, self.ledger, outcome, done)
