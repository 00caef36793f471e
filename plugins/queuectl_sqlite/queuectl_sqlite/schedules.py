"""The SQLite store's schedules (the optional seam of
``queuectl_core.schedule_seam``): tables ``schedules`` and
``schedule_firings`` (see schema.SCHEDULE_OBJECTS). A fire is one write
transaction: the schedule's compare-and-set on its version, the firing rows
(primary key schedule, tick, manual) and the jobs; any conflict rolls it
all back."""

from __future__ import annotations

import json
import sqlite3

from .rows import INSERT_JOB, job_row
from .schema import COUNT_NEW
from .views import new_counts

TYPE_CHECKING = False
if TYPE_CHECKING:
    from contextlib import AbstractContextManager

    from queuectl_core.schedule_records import Fire, Firing, Schedule


class _Conflict(Exception):
    """Rolls a fire back."""


def _doc(schedule: Schedule) -> str:
    return json.dumps(schedule.to_doc(), ensure_ascii=False, separators=(",", ":"))


def _schedule(row: sqlite3.Row) -> Schedule:
    from queuectl_core.schedule_records import Schedule

    return Schedule.from_doc(json.loads(row["doc"]))


def _firing(row: sqlite3.Row) -> Firing:
    from queuectl_core.schedule_records import Firing

    return Firing(schedule=row["schedule"], tick=row["tick"], outcome=row["outcome"],
                  job_id=row["job_id"], at=row["at"])


class SqliteSchedules:
    """Mixed into SqliteStorage."""

    supports_schedules = True
    if TYPE_CHECKING:
        conn: sqlite3.Connection

        def _write(self) -> AbstractContextManager[sqlite3.Connection]: ...

    def list_schedules(self) -> list[Schedule]:
        rows = self.conn.execute("SELECT doc FROM schedules ORDER BY name").fetchall()
        return [_schedule(r) for r in rows]

    def get_schedule(self, name: str) -> Schedule | None:
        row = self.conn.execute("SELECT doc FROM schedules WHERE name = ?", (name,)).fetchone()
        return None if row is None else _schedule(row)

    def put_schedule(self, schedule: Schedule, expect_version: int | None) -> bool:
        with self._write() as conn:
            return self._put_in(conn, schedule, expect_version)

    @staticmethod
    def _put_in(conn: sqlite3.Connection, schedule: Schedule, expect_version: int | None
                ) -> bool:
        if expect_version is None:
            cur = conn.execute(
                "INSERT OR IGNORE INTO schedules (name, version, next_run_at, doc)"
                " VALUES (?, ?, ?, ?)",
                (schedule.name, schedule.version, schedule.next_run_at, _doc(schedule)))
        else:
            cur = conn.execute(
                "UPDATE schedules SET version = ?, next_run_at = ?, doc = ?"
                " WHERE name = ? AND version = ?",
                (schedule.version, schedule.next_run_at, _doc(schedule), schedule.name,
                 expect_version))
        return cur.rowcount == 1

    def remove_schedule(self, name: str) -> bool:
        with self._write() as conn:
            return conn.execute("DELETE FROM schedules WHERE name = ?", (name,)).rowcount == 1

    def fire_schedule(self, fire: Fire) -> bool:
        try:
            with self._write() as conn:
                if not self._put_in(conn, fire.schedule, fire.expect_version):
                    raise _Conflict
                try:
                    conn.executemany(
                        "INSERT INTO schedule_firings (schedule, tick, manual, outcome,"
                        " job_id, at) VALUES (?, ?, ?, ?, ?, ?)",
                        [(f.schedule, f.tick, int(f.manual), f.outcome, f.job_id, f.at)
                         for f in fire.firings])
                    conn.executemany(INSERT_JOB, [job_row(job) for job in fire.jobs])
                    if getattr(self, "counted", False):  # the maintained counts
                        conn.executemany(COUNT_NEW, new_counts(fire.jobs))
                except sqlite3.IntegrityError:
                    raise _Conflict from None
        except _Conflict:
            return False
        return True

    def schedule_firings(self, name: str, limit: int = 10) -> list[Firing]:
        rows = self.conn.execute(
            "SELECT * FROM schedule_firings WHERE schedule = ?"
            " ORDER BY tick DESC, manual DESC LIMIT ?", (name, limit)).fetchall()
        return [_firing(r) for r in rows]

    def prune_firings(self, before: int, keep: int) -> int:
        with self._write() as conn:
            return conn.execute(
                "DELETE FROM schedule_firings AS f WHERE at < ? AND (SELECT count(*)"
                " FROM schedule_firings AS g WHERE g.schedule = f.schedule"
                " AND (g.tick > f.tick OR (g.tick = f.tick AND g.manual > f.manual))) >= ?",
                (before, keep)).rowcount
