"""Controlling jobs and queues: cancel, wait, pause, resume, purge."""

from __future__ import annotations

import os
import socket
import time
from typing import TYPE_CHECKING

import click

from ..commands import STATE_NAMES
from ..errors import InvalidStateError, JobNotFoundError, TransientStorageError, UsageError
from .jobs import _check_queue_name, _stored_id, json_option
from .main import State, pass_state
from .output import clip, emit_json, error_line
from .params import DURATION, DURATION_WITH_UNIT
from .stalls import StallNotes

if TYPE_CHECKING:
    from ..app import App
    from ..ledger import Ledger as Storage
    from ..models import Job, WorkerInfo

#: Jobs deleted per storage call by ``purge``, so that each transaction
#: stays short on a big queue.
PURGE_BATCH = 1000
#: ``wait`` polls the store this often: starting fast, slowing down.
WAIT_FIRST_POLL_S = 0.05
WAIT_MAX_POLL_S = 0.5
#: How long ``cancel`` waits for a just-claimed job's worker to report the
#: command's process group.
CANCEL_FIND_GROUP_S = 1.0
#: Exit status of ``wait`` when its --timeout passes first (as timeout(1)).
EXIT_TIMEOUT = 124


def remove_job_logs(app: App, job_ids: list[str]) -> None:
    """Delete the output directories of purged jobs on this machine."""
    from .. import joblogs

    for warning in joblogs.remove_job_logs(app.config.home / "logs" / "jobs", job_ids):
        click.echo(f"Warning: {warning}", err=True)


# ------------------------------------------------------------------ cancel

