"""The SQLite store's small tables: paused queues, settings and workers
(a mixin of :class:`~queuectl_sqlite.store.SqliteStorage`)."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Sequence

from queuectl_core.models import WorkerInfo

TYPE_CHECKING = False
if TYPE_CHECKING:
    from contextlib import AbstractContextManager
    from typing import Any


class SqliteAdmin:
    """Queues, settings and workers, over the store's connection."""

    conn: sqlite3.Connection

    def _write(self) -> AbstractContextManager[sqlite3.Connection]:
        raise NotImplementedError

    # ---------------------------------------------------------- queues, settings
    def set_queue_paused(self, queue: str, paused: bool) -> bool:
        with self._write() as conn:
            if paused:
                cur = conn.execute("INSERT OR IGNORE INTO paused_queues (queue) VALUES (?)",
                                   (queue,))
            else:
                cur = conn.execute("DELETE FROM paused_queues WHERE queue = ?", (queue,))
            return cur.rowcount == 1

    def paused_queues(self) -> list[str]:
        return sorted(r[0] for r in self.conn.execute("SELECT queue FROM paused_queues"))

    def get_settings(self) -> dict[str, Any]:
        return {k: json.loads(v) for k, v in self.conn.execute("SELECT key, value FROM settings")}

    def set_setting(self, key: str, value: Any) -> None:
        with self._write() as conn:
            conn.execute(
                "INSERT INTO settings (key, value) VALUES (?, ?)"
                " ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                (key, json.dumps(value)))

    # ---------------------------------------------------------- workers
    def put_worker(self, worker: WorkerInfo) -> None:
        with self._write() as conn:
            conn.execute(
                "INSERT OR REPLACE INTO workers (id, hostname, pid, started_at, heartbeat_at,"
                " current_job, job_pgid) VALUES (?, ?, ?, ?, ?, ?, ?)",
                (worker.id, worker.hostname, worker.pid, worker.started_at, worker.heartbeat_at,
                 worker.current_job, worker.job_pgid))

    def remove_workers(self, worker_ids: Sequence[str]) -> None:
        with self._write() as conn:
            conn.execute("DELETE FROM workers WHERE id IN (SELECT value FROM json_each(?))",
                         (json.dumps(list(worker_ids)),))

    def list_workers(self) -> list[WorkerInfo]:
        rows = self.conn.execute("SELECT * FROM workers ORDER BY started_at, id").fetchall()
        return [WorkerInfo(**dict(r)) for r in rows]
