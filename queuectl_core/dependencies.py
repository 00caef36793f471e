"""Dependencies: the rules for jobs that run after other jobs, decided here,
once, and made in the same store call as the change that triggers them.

A job with ``after`` (its parents) is placed when it is enqueued:

* ``after_mode`` ``success`` (the default): it is ``skipped`` at once if a
  parent is ``dead``, ``cancelled`` or ``skipped``; ``pending`` if every
  parent is ``completed``; else ``waiting``.
* ``finished``: ``pending`` once every parent is final (completed, dead,
  cancelled or skipped), else ``waiting``.

A waiting job keeps ``waiting_on``, the number of parents it still waits
for. When a parent changes state, each child is moved forward in the same
store call (:func:`consequences`): the count goes down as parents finish, the
child becomes ``pending`` at zero, or ``skipped`` at once when a parent
rules it out, which cascades to the child's own children. When a parent
moves back (``dlq retry`` of a dead parent, or a skipped parent re-armed),
its waiting and skipped children are decided again from all their parents:
a skipped child waits again.

Every parent carries ``dependents``, the number of jobs naming it; it is
part of every change's fence (``transitions.FENCE``), and enqueueing a child
raises it in the same store call, so a parent that finishes while a child
is being enqueued is never missed: one of the two writes finds the parent
changed and is decided again.
"""

from __future__ import annotations

from collections import deque

from .errors import UnknownParentError, UsageError, shown
from .models import FINISHED_STATES, Change, Job, JobState
from .transitions import fence

# typing is not imported at run time (the CLI's hot path).
TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence
    from typing import Any

    from .storage import Storage

#: Parent states that rule out a child under ``after_mode`` success.
RULING_OUT = (JobState.DEAD, JobState.CANCELLED, JobState.SKIPPED)
SKIPPED_ERROR = "skipped: job {parent!r}, which it runs after, is {state}"


def mode_of(job: Job) -> str:
    return job.after_mode or "success"


def done_for(mode: str, state: JobState) -> bool:
    """Does a parent in ``state`` no longer hold back a child of ``mode``?"""
    if mode == "finished":
        return state in FINISHED_STATES
    return state is JobState.COMPLETED


def rules_out(mode: str, state: JobState) -> bool:
    """Does a parent in ``state`` rule out a child of ``mode`` (skipped)?"""
    return mode == "success" and state in RULING_OUT


def matters_to_children(before: JobState, after: JobState) -> bool:
    """Can a parent moving from ``before`` to ``after`` move a child (of
    either mode)? Not, say, from waiting to pending."""
    return any(done_for(mode, before) is not done_for(mode, after)
               or rules_out(mode, before) is not rules_out(mode, after)
               for mode in ("success", "finished"))


def readiness(mode: str, parents: Sequence[Job]) -> tuple[JobState, int, Job | None]:
    """A child's state from its parents as they are: (state, waiting_on,
    the parent that rules it out or None)."""
    for parent in parents:
        if rules_out(mode, parent.state):
            return JobState.SKIPPED, 0, parent
    left = sum(not done_for(mode, p.state) for p in parents)
    return (JobState.WAITING if left else JobState.PENDING), left, None


def _skip_fields(parent: Job, now: int) -> dict[str, Any]:
    return {"state": JobState.SKIPPED, "waiting_on": 0, "finished_at": now, "updated_at": now,
            "last_error": SKIPPED_ERROR.format(parent=parent.id, state=parent.state.value)}


def _placed_fields(state: JobState, left: int, blame: Job | None, now: int
                   ) -> dict[str, Any]:
    if blame is not None:
        return _skip_fields(blame, now)
    return {"state": state, "waiting_on": left, "finished_at": None, "updated_at": now,
            "last_error": None}


# ------------------------------------------------------------------ enqueue