def _proc_stat(pid: int) -> tuple[int, int] | None:
    """(ppid, pgrp) of a live process from /proc, or None."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            fields = fh.read().rsplit(b")", 1)[1].split()
    except (OSError, IndexError):
        return None
    if fields[0] in (b"Z", b"X"):
        return None
    return int(fields[1]), int(fields[2])


def _group_is_the_jobs(pgid: int, job_id: str, worker: WorkerInfo) -> bool:
    """Is process group ``pgid`` on this machine still the job's command?
    Its leader must lead that group and be the worker's child or carry
    QUEUECTL_JOB_ID=<job id> and QUEUECTL_WORKER_ID=<worker id>, so a reused
    pid (another queue's job of the same id, even) is never signalled."""
    worker_pid = worker.pid
    if pgid <= 1:
        return False
    if not os.path.isdir("/proc/self"):
        return True  # no /proc to check with: trust the worker's record
    stat = _proc_stat(pgid)
    if stat is None or stat[1] != pgid:
        return False
    if stat[0] == worker_pid:
        return True
    from ..worker.procs import is_workers_group

    return is_workers_group(pgid, worker.id, job_id)


def _groups_by_environment(storage: Storage, job: Job) -> set[int]:
    from ..worker.procs import job_process_groups

    running = [a for a in storage.attempts(job.id)
               if a.outcome == "running" and a.worker_id == job.worker_id]
    if not running or job.worker_id is None:
        return set()
    return job_process_groups(job.id, running[-1].number, job.worker_id)


def _local_group(storage: Storage, job: Job) -> tuple[WorkerInfo | None, int | None]:
    """The worker holding a processing job, and the process group of its
    command if that runs on this machine. A worker that has just claimed
    the job reports the group a moment later, so wait for it briefly."""
    host = socket.gethostname()
    deadline = time.monotonic() + CANCEL_FIND_GROUP_S
    while True:
        holder = next((w for w in storage.list_workers() if w.id == job.worker_id), None)
        if holder is None or holder.hostname != host:
            return holder, None
        if holder.current_job == job.id and holder.job_pgid:
            pgid = holder.job_pgid
            return holder, pgid if _group_is_the_jobs(pgid, job.id, holder) else None
        # Workers record the group only at their next heartbeat; until then
        # the command is found by the job id and attempt in its environment.
        groups = _groups_by_environment(storage, job)
        if groups:
            return holder, min(groups)
        if time.monotonic() >= deadline:
            return holder, None
        time.sleep(0.05)
        current = storage.get(job.id)
        if current is None or current.state.value != "processing" \
                or current.worker_id != job.worker_id:
            return holder, None


def cancel_one(app: App, job_id: str) -> tuple[Job, str]:
    """Cancel one job (``Ledger.cancel``), stopping its command if it runs
    on this machine: the job as stored and what happened, in a sentence
    (``queuectl cancel`` and the web dashboard's cancel). Raises
    JobNotFoundError, or InvalidStateError for a finished job."""
    import signal

    from ..timeutil import now_ms
    from ..wakeup import notify

    storage = app.ledger
    job = storage.cancel(job_id, now_ms())
    if job.state.value != "processing":
        app.plugins.job_event("cancelled", job, None)
        return job, f"Cancelled job {job.id}."
    # A worker of this machine that holds the job claimed ahead, its
    # command not started, reads it again before the start when poked.
    notify(app.config.home, cancel=True)
    holder, pgid = _local_group(storage, job)
    if pgid is not None:
        try:
            os.killpg(pgid, signal.SIGTERM)
            return job, (f"Cancelling job {job.id}: sent SIGTERM to its command (process "
                         f"group {pgid}) on this machine; its worker records it as cancelled.")
        except (ProcessLookupError, PermissionError):
            pass
    lease = app.settings().lease_seconds
    where = (f" on {holder.hostname}" if holder is not None
             and holder.hostname != socket.gethostname() else "")
    return job, (f"Cancel requested for job {job.id}: its worker{where} stops it at its "
                 f"next lease renewal (within about {max(1, lease // 3)} s) and records "
                 "it as cancelled.")


@click.command()
@click.argument("job_ids", metavar="ID...", nargs=-1, required=True)
@json_option
@pass_state
def cancel(state: State, job_ids: tuple[str, ...], as_json: bool) -> None:
    """Cancel jobs: a pending or failed job becomes cancelled at once; a
    running one is stopped.

    A running job's command gets SIGTERM at once when its worker runs on
    this machine; a worker elsewhere (a shared PostgreSQL store) stops it at
    its next lease renewal. Either way the worker records the job as
    cancelled, unless the command had already succeeded. Finished jobs
    (completed, dead, cancelled) cannot be cancelled: each such id, or an
    unknown one, is reported and the others are still cancelled (exit 1 at
    the end). With --json: an array of the jobs as stored.
    """
    app = state.app()
    failed = False
    done: list[Job] = []
    for job_id in dict.fromkeys(job_ids):
        try:
            job, message = cancel_one(app, _stored_id(job_id))
        except (JobNotFoundError, InvalidStateError) as exc:
            error_line(str(exc))
            failed = True
            continue
        done.append(job)
        if not as_json:
            click.echo(message)
    if as_json:
        emit_json([j.to_json() for j in done])
    if failed:
        raise click.exceptions.Exit(1)


# ------------------------------------------------------------------ wait

def _timeout_seconds(timeout: int | None) -> float | None:
    return None if timeout is None else timeout / 1000


def _ended(job: Job) -> str:
    if job.state.value == "completed":
        return f"Job {job.id} completed."
    if job.state.value == "cancelled":
        return f"Job {job.id} was cancelled."
    if job.state.value == "skipped":
        return f"Job {job.id} was {clip(job.last_error, 100)}"
    return f"Job {job.id} is dead (in the DLQ): {clip(job.last_error, 100)}"


@click.command()
@click.argument("job_ids", metavar="ID...", nargs=-1, required=True)
@click.option("--timeout", type=DURATION, metavar="DURATION",
              help="Give up after this long (seconds, or e.g. 30s, 5m, 1h30m): exit 124.")
@json_option
@pass_state
def wait(state: State, job_ids: tuple[str, ...], timeout: int | None, as_json: bool) -> None:
    """Block until every job has finished: completed, dead, cancelled or skipped.

    \b
    Exit status:
      0    every job completed
      1    some job ended dead, cancelled or skipped (they are named), or an id
           is unknown
      124  --timeout passed first (the unfinished jobs are named)
      130  interrupted (Ctrl-C)

    Prints each job as it finishes. With --json, prints only an object:
    {"outcome": "completed" | "failed" | "timeout", "jobs": [...]} (the jobs
    as they are at the end, in the order given).
    """
    limit = _timeout_seconds(timeout)
    try:
        _wait(state, job_ids, limit, as_json)
    except KeyboardInterrupt:
        raise click.exceptions.Exit(130) from None  # Ctrl-C: quietly (click would say Aborted)


def _wait(state: State, job_ids: tuple[str, ...], limit: float | None, as_json: bool) -> None:
    deadline = None if limit is None else time.monotonic() + limit
    storage = state.app().ledger
    ids = list(dict.fromkeys(job_ids))
    jobs: dict[str, Job] = {}
    for job_id in ids:
        job = storage.get(_stored_id(job_id))
        if job is None:
            raise JobNotFoundError(job_id)
        jobs[job_id] = job
    notes = StallNotes(storage, state.app().settings().lease_seconds * 1000)
    unfinished = _poll_until_finished(storage, jobs, deadline, as_json, notes)
    bad = [jobs[i] for i in ids if jobs[i].state.value in ("dead", "cancelled", "skipped")]
    outcome = "timeout" if unfinished else "failed" if bad else "completed"
    if as_json:
        emit_json({"outcome": outcome, "jobs": [jobs[i].to_json() for i in ids]})
    if unfinished:
        if not as_json:
            listed = ", ".join(f"{i} ({jobs[i].state.value})" for i in unfinished)
            error_line(f"timed out after {limit:g}s; still unfinished: {listed}")
        raise click.exceptions.Exit(EXIT_TIMEOUT)
    if bad:
        if not as_json:
            listed = ", ".join(f"{j.id} ({j.state.value})" for j in bad)
            error_line(f"{len(bad)} of {len(ids)} job(s) did not complete: {listed}")
        raise click.exceptions.Exit(1)


def _poll_until_finished(storage: Storage, jobs: dict[str, Job], deadline: float | None,
                         as_json: bool, notes: StallNotes) -> list[str]:
    """Read the jobs (updating ``jobs``) until each is finished or the
    deadline passes, saying so of each as it ends (and, on stderr, why the
    waiting ones do not run when nothing runs them); the ids still
    unfinished."""
    finished = ("completed", "dead", "cancelled", "skipped")
    unfinished = list(jobs)
    interval = WAIT_FIRST_POLL_S
    while True:
        still: list[str] = []
        for job_id in unfinished:
            job = jobs[job_id]
            if job.state.value not in finished:
                still.append(job_id)
            elif not as_json:
                click.echo(_ended(job))
        unfinished = still
        if not unfinished or (deadline is not None and time.monotonic() >= deadline):
            return unfinished
        notes.check(jobs[job_id] for job_id in unfinished)
        pause = interval if deadline is None else max(0.0, min(interval,
                                                               deadline - time.monotonic()))
        time.sleep(pause)
        interval = min(WAIT_MAX_POLL_S, interval * 1.5)
        for job_id in unfinished:
            try:
                current = storage.get(job_id)
            except TransientStorageError:
                continue  # the store is briefly unreachable: ask again next round
            if current is None:
                raise JobNotFoundError(job_id)  # purged while we waited
            jobs[job_id] = current


# ------------------------------------------------------------------ pause / resume

def set_paused(app: App, queue_name: str, paused: bool) -> bool:
    """Pause or resume a queue (``pause``, ``resume`` and the web
    dashboard's); resuming wakes this machine's idle workers. False if it
    was so already."""
    changed = app.ledger.set_queue_paused(queue_name, paused)
    if paused is False and changed:
        from ..wakeup import notify

        notify(app.config.home)
    return changed


def _set_paused(state: State, queue_name: str, paused: bool, as_json: bool) -> None:
    changed = set_paused(state.app(), queue_name, paused)
    if as_json:
        emit_json({"queue": queue_name, "paused": paused, "changed": changed})
    elif paused:
        click.echo(f"Queue '{queue_name}' paused: workers claim nothing more from it; running "
                   "jobs finish." if changed else f"Queue '{queue_name}' is already paused.")
    else:
        click.echo(f"Queue '{queue_name}' resumed: workers claim its jobs again."
                   if changed else f"Queue '{queue_name}' was not paused.")


queue_argument = click.argument("queue_name", metavar="QUEUE", callback=_check_queue_name)


@click.command()
@queue_argument
@json_option
@pass_state
def pause(state: State, queue_name: str, as_json: bool) -> None:
    """Stop workers from claiming jobs of QUEUE (running jobs finish).

    Jobs can still be enqueued to it; workers keep serving other queues.
    The queue need not exist yet. 'queuectl resume QUEUE' undoes it.
    """
    _set_paused(state, queue_name, True, as_json)


@click.command()
@queue_argument
@json_option
@pass_state
def resume(state: State, queue_name: str, as_json: bool) -> None:
    """Let workers claim jobs of a paused QUEUE again."""
    _set_paused(state, queue_name, False, as_json)


# ------------------------------------------------------------------ purge

PURGEABLE = ("completed", "dead", "cancelled", "skipped")

dry_run_option = click.option("--dry-run", is_flag=True,
                              help="Only say which jobs would be purged; delete nothing.")


def say_would_purge(ids: list[str], what: str, as_json: bool, **extra: object) -> None:
    """What ``--dry-run`` prints: the ids ``purge`` would delete, in its order."""
    if as_json:
        emit_json({"dry_run": True, "would_purge": len(ids), "ids": ids, **extra})
    else:
        listed = f": {', '.join(ids)}" if ids else "."
        click.echo(f"Would purge {len(ids)} {what}{listed}")


@click.command()
@click.option("--state", "state_names", type=click.Choice(STATE_NAMES), multiple=True,
              metavar="STATE", help="completed, dead, cancelled or skipped: purge jobs in "
              "this state (repeatable; default: completed, cancelled and skipped).")
@click.option("--older-than", type=DURATION_WITH_UNIT, metavar="DURATION",
              help="Only jobs that finished longer ago than this, e.g. 7d, 12h, 30m "
                   "(a unit is required).")
@dry_run_option
@json_option
@pass_state
def purge(state: State, state_names: tuple[str, ...], older_than: int | None,
          dry_run: bool, as_json: bool) -> None:
    """Delete finished jobs, with their attempt history and their output on
    this machine. Irreversible.

    \b
      queuectl purge                                 # completed, cancelled, skipped
      queuectl purge --state completed --older-than 7d
      queuectl purge --state dead --older-than 30d   # dead only when asked
      queuectl purge --older-than 1w --dry-run       # only say which jobs

    Only completed, dead, cancelled and skipped jobs can be purged. Jobs are deleted
    in batches of 1000, each in its own short transaction.
    """
    from ..models import JobState
    from ..timeutil import iso, now_ms

    refused = [s for s in state_names if s not in PURGEABLE]
    if refused:
        raise UsageError(f"cannot purge {refused[0]} jobs: only {', '.join(PURGEABLE)} "
                         "jobs can be purged")
    names = list(dict.fromkeys(state_names)) or ["completed", "cancelled", "skipped"]
    now = now_ms()
    # Without --older-than: everything that finished before this command started.
    cutoff = max(0, now - older_than) if older_than is not None else now + 1
    finished_before = iso(cutoff) if older_than is not None else None
    app = state.app()
    if not dry_run:
        from ..security import check_home_trusted

        check_home_trusted(app, "purge")
    states = [JobState(n) for n in names]
    if dry_run:
        jobs = app.ledger.purgeable(states=states, finished_before=cutoff)
        say_would_purge([j.id for j in jobs], "job(s)", as_json, states=names,
                        finished_before=finished_before)
        return
    total = 0
    while batch := app.ledger.purge(states=states, finished_before=cutoff, limit=PURGE_BATCH):
        total += len(batch)
        remove_job_logs(app, batch)
    pruned = _prune_firings(app, cutoff)
    if as_json:
        emit_json({"purged": total, "states": names, "finished_before": finished_before,
                   "firings_pruned": pruned})
        return
    click.echo(f"Purged {total} job(s)." + (f" Pruned {pruned} schedule firing record(s)."
                                            if pruned else ""))


def _prune_firings(app: App, before: int) -> int:
    """Schedules' firing records go with old jobs, except each schedule's
    newest CATCHUP_CAP (the catch-up window; docs/semantics.md)."""
    store = app.ledger.store
    if not store.supports_schedules:
        return 0
    from ..schedules import CATCHUP_CAP

    return store.prune_firings(before, CATCHUP_CAP)


__all__ = ["cancel", "pause", "purge", "resume", "wait"]
