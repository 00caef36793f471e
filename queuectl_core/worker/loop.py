"""The worker loop: claim a due job, run it while renewing its lease, record
the outcome; recover jobs whose workers vanished. It talks only to the
storage and executor seams (plus the plugin broadcasts).

Single-threaded: the command runs in its own process group and the loop
waits on it in short slices, renewing the lease and doing housekeeping
between slices.
"""

from __future__ import annotations

import contextlib
import logging
import os
import select
import signal
import socket
import time
import uuid
from collections import deque
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TypeVar

from .errors import TransientStorageError
from .executor import Execution, Executor, Prepared
from .heldclaims import HeldFile, held_workers, recover_held
from .joblogs import job_log_dir, remove_job_logs
from .models import Claim, ExecResult, Job, JobState, Outcome, Settings, WorkerInfo
from .plugins import Plugins
from .procs import job_process_groups
from .registry import BackoffPolicy
from .retry import job_settings, next_run_at
from .storage import Storage
from .timeutil import now_ms
from .wakeup import WakeupListener

log = logging.getLogger("queuectl.worker")

T = TypeVar("T")

#: Longest slice the worker blocks for while a command runs, so that a
#: forced stop or a lost parent is noticed quickly.
WAIT_SLICE_S = 1.0
#: Settings are re-read from the store at most this often.
SETTINGS_REFRESH_MS = 1000
#: Longest wait between retries while the store is unreachable.
MAX_OUTAGE_WAIT_S = 10.0
#: Worker records without a heartbeat for this long are forgotten.
WORKER_RECORD_TTL_MS = 24 * 3600 * 1000
#: Automatic retention (the ``retention_days`` setting) runs this often per
#: worker, deleting at most RETENTION_BATCH jobs per transaction.
RETENTION_EVERY_MS = 60_000
RETENTION_BATCH = 1000
#: A busy worker claims its next job while the current one runs ("claiming
#: ahead", see Worker.run_once). If the current job is still running this
#: long, the job claimed ahead is given back for any worker to take, and the
#: worker claims ahead again only after a job that ran shorter.
AHEAD_HOLD_MS = 50
#: At most this many jobs are claimed ahead at a time, and at most this many
#: results wait to be recorded together with the next claims (see
#: Worker.run_once): a busy worker on a backlog of short jobs makes one
#: storage transaction per batch of jobs instead of one per job.
AHEAD_BATCH = 32
#: ... and no result waits longer than this (counted from the end of the
#: first one waiting). A worker also claims ahead only about this much work:
#: as many jobs as it has been finishing in this time (its pace), so that
#: what it holds does not keep other workers idle at the end of a backlog.
RESULT_WAIT_MS = 50
#: Event broadcast for each state a finished attempt can leave a job in.
_EVENTS = {JobState.COMPLETED: "completed", JobState.FAILED: "failed",
           JobState.DEAD: "dead", JobState.CANCELLED: "cancelled"}



def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def kill_group(pgid: int | None, sig: int = signal.SIGKILL) -> None:
    if not pgid or pgid <= 1:
        return
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


def release_dead_worker(storage: Storage, plugins: Plugins, record: WorkerInfo, now: int, *,
                        charge_attempt: bool = True, held_dir: Path | None = None
                        ) -> list[Job]:
    """A worker process of this machine is known to be gone (crashed, or
    killed by a forced stop): kill the command it left running, if that job
    is still its own; record the results it had not recorded yet and give
    back uncharged the jobs it had claimed ahead without starting them (its
    held files in ``held_dir``, see :mod:`queuectl_core.heldclaims`); then
    take back the rest of its jobs and forget the worker."""
    if record.current_job and record.job_pgid:
        job = storage.get(record.current_job)
        if (job is not None and job.state is JobState.PROCESSING
                and job.worker_id == record.id):
            kill_group(record.job_pgid)
    kill_orphaned_commands(storage, record.id)
    announce_held(plugins, *recover_held(storage, held_dir, record.id, now))
    jobs = storage.recover_expired(now, worker_id=record.id, charge_attempt=charge_attempt)
    storage.unregister_worker(record.id)
    announce_recovered(plugins, jobs)
    return jobs


def kill_orphaned_commands(storage: Storage, worker_id: str) -> None:
    """Kill, on this machine, the commands of the attempts a dead worker
    still holds, found by their environment: the worker may have died before
    it recorded its command's process group."""
    for job in storage.list_jobs(JobState.PROCESSING):
        if job.worker_id != worker_id:
            continue
        running = [a for a in storage.attempts(job.id)
                   if a.outcome == "running" and a.worker_id == worker_id]
        for attempt in running:
            for pgid in job_process_groups(job.id, attempt.number):
                kill_group(pgid)


def announce_held(plugins: Plugins, recorded: list[Job], given_back: list[Job]) -> None:
    """Broadcast what recover_held did for a vanished worker: the results it
    recorded (as the worker would have), and of the jobs given back
    uncharged, those a cancel reached (the others are as before the claim)."""
    for job in recorded:
        plugins.job_event(_EVENTS.get(job.state, job.state.value), job, None)
        if job.state is JobState.DEAD:
            plugins.job_dead(job, None)
    for job in given_back:
        if job.state is JobState.CANCELLED:
            plugins.job_event("cancelled", job, None)


