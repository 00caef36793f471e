"""Why a job that someone waits for (``wait``, ``logs --follow``) is not
running: said on stderr once the wait has lasted a few seconds, and again
whenever the reason changes (a worker stopped, a queue was paused)."""

from __future__ import annotations

import time
from collections.abc import Iterable

from ..errors import TransientStorageError
from ..ledger import Ledger
from ..models import Job
from ..timeutil import now_ms
from .output import note

#: How long a wait goes before it says why nothing runs.
STALL_AFTER_S = 3.0
#: How often it looks again, at most (each look reads workers and queues).
CHECK_EVERY_S = 1.0


def stall_reasons(ledger: Ledger, lease_ms: int, jobs: list[Job], now: int) -> list[str]:
    """Why ``jobs`` that wait to run (pending or failed) do not: their queue
    is paused, or no worker is running. (A job not due yet is waiting as
    asked: not a reason to say anything.)"""
    waiting = [j for j in jobs if j.state.value in ("pending", "failed")]
    if not waiting:
        return []
    queues = sorted({j.queue for j in waiting})
    paused = set(ledger.paused_queues())
    reasons = [f"queue {q!r} is paused (resume it: queuectl resume {q})"
               for q in queues if q in paused]
    alive = [w for w in ledger.list_workers() if w.heartbeat_at >= now - lease_ms]
    if not alive:
        names = ", ".join(repr(q) for q in queues if q not in paused)
        if names:
            reasons.append(f"no worker is running for queue {names} "
                           "(start one: queuectl worker start)")
    return reasons


class StallNotes:
    """Call :meth:`check` on every poll of a wait."""

    def __init__(self, ledger: Ledger, lease_ms: int) -> None:
        self.ledger = ledger
        self.lease_ms = lease_ms
        self.started = time.monotonic()
        self.checked = 0.0
        self.said: list[str] = []

    def check(self, jobs: Iterable[Job]) -> None:
        now = time.monotonic()
        if now - self.started < STALL_AFTER_S or now - self.checked < CHECK_EVERY_S:
            return
        self.checked = now
        try:
            reasons = stall_reasons(self.ledger, self.lease_ms, list(jobs), now_ms())
        except TransientStorageError:
            return
        if reasons and reasons != self.said:
            for reason in reasons:
                note(f"still waiting: {reason}")
        self.said = reasons
