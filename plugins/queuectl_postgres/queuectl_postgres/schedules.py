"""The PostgreSQL store's schedules (the optional seam of
``queuectl_core.schedule_seam``): tables ``schedules`` and
``schedule_firings`` (schema.SCHEDULE_DDL). A fire is one transaction: the
schedule's compare-and-set on its version (a concurrent firer waits for the
row, then finds the version moved on), the firing rows (primary key
schedule, tick, manual) and the jobs; a conflict rolls it all back. Any
number of machines may fire: the database decides."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

import psycopg
from psycopg import errors as pg_errors
from psycopg.rows import DictRow

from .connection import guarded
from .sql import INSERT_JOB_SQL, NOTIFY_SQL, job_row

if TYPE_CHECKING:
    from queuectl_core.schedule_records import Fire, Firing, Schedule

    from .connection import Session

Cursor = psycopg.Cursor[DictRow]

_INSERT = ("INSERT INTO {s}.schedules (name, version, next_run_at, doc) VALUES (%s, %s, %s, %s)"
           " ON CONFLICT (name) DO NOTHING")
_UPDATE = ("UPDATE {s}.schedules SET version = %s, next_run_at = %s, doc = %s"
           " WHERE name = %s AND version = %s")
_INSERT_FIRING = ("INSERT INTO {s}.schedule_firings (schedule, tick, manual, outcome, job_id, at)"
                  " VALUES (%s, %s, %s, %s, %s, %s)")
_PRUNE = """
DELETE FROM {s}.schedule_firings AS f USING (
    SELECT schedule, tick, manual, row_number() OVER (
        PARTITION BY schedule ORDER BY tick DESC, manual DESC) AS n
    FROM {s}.schedule_firings) AS r
WHERE f.schedule = r.schedule AND f.tick = r.tick AND f.manual = r.manual
  AND r.n > %s AND f.at < %s
"""


class _Conflict(Exception):
    """Rolls a fire back."""


def _doc(schedule: Schedule) -> str:
    return json.dumps(schedule.to_doc(), ensure_ascii=False, separators=(",", ":"))


def _schedule(row: DictRow) -> Schedule:
    from queuectl_core.schedule_records import Schedule

    return Schedule.from_doc(json.loads(row["doc"]))


class PostgresSchedules:
    """Mixed into PostgresStorage."""

    supports_schedules = True
    if TYPE_CHECKING:
        session: Session
        channel: str

        def _q(self, template: str) -> str: ...

    @guarded
    def list_schedules(self) -> list[Schedule]:
        with self.session.cursor() as cur:
            rows = cur.execute(self._q("SELECT doc FROM {s}.schedules ORDER BY name")).fetchall()
        return [_schedule(r) for r in rows]

    @guarded
    def get_schedule(self, name: str) -> Schedule | None:
        with self.session.cursor() as cur:
            row = cur.execute(self._q("SELECT doc FROM {s}.schedules WHERE name = %s"),
                              (name,)).fetchone()
        return None if row is None else _schedule(row)

    def _put(self, cur: Cursor, schedule: Schedule, expect_version: int | None) -> bool:
        if expect_version is None:
            cur.execute(self._q(_INSERT), (schedule.name, schedule.version,
                                           schedule.next_run_at, _doc(schedule)))
        else:
            cur.execute(self._q(_UPDATE), (schedule.version, schedule.next_run_at,
                                           _doc(schedule), schedule.name, expect_version))
        return cur.rowcount == 1

    @guarded
    def put_schedule(self, schedule: Schedule, expect_version: int | None) -> bool:
        with self.session.transaction() as cur:
            done = self._put(cur, schedule, expect_version)
            if done:
                cur.execute(NOTIFY_SQL, (self.channel,))  # other machines' idle workers
            return done

    @guarded
    def remove_schedule(self, name: str) -> bool:
        with self.session.cursor() as cur:
            cur.execute(self._q("DELETE FROM {s}.schedules WHERE name = %s"), (name,))
            return cur.rowcount == 1

    @guarded
    def fire_schedule(self, fire: Fire) -> bool:
        try:
            with self.session.transaction() as cur:
                if not self._put(cur, fire.schedule, fire.expect_version):
                    raise _Conflict
                if fire.firings:
                    cur.executemany(self._q(_INSERT_FIRING), [
                        (f.schedule, f.tick, f.manual, f.outcome, f.job_id, f.at)
                        for f in fire.firings])
                if fire.jobs:
                    cur.executemany(self._q(INSERT_JOB_SQL), [job_row(j, 0) for j in fire.jobs])
                    cur.execute(NOTIFY_SQL, (self.channel,))
        except (_Conflict, pg_errors.UniqueViolation):
            return False
        return True

    @guarded
    def schedule_firings(self, name: str, limit: int = 10) -> list[Firing]:
        from queuectl_core.schedule_records import Firing

        with self.session.cursor() as cur:
            rows = cur.execute(self._q(
                "SELECT * FROM {s}.schedule_firings WHERE schedule = %s"
                " ORDER BY tick DESC, manual DESC LIMIT %s"), (name, limit)).fetchall()
        return [Firing(schedule=r["schedule"], tick=r["tick"], outcome=r["outcome"],
                       job_id=r["job_id"], at=r["at"]) for r in rows]

    @guarded
    def prune_firings(self, before: int, keep: int) -> int:
        with self.session.cursor() as cur:
            cur.execute(self._q(_PRUNE), (keep, before))
            return cur.rowcount


__all__ = ["PostgresSchedules"]