def announce_recovered(plugins: Plugins, jobs: list[Job]) -> None:
    """Log and broadcast jobs taken back from vanished workers."""
    for job in jobs:
        log.warning("recovered job %s from worker %s: now %s", job.id, job.worker_id,
                    job.state.value)
        plugins.job_event("lost", job, None)
        if job.state is JobState.CANCELLED:
            plugins.job_event("cancelled", job, None)
        elif job.state is JobState.DEAD:
            plugins.job_event("dead", job, None)
            plugins.job_dead(job, None)


class StopSignal:
    """Counts SIGTERM/SIGINT: the first asks for a graceful stop (finish the
    current job), the second for a forced one (kill it, release its claim).
    Signals also wake an idle sleep through a self-pipe."""

    def __init__(self) -> None:
        self.count = 0
        self._r, self._w = os.pipe()
        os.set_blocking(self._r, False)
        os.set_blocking(self._w, False)

    def install(self) -> None:
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, self._handle)
        signal.set_wakeup_fd(self._w, warn_on_full_buffer=False)

    def _handle(self, signum: int, frame: object) -> None:
        self.count += 1

    def request(self) -> None:
        self.count += 1
        with contextlib.suppress(BlockingIOError):
            os.write(self._w, b"\0")

    @property
    def graceful(self) -> bool:
        return self.count >= 1

    @property
    def forced(self) -> bool:
        return self.count >= 2

    def sleep(self, seconds: float, wakeup: WakeupListener | None = None,
              storage: Storage | None = None) -> None:
        """Sleep up to ``seconds``; return early on a signal, a local
        wake-up, or news from the storage backend (e.g. LISTEN/NOTIFY)."""
        # A signal writes to the pipe (set_wakeup_fd), so one that arrives
        # just before select still ends the sleep at once.
        if seconds > 0:
            fds: list[int] = [self._r]
            if wakeup is not None:
                fds.append(wakeup.fileno())
            store_fd = None
            if storage is not None:
                with contextlib.suppress(Exception):
                    store_fd = storage.wakeup_fileno()
            if store_fd is not None:
                fds.append(store_fd)
            with contextlib.suppress(InterruptedError, OSError, ValueError):
                select.select(fds, [], [], seconds)
        with contextlib.suppress(BlockingIOError):
            while os.read(self._r, 512):
                pass
        if wakeup is not None:
            wakeup.drain()
        if storage is not None:
            with contextlib.suppress(Exception):
                storage.drain_wakeups()


