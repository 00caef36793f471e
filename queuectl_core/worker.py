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
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TypeVar

from .errors import TransientStorageError
from .executor import Execution, Executor
from .joblogs import job_log_dir, remove_job_logs
from .models import Claim, ExecResult, Job, JobState, Settings, WorkerInfo
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
                        charge_attempt: bool = True) -> list[Job]:
    """A worker process is known to be gone (crashed, or killed by a forced
    stop): kill the command it left running, if that job is still its own,
    then give its jobs back and forget the worker."""
    if record.current_job and record.job_pgid:
        job = storage.get(record.current_job)
        if (job is not None and job.state is JobState.PROCESSING
                and job.worker_id == record.id):
            kill_group(record.job_pgid)
    kill_orphaned_commands(storage, record.id)
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
        #: While :meth:`run` loops, a busy worker records a result and claims
        #: its next job in one storage call (``finish_and_claim``); the job
        #: so claimed waits here for the next :meth:`run_once`.
        self.chain_claims = False
        self._next: Claim | None = None
        #: Claimed ahead, its command not started yet (see run_once).
        self._ahead: Claim | None = None
        #: Did the last job run shorter than AHEAD_HOLD_MS? Only then is the
        #: next job claimed ahead.
        self._ahead_ok = True
        #: Workers registered in the store (read at each housekeeping):
        #: claiming ahead needs at least that many due jobs.
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
        self._worker_count = max(1, len(self.storage.list_workers()))

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
        for job in expired:
            owner = workers.get(job.worker_id or "")
            if (owner is not None and owner.hostname == self.hostname
                    and not pid_alive(owner.pid)):
                if owner.current_job == job.id:
                    kill_group(owner.job_pgid)
                kill_orphaned_commands(self.storage, owner.id)
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
        # Only a clean exit forgets the worker: after an error its record
        # stays, so that its supervisor can find and release what it held.
        with contextlib.suppress(Exception):
            self.storage.unregister_worker(self.id)
        log.info("worker %s stopped after %d job(s)", self.id, self.jobs_run)

    def run_once(self) -> bool:
        """Claim and run one job, or sleep when none is due. True if a job ran.

        A busy worker keeps the store off the path from one command to the
        next: while a command runs, it holds the claim on its next job
        ("claimed ahead", made together with the previous result), and when
        the command ends it starts that job's command first and records the
        result after. It claims ahead only while at least as many jobs are
        due as there are workers (so that no idle worker waits for a job
        held here), and gives such a job back (``Storage.release``) when the
        current command runs longer than AHEAD_HOLD_MS. (The job that the
        last result's ``finish_and_claim`` claimed, if any, is the one run.)"""
        if self._started is not None:
            (held, execution, failed), self._started = self._started, None
            self.execute(held, started=(execution, failed))
            self.jobs_run += 1
            return True
        if self._next is None and self._ahead is not None:
            # Claimed ahead, but the previous result was recorded alone (a
            # housekeeping was due, or the previous claim was lost): it runs
            # now, after the housekeeping that stopped the chain.
            self._next, self._ahead = self._ahead, None
            now = now_ms()
            if now - self._housekeeping_at >= self.beat_ms:
                self.housekeeping(now)
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
    def _want_ahead(self, now: int) -> bool:
        """Should the next claim be made ahead (see run_once)? Not while
        chaining is off, after a long job, or when fewer jobs are due than
        there are workers; never on a backend without ``due_count``."""
        if not self._ahead_ok or self._ahead is not None or not self._chain_next(now):
            return False
        try:
            due = self.storage.due_count(now, self.queues, limit=self._worker_count)
        except TransientStorageError:
            return False
        return due is not None and due >= self._worker_count

    def _claim_ahead(self) -> None:
        """While a command runs: claim the next job ahead, if it is worth it."""
        now = now_ms()
        if not self._want_ahead(now):
            return
        with contextlib.suppress(TransientStorageError):
            self._ahead = self.storage.claim(self.id, now, self.lease_ms, self.queues)

    def _give_back_ahead(self) -> bool:
        """Release the job claimed ahead, if any. False if the store could
        not be reached: the claim is then still held (and will run)."""
        ahead = self._ahead
        if ahead is None:
            return True
        try:
            released = self.storage.release(ahead, now_ms())
        except TransientStorageError as exc:
            log.warning("could not give back job %s claimed ahead (%s); will run it",
                        ahead.job.id, exc)
            self._next, self._ahead = ahead, None
            return False
        self._ahead = None
        if released is not None and released.state is JobState.CANCELLED:
            self.plugins.job_event("cancelled", released, None)
        elif released is not None and self.wakeup is not None:
            self.wakeup.poke_others()  # an idle worker may take it now
        log.debug("gave back job %s claimed ahead", ahead.job.id)
        return True

    def _start_ahead(self) -> None:
        """The current command has ended: start the command of the job
        claimed ahead (unless a cancel reached it meanwhile) before the
        previous result is recorded."""
        ahead, self._ahead = self._ahead, None
        assert ahead is not None
        try:
            job = self.storage.get(ahead.job.id)
        except TransientStorageError:
            job = ahead.job
        if job is None or job.state is not JobState.PROCESSING or job.worker_id != self.id:
            return  # taken back meanwhile: not ours any more
        if job.cancel_requested_at is not None:
            self._ahead = ahead
            self._give_back_ahead()  # becomes cancelled, never started
            return
        self._started = (ahead, *self._start(ahead))

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
        wait_ms = min(self.settings.worker_idle_delay,
                      self._housekeeping_at + self.beat_ms - now)
        due = self.storage.next_run_at(self.queues)
        if due is not None:
            wait_ms = min(wait_ms, due - now)
        self.stop.sleep(max(0, wait_ms) / 1000, self.wakeup, self.storage)

    def _start(self, claim: Claim) -> tuple[Execution | None, ExecResult | None]:
        """Start the claimed job's command: its execution, or the result of
        a start that failed."""
        job = claim.job
        # DEBUG: at INFO, two lines per job cost a busy worker more than its
        # claim; the line that records the outcome stays at INFO.
        log.debug("running job %s (attempt %d): %s", job.id, claim.attempt, job.command)
        self.plugins.job_event("claimed", job, None)
        # The executor creates the directory when the command first writes
        # something: most short jobs write nothing, and three metadata writes
        # per job (mkdir, two files) cost more than the job's SQLite work.
        log_dir = job_log_dir(self.log_root, job.id)
        try:
            return self.executor.start(
                job, attempt=claim.attempt, log_dir=log_dir,
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
                    self._give_back_ahead()
                with contextlib.suppress(Exception):
                    announce_recovered(self.plugins, self.storage.recover_expired(
                        now_ms(), worker_id=self.id))
                raise
            if result is None:
                return  # the claim was lost or a forced stop released it
        assert result is not None
        self._ahead_ok = (time.monotonic() - begun) * 1000 < AHEAD_HOLD_MS
        if self._ahead is not None:
            if self._chain_next(now_ms()):
                self._start_ahead()
            elif self.stop.graceful:
                self._give_back_ahead()
        self._record(claim, result)

    def timeout_of(self, job: Job) -> float | None:
        """Seconds the job may run: its own timeout, else ``job_timeout``."""
        if job.timeout is not None:
            return job.timeout
        return self.settings.job_timeout or None

    def _wait(self, claim: Claim, execution: Execution) -> ExecResult | None:
        renew_at = now_ms() + self.beat_ms
        limit = self.timeout_of(claim.job)
        deadline = None if limit is None else time.monotonic() + limit
        if self._ahead is None and self._next is None:
            self._claim_ahead()
        hold_until = time.monotonic() + AHEAD_HOLD_MS / 1000
        while True:
            slice_s = min(WAIT_SLICE_S, max(0.0, (renew_at - now_ms()) / 1000))
            if deadline is not None:
                slice_s = min(slice_s, max(0.0, deadline - time.monotonic()))
            if self._ahead is not None:
                slice_s = min(slice_s, max(0.0, hold_until - time.monotonic()))
            result = execution.wait(slice_s)
            if result is not None:
                return result
            if self._ahead is not None and time.monotonic() >= hold_until:
                # A long command: the job claimed ahead goes back to the queue.
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

    def _record(self, claim: Claim, result: ExecResult) -> None:
        """Record the outcome. A busy worker claims its next job in the same
        storage call: ahead of time if the next command already runs (see
        run_once), else to run it now."""
        now = now_ms()
        job = claim.job
        retry_at: int | None = None
        if result.ok:
            what = "completed"
        else:
            retry_at = next_run_at(attempts=job.attempts, max_retries=job.max_retries, now=now,
                                   policy=self.policy_for(job),
                                   settings=job_settings(self.settings, job.retry))
            what = "failed" if retry_at is not None else "dead"
        done: Job | None
        if self._started is not None:
            chain = self._want_ahead(now)
        else:
            chain = self._next is None and self._ahead is None and self._chain_next(now)
        if chain:
            pair = self._retry_transient(
                f"record job {job.id} as {what}",
                lambda: self.storage.finish_and_claim(
                    claim, result, now, completed=result.ok, retry_at=retry_at,
                    worker_id=self.id, lease_ms=self.lease_ms, queues=self.queues))
            done, following = pair if pair is not None else (None, None)
            if self._started is not None:
                self._ahead = following
            else:
                self._next = following
        elif result.ok:
            done = self._retry_transient(
                f"record job {job.id} as completed",
                lambda: self.storage.complete(claim, result, now))
        else:
            done = self._retry_transient(
                f"record job {job.id} as {what}",
                lambda: self.storage.fail(claim, result, now, retry_at))
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
