"""A worker's housekeeping, every ``beat_ms`` whether it is idle or busy:
its heartbeat, taking back the jobs of vanished workers (killing what a dead
worker of this machine left running), retention, and held files left by
workers that are gone."""

from __future__ import annotations

import logging
from pathlib import Path

from ..joblogs import remove_job_logs
from ..ledger import Ledger
from ..models import Job, JobState, WorkerInfo
from ..plugins import Plugins
from .events import announce_held, announce_recovered
from .held import held_workers, recover_held
from .procs import is_workers_group, job_process_groups, kill_group, pid_alive

log = logging.getLogger("queuectl.worker")

#: Worker records without a heartbeat for this long are forgotten.
WORKER_RECORD_TTL_MS = 24 * 3600 * 1000
#: Automatic retention (the ``retention_days`` setting) runs this often per
#: worker, deleting at most RETENTION_BATCH jobs per transaction.
RETENTION_EVERY_MS = 60_000
RETENTION_BATCH = 1000


def release_dead_worker(ledger: Ledger, plugins: Plugins, record: WorkerInfo, now: int, *,
                        charge_attempt: bool = True, held_dir: Path | None = None
                        ) -> list[Job]:
    """A worker process of this machine is known to be gone (crashed, or
    killed by a forced stop): kill the command it left running, if that job
    is still its own; record the results it had not recorded yet and give
    back uncharged the jobs it had claimed ahead without starting them (its
    held files in ``held_dir``, see :mod:`.held`); then take back the rest
    of its jobs and forget the worker."""
    if record.current_job and is_workers_group(record.job_pgid, record.id):
        job = ledger.get(record.current_job)
        if (job is not None and job.state is JobState.PROCESSING
                and job.worker_id == record.id):
            kill_group(record.job_pgid)
    kill_orphaned_commands(ledger, record.id)
    announce_held(plugins, *recover_held(ledger, held_dir, record.id, now))
    jobs = ledger.recover_expired(now, worker_id=record.id, charge_attempt=charge_attempt)
    ledger.unregister_worker(record.id)
    announce_recovered(plugins, jobs)
    return jobs


def kill_orphaned_commands(ledger: Ledger, worker_id: str) -> None:
    """Kill, on this machine, the commands of the attempts a dead worker
    still holds, found by their environment: the worker may have died before
    it recorded its command's process group."""
    for job in ledger.list_jobs(JobState.PROCESSING):
        if job.worker_id != worker_id:
            continue
        running = [a for a in ledger.attempts(job.id)
                   if a.outcome == "running" and a.worker_id == worker_id]
        for attempt in running:
            for pgid in job_process_groups(job.id, attempt.number, worker_id):
                kill_group(pgid)


class Housekeeping:
    """What one worker does for the queue besides running jobs."""

    def __init__(self, ledger: Ledger, plugins: Plugins, *, hostname: str, log_root: Path,
                 held_dir: Path | None) -> None:
        self.ledger = ledger
        self.plugins = plugins
        self.hostname = hostname
        self.log_root = log_root
        self.held_dir = held_dir
        self._retention_at = 0

    def run(self, now: int, record: WorkerInfo, retention_days: float) -> int:
        """Heartbeat ``record`` (this worker, with what it runs), recover,
        apply retention, sweep held files. Returns how many workers are
        registered (at least 1)."""
        self.ledger.register_worker(record.replace(heartbeat_at=now))
        self.recover(now)
        self.apply_retention(now, retention_days)
        workers = self.ledger.list_workers()
        self.sweep_held(now, {w.id for w in workers})
        return max(1, len(workers))

    def recover(self, now: int) -> list[Job]:
        """Take back jobs whose lease expired. A command that its dead worker
        on this machine left running is killed first, so that it is gone
        before the job can be claimed again."""
        expired = self.ledger.expired(now)
        if not expired:
            return []
        workers = {w.id: w for w in self.ledger.list_workers()}
        dead: set[str] = set()
        for job in expired:
            owner = workers.get(job.worker_id or "")
            if (owner is not None and owner.hostname == self.hostname
                    and not pid_alive(owner.pid)):
                if owner.current_job == job.id and is_workers_group(owner.job_pgid, owner.id):
                    kill_group(owner.job_pgid)
                kill_orphaned_commands(self.ledger, owner.id)
                dead.add(owner.id)
        for owner_id in sorted(dead):
            announce_held(self.plugins, *recover_held(self.ledger, self.held_dir, owner_id,
                                                      now))
        recovered = self.ledger.recover_expired(now)
        announce_recovered(self.plugins, recovered)
        self.ledger.prune_workers(now - WORKER_RECORD_TTL_MS)
        return recovered

    def apply_retention(self, now: int, days: float) -> list[str]:
        """Purge completed, cancelled and skipped jobs older than ``days`` (the
        ``retention_days`` setting; 0: never), with their output on this
        machine, a batch at a time, at most every RETENTION_EVERY_MS."""
        if days <= 0 or now - self._retention_at < RETENTION_EVERY_MS:
            return []
        self._retention_at = now
        cutoff = now - round(days * 86_400_000)
        gone = self.ledger.purge(states=[JobState.COMPLETED, JobState.CANCELLED,
                                         JobState.SKIPPED],
                                 finished_before=cutoff, limit=RETENTION_BATCH)
        if gone:
            for warning in remove_job_logs(self.log_root, gone):
                log.warning("%s", warning)
            log.info("retention: purged %d job(s) finished before %s days ago", len(gone),
                     f"{days:g}")
            if len(gone) == RETENTION_BATCH:
                self._retention_at = 0  # more to do: next housekeeping goes on
        return gone

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
            announce_held(self.plugins, *recover_held(self.ledger, self.held_dir, worker_id,
                                                      now))
            swept.append(worker_id)
        return swept
