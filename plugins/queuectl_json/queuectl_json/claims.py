"""What a claim may take: the due jobs of the open queues in claim order,
passing over those whose concurrency key has no free slot (no head-of-line
blocking). Read from the state (and the changes of the call so far, for a
claim made in one line with them), under the store's lock."""

from __future__ import annotations

import heapq
from collections.abc import Iterator, Sequence

from .changes import Batch
from .derived import Slots, running_after
from .records import CLAIMABLE_STATES, Record, claim_key
from .state import State


def claimable(state: State, queues: Sequence[str] | None) -> Iterator[Record]:
    """Jobs a claim from ``queues`` could take once due."""
    allowed = None if queues is None else set(queues)
    paused = state.paused
    for rec in state.jobs.values():
        if rec["state"] in CLAIMABLE_STATES:
            name = rec["queue"]
            if name not in paused and (allowed is None or name in allowed):
                yield rec


def slots(state: State, batch: Batch | None = None) -> Slots:
    """Free slots per concurrency key (once ``batch`` is committed)."""
    running = state.derived.running
    if batch is not None and batch.records:
        running = running_after(running, state.jobs, batch.records)
    return Slots(state.settings, running)


def due(state: State, now: int, queues: Sequence[str] | None, limit: int,
        batch: Batch | None = None) -> list[Record]:
    """Up to ``limit`` due jobs, in claim order, each keyed one only while
    its key has a free slot (one pass over the active jobs: the hot loop of
    every claim; the slots are looked at only when a keyed job is among the
    best)."""
    if limit <= 0:
        return []
    allowed = None if queues is None else set(queues)
    paused = state.paused
    jobs = state.jobs
    ready = [r for r in (jobs.values() if batch is None else batch.active(jobs))
             if r["run_at"] <= now and r["state"] in CLAIMABLE_STATES
             and r["queue"] not in paused and (allowed is None or r["queue"] in allowed)]
    if limit == 1:
        best = [min(ready, key=claim_key)] if ready else []
    else:
        best = heapq.nsmallest(limit, ready, key=claim_key)
    if all(r["concurrency_key"] is None for r in best):
        return best
    return slots(state, batch).pick(ready, limit)