class Worker:
    def __init__(
        self,
        *,
        storage: Storage,
        executor: Executor,
        policy: BackoffPolicy,
        plugins: Plugins,
        settings_loader: Callable[[Storage], Settings],
        log_root: Path,
        stop: StopSignal | None = None,
        worker_id: str | None = None,
        parent_pid: int | None = None,
        wakeup: WakeupListener | None = None,
        queues: Sequence[str] | None = None,
        policy_resolver: Callable[[str], BackoffPolicy] | None = None,
        held_dir: Path | None = None,
    ) -> None:
        self.storage = storage
        self.executor = executor
        self.policy = policy
        self.plugins = plugins
        self._load_settings = settings_loader
        self.log_root = log_root
        self.stop = stop or StopSignal()
        self.hostname = socket.gethostname()
        self.pid = os.getpid()
        self.id = worker_id or f"{self.hostname}:{self.pid}:{uuid.uuid4().hex[:6]}"
        self.parent_pid = parent_pid
        self.wakeup = wakeup
        self.queues = list(queues) if queues else None
        self._resolve_policy = policy_resolver
        self._policies: dict[str, BackoffPolicy] = {}
        self.settings = self._load_settings(storage)
        self._settings_at = now_ms()
        self._housekeeping_at = 0
        self._retention_at = 0
        self.jobs_run = 0
        #: Where workers of this home on this machine keep their held files
        #: (None: no held file; claims ahead of a crashed worker are charged).
        self.held_dir = held_dir
        self._held: HeldFile | None = None
        if held_dir is not None:
            try:
                self._held = HeldFile(held_dir, self.id)
            except OSError as exc:
                log.warning("no held file (%s): if this worker crashes, the jobs it claimed "
                            "ahead count an attempt", exc)
        #: While :meth:`run` loops, a busy worker records a result and claims
        #: its next job in one storage call (``finish_and_claim``); the job
        #: so claimed waits here for the next :meth:`run_once`.
        self.chain_claims = False
        self._next: Claim | None = None
        #: Claimed ahead, their commands not started yet, in claim order
        #: (see run_once).
        self._ahead: deque[Claim] = deque()
        #: The first of them, made ready to start while the current command
        #: runs (see _prepare_next).
        self._prepared: tuple[Claim, Prepared] | None = None
        #: May a job claimed ahead start without reading it again (see
        #: _unchanged)? Only if a cancel of it would poke this worker: it has
        #: a wake-up socket, and the store lives on this machine.
        self._pokes_cover_cancels = wakeup is not None and bool(storage.local_paths())
        #: Tokens of jobs claimed ahead that were held when a poke came: each
        #: is read before its command starts.
        self._suspect: set[str] = set()
        #: Finished while the next command already ran, not recorded yet:
        #: recorded together, with the next claims (see run_once).
        self._pending: list[Outcome] = []
        #: When each command not recorded yet started (claim token -> now_ms).
        self._start_ms: dict[str, int] = {}
        #: When the first of them was kept (now_ms).
        self._pending_since = 0
        #: Did the last job run shorter than AHEAD_HOLD_MS? Only then is the
        #: next job claimed ahead.
        self._ahead_ok = True
        #: Milliseconds between the ends of this worker's last jobs (a moving
        #: average; None until two jobs in a row have ended): how many jobs
        #: to claim ahead.
        self._pace_ms: float | None = None
        self._last_end: float | None = None
        #: Workers registered in the store (read at each housekeeping): each
        #: claims ahead at most its share of the due jobs.
        self._worker_count = 1
        #: A job whose command was started before the previous result was
        #: recorded: (claim, execution, result of a failed start).
        self._started: tuple[Claim, Execution | None, ExecResult | None] | None = None

    # ---------------------------------------------------------- helpers
    @property
    def lease_ms(self) -> int:
        return self.settings.lease_seconds * 1000

    @property
    def beat_ms(self) -> int:
        """Heartbeats, lease renewals and recovery sweeps happen this often."""
        return max(1000, self.lease_ms // 3)

    def _refresh_settings(self, now: int) -> None:
        if now - self._settings_at >= SETTINGS_REFRESH_MS:
            try:
                self.settings = self._load_settings(self.storage)
            except TransientStorageError as exc:  # keep the last good settings
                # The same words as every other call that meets an outage
                # (docs/deploy-multi-machine.md): this read may be the one
                # that meets it, and the store reconnects for the next call.
                log.warning("storage unavailable while reloading settings (%s); keeping the "
                            "last ones", exc)
            except Exception as exc:
                log.warning("could not reload settings: %s", exc)
            self._settings_at = now

    def _check_parent(self) -> None:
        """A worker whose supervisor died stops as if asked to: it finishes
        its current job, claims nothing more, and exits."""
        if (self.parent_pid is not None and os.getppid() != self.parent_pid
                and not self.stop.graceful):
            log.warning("supervisor %d went away; finishing up and stopping", self.parent_pid)
            self.stop.request()

    def housekeeping(self, now: int, current: Claim | None = None,
                     execution: Execution | None = None) -> None:
        """Heartbeat this worker and recover jobs of vanished workers."""
        self._housekeeping_at = now
        self.storage.worker_heartbeat(
            self.id, now, current.job.id if current else None,
            execution.pgid if execution else None,
        )
        self.recover(now)
        self.apply_retention(now)
        workers = self.storage.list_workers()
        self._worker_count = max(1, len(workers))
        self.sweep_held(now, {w.id for w in workers})

    def sweep_held(self, now: int, registered: set[str]) -> list[str]:
        """Deal with the held files of workers of this machine that are gone
        and no longer registered: recover() handles a dead worker's files
        when one of its jobs' leases expires, but a worker that died idle,
        or whose record was pruned or whose jobs another machine took back,
        leaves its files behind. recover_held settles them (fenced by the
        claim tokens, so whatever is no longer that worker's is left alone)
        and removes them. Returns the ids swept."""
        if self.held_dir is None:
            return []
        swept = []
        for worker_id in held_workers(self.held_dir):
            parts = worker_id.rsplit(":", 2)  # host:pid:random
            if (len(parts) != 3 or parts[0] != self.hostname or worker_id in registered
                    or not parts[1].isdigit() or pid_alive(int(parts[1]))):
                continue
            announce_held(self.plugins, *recover_held(self.storage, self.held_dir, worker_id,
                                                      now))
            swept.append(worker_id)
        return swept

    def apply_retention(self, now: int) -> list[str]:
        """Purge completed and cancelled jobs older than ``retention_days``
        (with their output on this machine), a batch at a time."""
        days = self.settings.retention_days
        if days <= 0 or now - self._retention_at < RETENTION_EVERY_MS:
            return []
        self._retention_at = now
        cutoff = now - round(days * 86_400_000)
        gone = self.storage.purge(states=[JobState.COMPLETED, JobState.CANCELLED],
                                  finished_before=cutoff, limit=RETENTION_BATCH)
        if gone:
            remove_job_logs(self.log_root, gone)
            log.info("retention: purged %d job(s) finished before %s days ago", len(gone),
                     f"{days:g}")
            if len(gone) == RETENTION_BATCH:
                self._retention_at = 0  # more to do: next housekeeping goes on
        return gone

    def recover(self, now: int) -> list[Job]:
        """Take back jobs whose lease expired. A command that its dead worker
        on this machine left running is killed first, so that it is gone
        before the job can be claimed again."""
        expired = [j for j in self.storage.list_jobs(JobState.PROCESSING)
                   if j.lease_expires_at is not None and j.lease_expires_at < now]
        if not expired:
            return []
        workers = {w.id: w for w in self.storage.list_workers()}
        dead: set[str] = set()
        for job in expired:
            owner = workers.get(job.worker_id or "")
            if (owner is not None and owner.hostname == self.hostname
                    and not pid_alive(owner.pid)):
                if owner.current_job == job.id:
                    kill_group(owner.job_pgid)
                kill_orphaned_commands(self.storage, owner.id)
                dead.add(owner.id)
        for owner_id in sorted(dead):
            announce_held(self.plugins, *recover_held(self.storage, self.held_dir, owner_id,
                                                      now))
        recovered = self.storage.recover_expired(now)
        announce_recovered(self.plugins, recovered)
        self.storage.prune_workers(now - WORKER_RECORD_TTL_MS)
        return recovered

    # ---------------------------------------------------------- main loop
    def _retry_transient(self, what: str, call: Callable[[], T]) -> T | None:
        """Run a storage call, retrying while the store is unreachable
        (TransientStorageError) with backoff up to MAX_OUTAGE_WAIT_S. Gives
        up (returns None) only on a forced stop."""
        delay = 0.5
        while True:
            try:
                result = call()
            except TransientStorageError as exc:
                if self.stop.forced:
                    log.error("giving up on %s: storage unavailable and stop forced", what)
                    return None
                log.warning("storage unavailable while trying to %s (%s); retrying in %.1fs",
                            what, exc, delay)
                self.stop.sleep(delay)
                delay = min(MAX_OUTAGE_WAIT_S, delay * 2)
                continue
            if delay > 0.5:
                log.info("storage reachable again; %s done", what)
            return result

    def run(self) -> None:
        def register() -> bool:
            now = now_ms()
            self.storage.register_worker(WorkerInfo(
                id=self.id, hostname=self.hostname, pid=self.pid, started_at=now,
                heartbeat_at=now,
            ))
            self.housekeeping(now)
            return True

        if not self._retry_transient("register the worker", register):
            return
        log.info("worker %s started (pid %d, %s)", self.id, self.pid, self.storage.describe())
        outage = 0.5
        self.chain_claims = True
        try:
            # A job claimed together with the last result was claimed before
            # any stop request was seen (_chain_next checks): it runs, as a
            # job claimed just before a stop always has.
            while (self._started is not None or self._next is not None
                   or not self.stop.graceful):
                if self._started is None and self._next is None:
                    self._check_parent()
                    if self.stop.graceful and self._give_back_ahead():
                        break
                try:
                    self.run_once()
                    outage = 0.5
                except TransientStorageError as exc:
                    log.warning("storage unavailable (%s); retrying in %.1fs", exc, outage)
                    self.stop.sleep(outage)
                    outage = min(MAX_OUTAGE_WAIT_S, outage * 2)
        finally:
            self.chain_claims = False
        if self._pending:  # not expected: every path out records them first
            self._flush(now_ms(), 0)
        self._discard_prepared()
        if self._held is not None:
            self._held.close()
        # Only a clean exit forgets the worker: after an error its record
        # stays, so that its supervisor can find and release what it held.
        with contextlib.suppress(Exception):
            self.storage.unregister_worker(self.id)
        log.info("worker %s stopped after %d job(s)", self.id, self.jobs_run)

    def run_once(self) -> bool:
        """Claim and run one job, or sleep when none is due. True if a job ran.

        A busy worker keeps the store off the path from one command to the
        next: while a command runs, it holds the claims on its next jobs
        ("claimed ahead", up to AHEAD_BATCH), and when the command ends it
        starts the next one's command first and records the result after.
        Results wait (in ``_pending``) while claims ahead remain, up to
        AHEAD_BATCH of them and RESULT_WAIT_MS; then all are recorded, and
        the next jobs claimed ahead, in one storage call
        (``record_and_claim``). A worker claims ahead about RESULT_WAIT_MS of
        work at its pace, and at most its share of the due jobs (due jobs
        divided by workers), so that no idle worker waits for a job held
        here; it gives such jobs back (``Storage.release``) when the current
        command runs longer than AHEAD_HOLD_MS. Its held files cover what
        the store does not know yet, should it die (heldclaims). (The job
        that the last result's ``record_and_claim`` claimed, if any, is the
        one run.)"""
        if self._started is not None:
            (held, execution, failed), self._started = self._started, None
            self.execute(held, started=(execution, failed))
            self.jobs_run += 1
            return True
        if self._next is None and self._ahead:
            # Claimed ahead, but the previous result was recorded alone (a
            # housekeeping was due, or the previous claim was lost): it runs
            # now, after the housekeeping that stopped the chain (unless a
            # cancel reached it, as in _start_ahead).
            now = now_ms()
            if now - self._housekeeping_at >= self.beat_ms:
                self.housekeeping(now)
            while self._next is None and self._ahead:
                ahead = self._ahead.popleft()
                self._note_held()
                if self._unchanged(ahead) or self._startable(ahead):
                    self._next = ahead
                else:
                    self._discard_prepared()
        claim, self._next = self._next, None
        if claim is None:
            now = now_ms()
            self._refresh_settings(now)
            if now - self._housekeeping_at >= self.beat_ms:
                self.housekeeping(now)
            claim = self.storage.claim(self.id, now, self.lease_ms, self.queues)
            if claim is None:
                self._idle(now)
                return False
        self.execute(claim)
        self.jobs_run += 1
        return True

    # ---------------------------------------------------------- claiming ahead
    def _want_ahead(self, now: int) -> int:
        """How many jobs to claim ahead now (see run_once): none while
        chaining is off, after a long job, or on a backend without
        ``due_count``; else up to AHEAD_BATCH held in all, and at most this
        worker's share of the due jobs."""
        room = self._ahead_depth() - len(self._ahead)
        if room <= 0 or not self._ahead_ok or not self._chain_next(now):
            return 0
        try:
            due = self.storage.due_count(now, self.queues,
                                         limit=self._worker_count * AHEAD_BATCH)
        except TransientStorageError:
            return 0
        return 0 if due is None else min(room, due // self._worker_count)

    def _ahead_depth(self) -> int:
        """How many jobs to hold ahead: about RESULT_WAIT_MS of work at this
        worker's pace, 1 to AHEAD_BATCH (1 until the pace is known)."""
        if self._pace_ms is None:
            return 1
        return max(1, min(AHEAD_BATCH, int(RESULT_WAIT_MS / max(self._pace_ms, 0.1))))

    def _note_end(self) -> None:
        """A command has ended: update the pace."""
        end = time.monotonic()
        if self._last_end is not None:
            gap = (end - self._last_end) * 1000
            self._pace_ms = gap if self._pace_ms is None else 0.8 * self._pace_ms + 0.2 * gap
        self._last_end = end

    def _claim_ahead(self) -> None:
        """While a command runs: claim the next jobs ahead, if it is worth it."""
        now = now_ms()
        count = self._want_ahead(now)
        if not count:
            return
        self._note_pokes()
        with contextlib.suppress(TransientStorageError):
            _, claims = self.storage.record_and_claim(
                [], now, worker_id=self.id, lease_ms=self.lease_ms, queues=self.queues,
                limit=count)
            self._ahead.extend(claims)
            self._note_held()

    def _give_back_ahead(self) -> bool:
        """Release the jobs claimed ahead, if any. False if the store could
        not be reached: the claims not given back are then still held (and
        will run)."""
        self._discard_prepared()
        self._suspect.clear()
        while self._ahead:
            ahead = self._ahead[0]
            try:
                released = self.storage.release(ahead, now_ms())
            except TransientStorageError as exc:
                log.warning("could not give back job %s claimed ahead (%s); will run it",
                            ahead.job.id, exc)
                return False
            self._ahead.popleft()
            self._note_held()
            if released is not None and released.state is JobState.CANCELLED:
                self.plugins.job_event("cancelled", released, None)
            elif released is not None and self.wakeup is not None:
                self.wakeup.poke_others()  # an idle worker may take it now
            log.debug("gave back job %s claimed ahead", ahead.job.id)
        return True

    def _start_ahead(self) -> None:
        """The current command has ended: start the command of the next job
        claimed ahead (skipping any that a cancel reached meanwhile) before
        the previous result is recorded. Its command was made ready while
        the current one ran (_prepare_next)."""
        while self._ahead:
            ahead = self._ahead.popleft()
            prepared = self._take_prepared(ahead)
            if not self._unchanged(ahead) and not self._startable(ahead):
                if prepared is not None:
                    prepared.discard()
                continue
            self._note_held()  # before the start: a claim listed never started
            self._started = (ahead, *self._start(ahead, prepared))
            return

    def _note_pokes(self) -> bool:
        """Drain the wake-up socket: if a cancel poked this worker, every job
        held ahead is read before it starts. True if a cancel poke had
        come (pokes for new work change nothing here)."""
        if not self._pokes_cover_cancels:
            return False
        assert self.wakeup is not None
        if not self.wakeup.cancel_poked():
            return False
        self._suspect.update(c.token for c in self._ahead)
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
        return now_ms() < ahead.lease_expires_at - self.lease_ms // 2

    def _startable(self, ahead: Claim) -> bool:
        """Read a job claimed ahead before its command starts: False if it is
        no longer this worker's (taken back meanwhile: dropped) or a cancel
        was requested (given back, which makes it cancelled)."""
        try:
            job = self.storage.get(ahead.job.id)
        except TransientStorageError:
            job = ahead.job
        if job is None or job.state is not JobState.PROCESSING or job.worker_id != self.id:
            return False  # taken back meanwhile: not ours any more
        if job.cancel_requested_at is not None:
            self._release_cancelled(ahead)
            return False
        return True

    def _prepare_next(self) -> None:
        """While a command runs: have the executor make the command of the
        next job claimed ahead ready (output pipes, environment), so that
        little stands between the current command's end and the next
        start. Whether the job may still start is settled at the start
        (_start_ahead)."""
        if not self._ahead or self._prepared is not None:
            return
        ahead = self._ahead[0]
        job = ahead.job
        try:
            prepared = self.executor.prepare(
                job, attempt=ahead.attempt, log_dir=job_log_dir(self.log_root, job.id),
                output_max_bytes=self.settings.output_max_bytes,
                tail_bytes=self.settings.output_tail_bytes)
        except Exception as exc:
            log.debug("could not prepare job %s ahead (%s); it starts the usual way", job.id,
                      exc)
            return
        self._prepared = (ahead, prepared)

    def _take_prepared(self, claim: Claim) -> Prepared | None:
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

    def _note_held(self) -> None:
        """Rewrite the held file: the claims held ahead, none started."""
        if self._held is not None:
            held = self._held
            self._held_ok("write the held file", lambda: held.write(self._ahead))

    def _keep_result(self, outcome: Outcome) -> None:
        """Add a result to the results file, where it stays until its record
        commits (_flush empties the file)."""
        if self._held is not None:
            held = self._held
            self._held_ok("write the results file", lambda: held.add_result(outcome))

    def _held_ok(self, what: str, call: Callable[[], None]) -> None:
        """Run an update of the held files. If it fails, stop using them and
        remove them: a stale held file could list a claim whose command has
        started, which recovery would then give back uncharged."""
        assert self._held is not None
        try:
            call()
        except OSError as exc:
            log.warning("cannot %s in %s (%s); no longer keeping held files", what,
                        self._held.path.parent, exc)
            self._held.close()
            self._held = None

    def _release_cancelled(self, claim: Claim) -> None:
        """Give back a job claimed ahead that a cancel reached before its
        command started: it becomes cancelled without running."""
        try:
            released = self.storage.release(claim, now_ms())
        except TransientStorageError as exc:
            log.warning("could not give back cancelled job %s (%s); its lease will end",
                        claim.job.id, exc)
            return
        if released is not None and released.state is JobState.CANCELLED:
            self.plugins.job_event("cancelled", released, None)

    def _chain_next(self, now: int) -> bool:
        """May the result being recorded now claim the next job in the same
        storage call? Only if nothing has to happen between the two steps:
        no stop requested (also a lost supervisor), no housekeeping due
        (heartbeat, recovery, retention), no plugin waiting for the job's
        events (they run before the next claim, as without chaining). A DLQ
        handler alone (``queuectl_job_dead``) does not prevent it: it is
        called after the move to the DLQ is stored either way."""
        if not self.chain_claims:
            return False
        self._check_parent()
        if self.stop.graceful or now - self._housekeeping_at >= self.beat_ms:
            return False
        if self.plugins.has_event_listeners():
            return False
        self._refresh_settings(now)  # the next claim's lease length
        return True

    def _idle(self, now: int) -> None:
        self._last_end = None  # the pace is that of a run of jobs
        wait_ms = min(self.settings.worker_idle_delay,
                      self._housekeeping_at + self.beat_ms - now)
        due = self.storage.next_run_at(self.queues)
        if due is not None:
            wait_ms = min(wait_ms, due - now)
        self.stop.sleep(max(0, wait_ms) / 1000, self.wakeup, self.storage)

    def _start(self, claim: Claim, prepared: Prepared | None = None
               ) -> tuple[Execution | None, ExecResult | None]:
        """Start the claimed job's command (``prepared`` ahead, if it was):
        its execution, or the result of a start that failed."""
        job = claim.job
        # DEBUG: at INFO, two lines per job cost a busy worker more than its
        # claim; the line that records the outcome stays at INFO.
        log.debug("running job %s (attempt %d): %s", job.id, claim.attempt, job.command)
        self.plugins.job_event("claimed", job, None)
        if prepared is None:
            prepared = self._take_prepared(claim)
        self._start_ms[claim.token] = now_ms()
        try:
            if prepared is not None:
                return prepared.start(), None
            # The executor creates the directory when the command first
            # writes something: most short jobs write nothing, and three
            # metadata writes per job (mkdir, two files) cost more than the
            # job's SQLite work.
            return self.executor.start(
                job, attempt=claim.attempt, log_dir=job_log_dir(self.log_root, job.id),
                output_max_bytes=self.settings.output_max_bytes,
                tail_bytes=self.settings.output_tail_bytes), None
        except Exception as exc:
            return None, ExecResult(error=f"could not start the command: {exc}")

    def execute(self, claim: Claim, started: tuple[Execution | None, ExecResult | None]
                | None = None) -> None:
        """Run the claimed job (its command already started, if ``started``)
        and record the outcome."""
        job = claim.job
        execution, result = started if started is not None else self._start(claim)
        begun = time.monotonic()
        if execution is not None:
            # The command's process group reaches the store with the next
            # heartbeat (every beat_ms). No write for it here: that would be
            # a third fsynced commit per job. Until then a release or a
            # cancel finds the command by QUEUECTL_JOB_ID/QUEUECTL_ATTEMPT.
            try:
                result = self._wait(claim, execution)
            except BaseException:
                # Never leave a command running behind a worker that is
                # about to die: kill it and give the job back (the attempt
                # counts, so a job that keeps breaking workers ends dead).
                log.exception("worker error while running job %s; killing it", job.id)
                with contextlib.suppress(Exception):
                    execution.kill()
                with contextlib.suppress(Exception):
                    # Before the recovery below takes them back.
                    self._flush(now_ms(), 0, patient=False)
                with contextlib.suppress(Exception):
                    self._give_back_ahead()
                with contextlib.suppress(Exception):
                    announce_recovered(self.plugins, self.storage.recover_expired(
                        now_ms(), worker_id=self.id))
                raise
            if result is None:
                self._start_ms.pop(claim.token, None)
                return  # the claim was lost or a forced stop released it
        assert result is not None
        outcome = self._outcome(claim, result, now_ms())
        # From here until its record commits, the result is in the results
        # file: if this worker dies, recovery records it (heldclaims).
        self._keep_result(outcome)
        self._ahead_ok = (time.monotonic() - begun) * 1000 < AHEAD_HOLD_MS
        self._note_end()
        if self._ahead:
            if self._chain_next(now_ms()):
                self._start_ahead()
            elif self.stop.graceful:
                self._give_back_ahead()
        self._record(outcome)

    def timeout_of(self, job: Job) -> float | None:
        """Seconds the job may run: its own timeout, else ``job_timeout``."""
        if job.timeout is not None:
            return job.timeout
        return self.settings.job_timeout or None

    def _wait(self, claim: Claim, execution: Execution) -> ExecResult | None:
        renew_at = now_ms() + self.beat_ms
        limit = self.timeout_of(claim.job)
        deadline = None if limit is None else time.monotonic() + limit
        if not self._ahead and self._next is None:
            self._claim_ahead()
        self._prepare_next()
        started = time.monotonic()
        hold_until = started + AHEAD_HOLD_MS / 1000
        # The results waiting are recorded RESULT_WAIT_MS after the first of
        # them came in, also while this command runs.
        flush_at = started + max(0, self._pending_since + RESULT_WAIT_MS - now_ms()) / 1000
        while True:
            slice_s = min(WAIT_SLICE_S, max(0.0, (renew_at - now_ms()) / 1000))
            if deadline is not None:
                slice_s = min(slice_s, max(0.0, deadline - time.monotonic()))
            if self._ahead:
                slice_s = min(slice_s, max(0.0, hold_until - time.monotonic()))
            if self._pending:
                slice_s = min(slice_s, max(0.0, flush_at - time.monotonic()))
            result = execution.wait(slice_s)
            if result is not None:
                return result
            if self._pending and time.monotonic() >= flush_at:
                self._flush(now_ms(), 0)
            if self._ahead and time.monotonic() >= hold_until:
                # A long command: the jobs claimed ahead go back to the queue.
                self._give_back_ahead()
                self._ahead_ok = False
            if deadline is not None and time.monotonic() >= deadline:
                assert limit is not None
                log.warning("job %s timed out after %s s; stopping it", claim.job.id,
                            f"{limit:g}")
                result = execution.kill()
                detail = f" ({result.error})" if result.error else ""
                return result.replace(error=f"timed out after {limit:g} s{detail}")
            self._check_parent()
            if self.stop.forced:
                log.warning("forced stop: killing job %s; it will run again (this attempt "
                            "does not count)", claim.job.id)
                execution.kill()
                # Finished jobs first: the recovery below would take them back.
                self._flush(now_ms(), 0)
                with contextlib.suppress(TransientStorageError):
                    self._give_back_ahead()
                announce_recovered(self.plugins, self.storage.recover_expired(
                    now_ms(), worker_id=self.id, charge_attempt=False))
                return None
            now = now_ms()
            if now >= renew_at:
                try:
                    renewed = self.storage.renew(claim, now, self.lease_ms)
                except TransientStorageError as exc:
                    # Keep the command running: if the store comes back before
                    # the lease ends, the renewal succeeds and nothing is lost;
                    # if the job was recovered meanwhile, renew says so then.
                    log.warning("could not renew the lease of job %s (%s); will retry",
                                claim.job.id, exc)
                    renew_at = now + min(self.beat_ms, 1000)
                    continue
                if not renewed:
                    log.error("lost the claim on job %s (lease expired and it was recovered); "
                              "stopping this run of it", claim.job.id)
                    execution.kill()
                    return None
                if self._cancel_requested(claim.job.id):
                    log.warning("job %s: cancel requested; stopping it", claim.job.id)
                    result = execution.kill()
                    detail = f" ({result.error})" if result.error else ""
                    return result.replace(error=f"cancelled while running{detail}")
                with contextlib.suppress(TransientStorageError):
                    self.housekeeping(now, claim, execution)
                self._refresh_settings(now)
                renew_at = now + self.beat_ms

    def _cancel_requested(self, job_id: str) -> bool:
        """Has ``queuectl cancel`` asked for this running job to stop? (A
        cancel from this machine also signals the command at once.)"""
        try:
            job = self.storage.get(job_id)
        except TransientStorageError:
            return False
        return job is not None and job.cancel_requested_at is not None

    def policy_for(self, job: Job) -> BackoffPolicy:
        """The backoff policy a job names in its ``retry`` object, else the
        configured one (also when the named one is not installed here)."""
        name = (job.retry or {}).get("policy")
        if not name or self._resolve_policy is None:
            return self.policy
        if name not in self._policies:
            try:
                self._policies[name] = self._resolve_policy(name)
            except Exception as exc:
                log.warning("job %s: retry policy %r unavailable (%s); using the configured "
                            "one", job.id, name, exc)
                return self.policy
        return self._policies[name]

    def _outcome(self, claim: Claim, result: ExecResult, ended: int) -> Outcome:
        """What to record for a command that ended at ``ended`` (now_ms):
        the result, the retry time the policy gives a failure, and the
        command's start and end times."""
        job = claim.job
        retry_at: int | None = None
        if not result.ok:
            retry_at = next_run_at(attempts=job.attempts, max_retries=job.max_retries,
                                   now=ended, policy=self.policy_for(job),
                                   settings=job_settings(self.settings, job.retry))
        return Outcome(claim=claim, result=result, retry_at=retry_at, finished_at=ended,
                       started_at=self._start_ms.pop(claim.token, None))

    def _record(self, outcome: Outcome) -> None:
        """Record an outcome, or keep it for the next batch (see run_once). A
        busy worker claims its next jobs in the same storage call: ahead of
        time if the next command already runs, else one to run now."""
        now = now_ms()
        if not self._pending:
            self._pending_since = outcome.at(now)
        self._pending.append(outcome)
        if self._started is not None:
            if (self._ahead and len(self._pending) < AHEAD_BATCH
                    and now - self._pending_since < RESULT_WAIT_MS):
                return  # recorded with a later batch, while commands run
            limit = self._want_ahead(now)
        else:
            limit = int(self._next is None and not self._ahead and self._chain_next(now))
        self._flush(now, limit)

    def _flush(self, now: int, limit: int, *, patient: bool = True) -> None:
        """Record the results waiting, and claim up to ``limit`` jobs in the
        same storage call: ahead if a command already runs, else the first
        one to run next. Retries while the store is unreachable, unless not
        ``patient`` (then one try)."""
        pending, self._pending = self._pending, []
        if not pending and not limit:
            return
        ids = ", ".join(o.claim.job.id for o in pending) or "nothing"
        dones: list[Job | None] = []
        claims: list[Claim] = []
        if limit:
            self._note_pokes()  # the jobs claimed now are as claimed until the next poke
        while True:  # until every result is recorded (the default may stop part-way)
            rest = pending[len(dones):]

            def call(rest: list[Outcome] = rest) -> tuple[list[Job | None], list[Claim]]:
                return self.storage.record_and_claim(
                    rest, now, worker_id=self.id, lease_ms=self.lease_ms, queues=self.queues,
                    limit=limit)

            pair = self._retry_transient(f"record job(s) {ids}", call) if patient else call()
            if pair is None:  # a forced stop gave up on an unreachable store
                log.error("results of job(s) %s not recorded; their leases will end and "
                          "they will run again", ids)
                return
            dones.extend(pair[0])
            claims.extend(pair[1])
            if len(dones) >= len(pending):
                break
        if self._started is not None:
            self._ahead.extend(claims)
        elif claims:
            self._next = claims[0]
            self._ahead.extend(claims[1:])
        if claims:
            self._note_held()
        if self._held is not None:
            self._held_ok("empty the results file", self._held.clear_results)
        for outcome, done in zip(pending, dones, strict=True):
            self._announce(outcome, done)

    def _announce(self, outcome: Outcome, done: Job | None) -> None:
        """Log a recorded result and broadcast its events."""
        claim, result = outcome.claim, outcome.result
        job = claim.job
        if done is None:
            log.warning("job %s: result not recorded, the claim is no longer ours (the job was "
                        "taken back, or a lost connection had already committed it)", job.id)
            return
        attempt = None
        if self.plugins.has_listeners():  # the history is read only for plugins
            try:
                attempts = self.storage.attempts(job.id)
            except TransientStorageError:
                attempts = []
            attempt = attempts[-1] if attempts else None
        log.info("job %s %s (attempt %d%s)", job.id, done.state.value, claim.attempt,
                 "" if result.ok else f": {result.error}")
        self.plugins.job_event(_EVENTS.get(done.state, done.state.value), done, attempt)
        if done.state is JobState.DEAD:
            self.plugins.job_dead(done, attempt)
