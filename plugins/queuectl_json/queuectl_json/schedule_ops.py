"""Recurring schedules in the JSON store's state: the snapshot's
``schedules`` and ``firings`` keys and the journal operations that change
them (each idempotent, like every operation):

* ``{"op": "schedule", "put": DOC}`` / ``{"op": "schedule", "remove": NAME}``;
* ``{"op": "fire", "schedule": DOC, "firings": [...], "jobs": [...]}``: one
  firing pass of one schedule, its jobs enqueued by the same line (the
  commit point of the whole fire);
* ``{"op": "prune_firings", "keys": [[NAME, TICK, MANUAL], ...]}``.

A schedule keeps at most FIRINGS_KEPT firing records here (the newest);
``purge`` prunes older ones sooner."""

from __future__ import annotations

from typing import Any, Protocol

from .records import Damaged, Record


class State(Protocol):
    """What these operations use of ``state.State`` (which imports this module)."""

    schedules: dict[str, Record]
    firings: dict[str, dict[tuple[int, bool], Record]]

    def _enqueue(self, op: Record, check: bool, v1: bool) -> None: ...

#: Firing records kept per schedule (the newest); more than the catch-up cap.
FIRINGS_KEPT = 1000


def check_schedule(doc: Any) -> Record:
    from queuectl_core.schedule_records import Schedule

    try:
        Schedule.from_doc(doc)
    except ValueError as exc:
        raise Damaged(f"schedule: {exc}") from None
    assert isinstance(doc, dict)
    return doc


def _check_firing(rec: Any) -> Record:
    if not (isinstance(rec, dict) and isinstance(rec.get("schedule"), str)
            and isinstance(rec.get("tick"), int) and isinstance(rec.get("manual"), bool)
            and isinstance(rec.get("at"), int)
            and rec.get("outcome") in ("fired", "skipped", "run")):
        raise Damaged("a firing record is malformed")
    return rec


def _add_firing(state: State, rec: Record) -> None:
    per = state.firings.setdefault(rec["schedule"], {})
    per[(rec["tick"], rec["manual"])] = rec
    if len(per) > FIRINGS_KEPT:
        for key in sorted(per)[:len(per) - FIRINGS_KEPT]:
            del per[key]


def load_schedules(state: State, doc: Record) -> None:
    """The snapshot's schedules and firings (absent from older snapshots)."""
    schedules, firings = doc.get("schedules", []), doc.get("firings", [])
    if not isinstance(schedules, list) or not isinstance(firings, list):
        raise Damaged("'schedules' and 'firings' must be lists")
    for s in schedules:
        check_schedule(s)
        state.schedules[s["name"]] = s
    for f in firings:
        _add_firing(state, _check_firing(f))


def snapshot_schedules(state: State) -> dict[str, Any]:
    """The snapshot's keys for schedules (none while there are none)."""
    if not state.schedules and not state.firings:
        return {}
    return {"schedules": [state.schedules[n] for n in sorted(state.schedules)],
            "firings": [f for n in sorted(state.firings)
                        for _, f in sorted(state.firings[n].items())]}


def replay_schedule(state: State, op: Record, check: bool, v1: bool) -> None:
    if "put" in op:
        doc = check_schedule(op["put"]) if check else op["put"]
        state.schedules[doc["name"]] = doc
    else:
        state.schedules.pop(op["remove"], None)


def replay_fire(state: State, op: Record, check: bool, v1: bool) -> None:
    state._enqueue(op, check, v1)
    replay_schedule(state, {"put": op["schedule"]}, check, v1)
    for f in op["firings"]:
        _add_firing(state, _check_firing(f) if check else f)


def replay_prune(state: State, op: Record, check: bool, v1: bool) -> None:
    for name, tick, manual in op["keys"]:
        per = state.firings.get(name)
        if per is not None:
            per.pop((tick, manual), None)
            if not per:
                del state.firings[name]
