"""The worker loop: claim a due job, run it while renewing its lease, record
the outcome. It changes jobs only through the Ledger and runs commands only
through the Executor (plus the plugin broadcasts).

Single-threaded: the command runs in its own process group and the loop
waits on it in short slices, renewing the lease and doing housekeeping
between slices. A busy worker records a result and claims its next job in
one storage call; with ``ClaimAhead`` (the default) it also claims jobs
ahead while a command runs and records results in batches (``ahead.py``).
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import time
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TypeVar

from ..builtin import ExponentialBackoff
from ..errors import TransientStorageError
from ..executor import Execution, Executor, Prepared
from ..joblogs import job_log_dir
from ..ledger import Ledger
from ..models import Claim, ExecResult, Job, Outcome, WorkerInfo
from ..plugins import Plugins, error_text
from ..retry import BackoffPolicy, job_settings, next_run_at
from ..settings import Settings
from ..timeutil import now_ms
from ..wakeup import WakeupListener
from .ahead import ClaimAhead
from .events import announce_recorded, announce_recovered
from .firing import ScheduleFirer
from .housekeeping import Housekeeping
from .lease import RESULT_RETRY_S, Lease, call_deadline_ms
from .signals import StopSignal

log = logging.getLogger("queuectl.worker")

T = TypeVar("T")

#: Longest slice the worker blocks for while a command runs, so that a
#: forced stop or a lost parent is noticed quickly.
WAIT_SLICE_S = 1.0
#: Settings are re-read from the store at most this often.
SETTINGS_REFRESH_MS = 1000
#: Longest wait between retries while the store is unreachable.
MAX_OUTAGE_WAIT_S = 10.0


class Worker:
    def __init__(
        self,
        *,
        ledger: Ledger,
        executor: Executor,
        policy: BackoffPolicy,
        plugins: Plugins,
        settings_loader: Callable[[Ledger], Settings],
        log_root: Path,
        stop: StopSignal | None = None,
        worker_id: str | None = None,
        parent_pid: int | None = None,
        wakeup: WakeupListener | None = None,
        queues: Sequence[str] | None = None,
        policy_resolver: Callable[[str], BackoffPolicy] | None = None,
        policy_label: Callable[[str | None], str] | None = None,
        held_dir: Path | None = None,
        claim_ahead: bool = True,
    ) -> None:
        self.ledger = ledger
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
        self._policy_label = policy_label
        self._policies: dict[str, BackoffPolicy] = {}
        self.settings = self._load_settings(ledger)
        ledger.store.bound_calls(call_deadline_ms(self.lease_ms) / 1000)
        self._settings_at = now_ms()
        self._housekeeping_at = 0
        self.jobs_run = 0
        self.keeper = Housekeeping(ledger, plugins, hostname=self.hostname, log_root=log_root,
                                   held_dir=held_dir)
        #: This worker as registered in the store (heartbeats update it).
        self.record = WorkerInfo(id=self.id, hostname=self.hostname, pid=self.pid,
                                 started_at=0, heartbeat_at=0)
        #: Workers registered in the store (read at each housekeeping).
        self.worker_count = 1
        #: While :meth:`run` loops, a busy worker records a result and claims
        #: its next job in one storage call; the job so claimed waits here
        #: for the next :meth:`run_once`.
        self.chain_claims = False
        self.next_claim: Claim | None = None
        #: When each command not recorded yet started (claim token -> now_ms).
        self.start_ms: dict[str, int] = {}
        #: The optional strategy: claims ahead and batched results.
        self.ahead = ClaimAhead(self, held_dir) if claim_ahead else None
        #: This worker's part in firing recurring schedules.
        self.firer = ScheduleFirer(ledger, lambda: self.settings.max_retries)

    # ---------------------------------------------------------- helpers
    @property
    def lease_ms(self) -> int:
        return self.settings.lease_seconds * 1000

    @property
    def beat_ms(self) -> int:
        """Heartbeats, lease renewals and recovery sweeps happen this often."""
        return max(1000, self.lease_ms // 3)

    def refresh_settings(self, now: int) -> None:
        if now - self._settings_at >= SETTINGS_REFRESH_MS:
            try:
                self.settings = self._load_settings(self.ledger)
                self.ledger.store.bound_calls(call_deadline_ms(self.lease_ms) / 1000)
            except TransientStorageError as exc:  # keep the last good settings
                log.warning("storage unavailable while reloading settings (%s); keeping the "
                            "last ones", exc)
            except Exception as exc:
                log.warning("could not reload settings: %s", exc)
            self._settings_at = now

    def check_parent(self) -> None:
        """A worker whose supervisor died stops as if asked to: it finishes
        its current job, claims nothing more, and exits."""
        if (self.parent_pid is not None and os.getppid() != self.parent_pid
                and not self.stop.graceful):
            log.warning("supervisor %d went away; finishing up and stopping", self.parent_pid)
            self.stop.finish_up()

    def housekeeping_due(self, now: int) -> bool:
        return now - self._housekeeping_at >= self.beat_ms

    def housekeeping(self, now: int, current: Claim | None = None,
                     execution: Execution | None = None) -> None:
        """Heartbeat (with what this worker runs), recovery, retention."""
        self._housekeeping_at = now
        self.record = self.record.replace(
            current_job=current.job.id if current else None,
            job_pgid=execution.pgid if execution else None)
        self.worker_count = self.keeper.run(now, self.record, self.settings.retention_days)
        if self.firer.due(now):  # a busy worker fires ticks at each beat
            self.firer.run(now)

    def chain_next(self, now: int) -> bool:
        """May the result being recorded now claim the next job in the same
        storage call? Only if nothing has to happen between the two steps:
        no stop requested (also a lost supervisor), no housekeeping due
        (heartbeat, recovery, retention), no plugin waiting for the job's
        events (they run before the next claim, as without chaining). A DLQ
        handler alone (``queuectl_job_dead``) does not prevent it: it is
        called after the move to the DLQ is stored either way."""
        if not self.chain_claims:
            return False
        self.check_parent()
        if self.stop.graceful or self.housekeeping_due(now) or self.firer.due(now):
            return False
        if self.plugins.has_event_listeners():
            return False
        self.refresh_settings(now)  # the next claim's lease length
        return True

    def retry_transient(self, what: str, call: Callable[[], T],
                        max_delay: float = MAX_OUTAGE_WAIT_S) -> T | None:
        """Run a storage call, retrying while the store is unreachable
        (TransientStorageError) with backoff up to ``max_delay`` seconds.
        Gives up (returns None) only on a forced stop."""
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
                delay = min(max_delay, delay * 2)
                continue
            if delay > 0.5:
                log.info("storage reachable again; %s done", what)
            return result

    # ---------------------------------------------------------- main loop
    def run(self) -> None:
        def register() -> bool:
            now = now_ms()
            self.record = self.record.replace(started_at=now, heartbeat_at=now)
            self.ledger.register_worker(self.record)
            self.housekeeping(now)
            return True

        if not self.retry_transient("register the worker", register):
            return
        log.info("worker %s started (pid %d, %s)", self.id, self.pid, self.ledger.describe())
        outage = 0.5
        self.chain_claims = True
        try:
            # A job claimed together with the last result was claimed before
            # any stop request was seen (chain_next checks): it runs, as a
            # job claimed just before a stop always has.
            while self.busy() or not self.stop.graceful:
                if not self.busy():
                    self.check_parent()
                    if self.stop.graceful and (self.ahead is None or self.ahead.give_back()):
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
        if self.ahead is not None:
            self.ahead.close()
        # Only a clean exit forgets the worker: after an error its record
        # stays, so that its supervisor can find and release what it held.
        with contextlib.suppress(Exception):
            self.ledger.unregister_worker(self.id)
        log.info("worker %s stopped after %d job(s)", self.id, self.jobs_run)

    def busy(self) -> bool:
        """Is a job already claimed (or started) to run next?"""
        return self.next_claim is not None or (self.ahead is not None and self.ahead.busy())

    def run_once(self) -> bool:
        """Claim and run one job, or sleep when none is due. True if a job ran.
        (The job that the last result's storage call claimed, if any, is the
        one run; with claims ahead, see ``ClaimAhead``.)"""
        if self.ahead is not None:
            started = self.ahead.take_started()
            if started is not None:
                held, execution, failed = started
                self.execute(held, started=(execution, failed))
                self.jobs_run += 1
                return True
            if self.next_claim is None:
                self.next_claim = self.ahead.next_held()
        claim: Claim | None = self.next_claim
        self.next_claim = None
        if claim is None:
            now = now_ms()
            self.refresh_settings(now)
            if self.housekeeping_due(now):
                self.housekeeping(now)
            elif self.firer.due(now):
                self.firer.run(now)
            claim = self.ledger.claim(self.id, now, self.lease_ms, self.queues)
            if claim is None:
                self._idle(now)
                return False
        self.execute(claim)
        self.jobs_run += 1
        return True

    def _idle(self, now: int) -> None:
        if self.ahead is not None:
            self.ahead.note_idle()
        wait_ms = min(self.settings.worker_idle_delay,
                      self._housekeeping_at + self.beat_ms - now)
        due = self.ledger.next_run_at(self.queues)
        if due is not None:
            wait_ms = min(wait_ms, due - now)
        tick = self.firer.wait_ms(now)
        if tick is not None:
            wait_ms = min(wait_ms, tick)
        self.stop.sleep(max(0, wait_ms) / 1000, self.wakeup, self.ledger)
        self.firer.stale()  # woken: a schedule may have been added or changed

    # ---------------------------------------------------------- one job
    def start(self, claim: Claim, prepared: Prepared | None = None
              ) -> tuple[Execution | None, ExecResult | None]:
        """Start the claimed job's command (``prepared`` ahead, if it was):
        its execution, or the result of a start that failed."""
        job = claim.job
        # DEBUG: at INFO, two lines per job cost a busy worker more than its
        # claim; the line that records the outcome stays at INFO.
        log.debug("running job %s (attempt %d): %s", job.id, claim.attempt, job.command)
        self.plugins.job_event("claimed", job, None)
        if prepared is None and self.ahead is not None:
            prepared = self.ahead.take_prepared(claim)
        self.start_ms[claim.token] = now_ms()
        try:
            if prepared is not None:
                return prepared.start(), None
            # The executor creates the directory when the command first
            # writes something: most short jobs write nothing.
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
        execution, result = started if started is not None else self.start(claim)
        begun = time.monotonic()
        if execution is not None:
            # The command's process group reaches the store with the next
            # heartbeat (every beat_ms); until then a release or a cancel
            # finds the command by QUEUECTL_JOB_ID/QUEUECTL_ATTEMPT.
            try:
                result = self._wait(claim, execution)
            except BaseException:
                # Never leave a command running behind a worker that is
                # about to die: kill it and give the job back (the attempt
                # counts, so a job that keeps breaking workers ends dead).
                log.exception("worker error while running job %s; killing it", claim.job.id)
                with contextlib.suppress(Exception):
                    execution.kill()
                if self.ahead is not None:
                    with contextlib.suppress(Exception):
                        self.ahead.abandon()
                with contextlib.suppress(Exception):
                    announce_recovered(self.plugins, self.ledger.recover_expired(
                        now_ms(), worker_id=self.id))
                raise
            if result is None:
                self.start_ms.pop(claim.token, None)
                return  # the claim was lost or a forced stop released it
        assert result is not None
        outcome = self.outcome(claim, result, now_ms())
        if self.ahead is not None:
            self.ahead.finished(outcome, (time.monotonic() - begun) * 1000)
        else:
            self.record_now(outcome)

    def record_now(self, outcome: Outcome) -> None:
        """Record one result, claiming the next job in the same call when
        nothing has to happen in between."""
        now = now_ms()
        limit = int(self.chain_next(now))

        def call() -> tuple[list[Job | None], list[Claim]]:
            return self.ledger.record_and_claim([outcome], now, worker_id=self.id,
                                                lease_ms=self.lease_ms, queues=self.queues,
                                                limit=limit)

        pair = self.retry_transient(f"record job {outcome.claim.job.id}", call,
                                    RESULT_RETRY_S)
        if pair is None:  # a forced stop gave up on an unreachable store
            log.error("result of job %s not recorded; its lease will end and it will run "
                      "again", outcome.claim.job.id)
            return
        [done], claims = pair
        self.next_claim = claims[0] if claims else None
        announce_recorded(self.plugins, self.ledger, outcome, done)

    def timeout_of(self, job: Job) -> float | None:
        """Seconds the job may run: its own timeout, else ``job_timeout``."""
        if job.timeout is not None:
            return job.timeout
        return self.settings.job_timeout or None

    def _wait(self, claim: Claim, execution: Execution) -> ExecResult | None:
        lease = Lease(claim.lease_expires_at, self.lease_ms, self.beat_ms, now_ms())
        limit = self.timeout_of(claim.job)
        deadline = None if limit is None else time.monotonic() + limit
        if self.ahead is not None:
            self.ahead.while_running()
        while True:
            slice_s = min(WAIT_SLICE_S, max(0.0, (lease.renew_at - now_ms()) / 1000))
            if deadline is not None:
                slice_s = min(slice_s, max(0.0, deadline - time.monotonic()))
            if self.ahead is not None:
                slice_s = min(slice_s, self.ahead.next_tick())
            result = execution.wait(slice_s)
            if result is not None:
                return result
            if self.ahead is not None:
                self.ahead.tick()
            if deadline is not None and time.monotonic() >= deadline:
                assert limit is not None
                log.warning("job %s timed out after %s s; stopping it", claim.job.id,
                            f"{limit:g}")
                result = execution.kill()
                detail = f" ({result.error})" if result.error else ""
                return result.replace(error=f"timed out after {limit:g} s{detail}")
            self.check_parent()
            if self.stop.forced:
                log.warning("forced stop: killing job %s; it will run again (this attempt "
                            "does not count)", claim.job.id)
                execution.kill()
                if self.ahead is not None:
                    # Finished jobs first: the recovery below would take them back.
                    self.ahead.abandon(patient=True)
                announce_recovered(self.plugins, self.ledger.recover_expired(
                    now_ms(), worker_id=self.id, charge_attempt=False))
                return None
            now = now_ms()
            if now >= lease.renew_at:
                try:
                    renewed = self.ledger.renew(claim, now, self.lease_ms)
                except TransientStorageError as exc:
                    # Keep the command running while the store may come back
                    # before the lease ends; past that another worker may
                    # start the job, so stop it first (see worker.lease).
                    if lease.failed(now_ms()):
                        log.error("could not renew the lease of job %s before it ends (%s); "
                                  "stopping this run so that it never runs twice at once; it "
                                  "will be taken back and run again", claim.job.id, exc)
                        execution.kill()
                        return None
                    log.warning("could not renew the lease of job %s (%s); will retry",
                                claim.job.id, exc)
                    continue
                if renewed is None:
                    log.error("lost the claim on job %s (lease expired and it was recovered); "
                              "stopping this run of it", claim.job.id)
                    execution.kill()
                    return None
                if renewed.cancel_requested_at is not None:
                    log.warning("job %s: cancel requested; stopping it", claim.job.id)
                    result = execution.kill()
                    detail = f" ({result.error})" if result.error else ""
                    return result.replace(error=f"cancelled while running{detail}")
                lease.renewed(now, renewed.lease_expires_at)
                with contextlib.suppress(TransientStorageError):
                    self.housekeeping(now, claim, execution)
                self.refresh_settings(now)

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

    def policy_name(self, job: Job, policy: BackoffPolicy) -> str:
        """``retry policy 'NAME' (from DIST VERSION)`` for ``policy``, the
        one :meth:`policy_for` gave ``job``, for messages."""
        name = None if policy is self.policy else (job.retry or {}).get("policy")
        if self._policy_label is not None:
            with contextlib.suppress(Exception):
                return self._policy_label(name)
        return f"retry policy {name!r}" if name else "the configured retry policy"

    def outcome(self, claim: Claim, result: ExecResult, ended: int) -> Outcome:
        """What to record for a command that ended at ``ended`` (now_ms):
        the result, the retry time the policy gives a failure, and the
        command's start and end times.

        A policy that raises (or returns no number) is a plugin's bug, not
        the job's nor the worker's: the attempt stays failed, its error says
        which policy failed and how, and the job runs again after the
        default exponential delay."""
        job = claim.job
        retry_at: int | None = None
        if not result.ok:
            policy = self.policy_for(job)
            settings = job_settings(self.settings, job.retry)
            try:
                retry_at = next_run_at(attempts=job.attempts, max_retries=job.max_retries,
                                       now=ended, policy=policy, settings=settings)
            except Exception as exc:
                failed = (f"{self.policy_name(job, policy)} failed: {error_text(exc)}; "
                          "retrying with the default exponential delay")
                log.error("job %s: %s", job.id, failed)
                retry_at = next_run_at(attempts=job.attempts, max_retries=job.max_retries,
                                       now=ended, policy=ExponentialBackoff(),
                                       settings=settings)
                result = result.replace(
                    error=f"{result.error}; {failed}" if result.error else failed)
        return Outcome(claim=claim, result=result, retry_at=retry_at, finished_at=ended,
                       started_at=self.start_ms.pop(claim.token, None))