def placed(store: Storage, jobs: Sequence[Job], now: int, *, imported: bool = False
           ) -> tuple[list[Job], list[Change]]:
    """New jobs with their dependencies settled, and the changes that raise
    the stored parents' ``dependents`` (to make with the insert, all or
    nothing). Parents may be stored already or come in the same batch, in
    any order. Raises UsageError for a cycle in the batch, and
    JobNotFoundError for an unknown parent (nothing is stored).
    ``imported``: jobs brought by ``import`` keep their state, except that
    a ``waiting`` one is placed again (its parents may have moved on); the
    parents of jobs in other states need not exist any more."""
    batch = {job.id: job for job in jobs}
    stored: dict[str, Job] = {}
    bumps: dict[str, int] = {}
    for job in jobs:
        needs = not imported or job.state is JobState.WAITING
        for parent_id in job.after or ():
            if parent_id in batch:
                continue
            if parent_id not in stored:
                parent = store.get(parent_id)
                if parent is None:
                    if needs:
                        raise UnknownParentError(job.id, parent_id)
                    continue
                stored[parent_id] = parent
            bumps[parent_id] = bumps.get(parent_id, 0) + 1
    ready: dict[str, Job] = {}
    children_of: dict[str, int] = {}
    for job in jobs:
        for parent_id in job.after or ():
            children_of[parent_id] = children_of.get(parent_id, 0) + 1
    for job_id in _in_order(batch):
        job = batch[job_id]
        children = children_of.get(job_id, 0)
        if job.after and (not imported or job.state is JobState.WAITING):
            parents = [ready[p] if p in ready else stored[p] for p in job.after
                       if p in ready or p in stored]
            state, left, blame = readiness(mode_of(job), parents)
            job = job.replace(**_placed_fields(state, left, blame, job.updated_at))
        ready[job_id] = job.replace(dependents=children) if children else job
    guards = [Change(p, fence(stored[p]), fields={"dependents": stored[p].dependents + n})
              for p, n in bumps.items()]
    return [ready[job.id] for job in jobs], guards


def _in_order(batch: Mapping[str, Job]) -> list[str]:
    """The batch's ids, parents before children (UsageError on a cycle)."""
    order: list[str] = []
    state: dict[str, int] = {}  # 1: being visited, 2: done
    inside: dict[str, list[str]] = {}  # each job's parents in the batch
    for root in batch:
        if state.get(root):
            continue
        stack: list[tuple[str, int]] = [(root, 0)]
        state[root] = 1
        while stack:
            job_id, i = stack.pop()
            after = inside.get(job_id)
            if after is None:
                after = inside[job_id] = [p for p in batch[job_id].after or () if p in batch]
            if i < len(after):
                stack.append((job_id, i + 1))
                parent = after[i]
                if state.get(parent) == 1:
                    raise UsageError(f"jobs {shown(job_id)} and {shown(parent)} wait for each "
                                     "other (a cycle in after); nothing was stored")
                if not state.get(parent):
                    state[parent] = 1
                    stack.append((parent, 0))
                continue
            state[job_id] = 2
            order.append(job_id)
    return order


# ------------------------------------------------------------------ changes

def consequences(store: Storage, decided: Sequence[tuple[Job, Change]], now: int
                 ) -> list[Change]:
    """The changes to the children of the jobs ``decided`` changes (each
    job as read, with its change), cascaded down the graph, in the order to
    make them after those changes, in the same store call (all or
    nothing). Children reached twice get a second change decided on the
    first's result (a store makes them in order)."""
    overlay: dict[str, Job] = {}
    moved: deque[tuple[Job, Job]] = deque()
    for job, change in decided:
        if change.delete:
            continue
        after = change.applied(job)
        overlay[job.id] = after
        if job.dependents and matters_to_children(job.state, after.state):
            moved.append((job, after))
    out: list[Change] = []
    while moved:
        before, after = moved.popleft()
        for child in store.dependents(before.id):
            child = overlay.get(child.id, child)
            step = _child_change(store, child, before, after, overlay, now)
            if step is None:
                continue
            out.append(step)
            new = step.applied(child)
            overlay[child.id] = new
            if child.dependents and matters_to_children(child.state, new.state):
                moved.append((child, new))
    return out


def _child_change(store: Storage, child: Job, before: Job, after: Job,
                  overlay: Mapping[str, Job], now: int) -> Change | None:
    """How ``child`` moves when its parent went from ``before`` to ``after``."""
    mode = mode_of(child)
    forward = ((done_for(mode, after.state) and not done_for(mode, before.state))
               or (rules_out(mode, after.state) and not rules_out(mode, before.state)))
    backward = ((done_for(mode, before.state) and not done_for(mode, after.state))
                or (rules_out(mode, before.state) and not rules_out(mode, after.state)))
    if forward and child.state is JobState.WAITING:
        if rules_out(mode, after.state):
            fields = _skip_fields(after, now)
        else:
            left = child.waiting_on - 1
            fields = {"waiting_on": left, "updated_at": now}
            if left <= 0:
                fields.update(state=JobState.PENDING, waiting_on=0)
        return Change(child.id, fence(child, "waiting_on"), fields=fields)
    if backward and child.state in (JobState.WAITING, JobState.SKIPPED):
        parents = []
        for parent_id in child.after or ():
            parent = overlay.get(parent_id) or store.get(parent_id)
            if parent is not None:  # a purged parent was final and done
                parents.append(parent)
        state, left, blame = readiness(mode, parents)
        if state is child.state and left == child.waiting_on:
            return None
        if blame is not None and child.state is JobState.SKIPPED:
            return None  # still ruled out (by another parent)
        return Change(child.id, fence(child, "waiting_on"),
                      fields=_placed_fields(state, left, blame, now))
    return None
