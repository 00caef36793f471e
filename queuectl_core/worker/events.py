"""What the worker tells plugins, and the log, once a change is stored."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from ..errors import TransientStorageError
from ..models import Attempt, Job, JobState, Outcome

if TYPE_CHECKING:
    from ..ledger import Ledger
    from ..plugins import Plugins

log = logging.getLogger("queuectl.worker")

#: Event broadcast for each state a recorded attempt can leave a job in.
EVENTS = {JobState.COMPLETED: "completed", JobState.FAILED: "failed",
          JobState.DEAD: "dead", JobState.CANCELLED: "cancelled"}


def announce_result(plugins: Plugins, job: Job, attempt: Attempt | None = None) -> None:
    """A finished attempt was recorded and left ``job`` as it is."""
    plugins.job_event(EVENTS.get(job.state, job.state.value), job, attempt)
    if job.state is JobState.DEAD:
        plugins.job_dead(job, attempt)


def announce_recorded(plugins: Plugins, ledger: Ledger, outcome: Outcome,
                      done: Job | None) -> None:
    """Log a recorded result and broadcast its events (None: fenced out)."""
    claim, result = outcome.claim, outcome.result
    if done is None:
        log.warning("job %s: result not recorded, the claim is no longer ours (the job was "
                    "taken back, or a lost connection had already committed it)", claim.job.id)
        return
    attempt = None
    if plugins.has_listeners():  # the history is read only for plugins
        try:
            attempts = ledger.attempts(claim.job.id)
        except TransientStorageError:
            attempts = []
        attempt = attempts[-1] if attempts else None
    log.info("job %s %s (attempt %d%s)", claim.job.id, done.state.value, claim.attempt,
             "" if result.ok else f": {result.error}")
    announce_result(plugins, done, attempt)


def announce_held(plugins: Plugins, recorded: list[Job], given_back: list[Job]) -> None:
    """Broadcast what recovering a vanished worker's held files did: the
    results recorded (as the worker would have), and of the jobs given back
    uncharged, those a cancel reached (the others are as before the claim)."""
    for job in recorded:
        announce_result(plugins, job)
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
