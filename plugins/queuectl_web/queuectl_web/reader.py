"""What the pages, the JSON API and the metrics show, read from the store
through the seam's view methods (``queue_counts``, ``oldest_due``,
``browse_jobs``, ...) and computed by ``queuectl_core.stats``: plain,
JSON-ready dicts, env values masked, no secret (the store's ``describe()``
never holds one).

A store is used from one thread at a time: the server calls these methods
in worker threads, one at a time (:attr:`Reader.lock`)."""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING, Any

from queuectl_core import joblogs
from queuectl_core.models import CLAIMABLE_STATES, Job, JobState
from queuectl_core.stats import gather, series
from queuectl_core.timeutil import iso, now_ms

from .guard import masked_env

if TYPE_CHECKING:
    from queuectl_core.app import App
    from queuectl_core.storage import Storage

#: The overview's window (charts and stats).
OVERVIEW_WINDOW_MS = 3_600_000
#: Bytes of an attempt's output a page shows (the end of it).
LOG_TAIL_BYTES = 64 * 1024
#: Jobs per page of the job list and the DLQ.
PAGE_SIZE = 50
MAX_PAGE_SIZE = 500


def job_json(job: Job) -> dict[str, Any]:
    """A job as ``show --json`` prints it, env values masked."""
    data = job.to_json()
    data["env"] = masked_env(job.env)
    return data


class Reader:
    """The dashboard's reads (and, through ``app``, its actions)."""

    def __init__(self, app: App) -> None:
        self.app = app
        self.lock = threading.Lock()

    @property
    def store(self) -> Storage:
        return self.app.ledger.store

    def describe(self) -> str:
        return self.app.ledger.describe()

    # ---------------------------------------------------------- overview
    def workers(self, now: int | None = None) -> list[dict[str, Any]]:
        now = now_ms() if now is None else now
        lease_ms = self.app.settings().lease_seconds * 1000
        return [{**w.to_json(), "active": w.heartbeat_at >= now - lease_ms,
                 "heartbeat_age_ms": max(0, now - w.heartbeat_at)}
                for w in self.store.list_workers()]

    def queues(self, now: int) -> list[dict[str, Any]]:
        """Per queue: counts by state, paused, age of the oldest due job."""
        counts = self.store.queue_counts()
        paused = self.store.paused_queues()
        oldest = self.store.oldest_due(now)
        names = sorted({*counts, *paused, *oldest})
        empty = dict.fromkeys(JobState, 0)
        return [{"queue": name,
                 "counts": {s.value: n for s, n in counts.get(name, empty).items()},
                 "paused": name in paused,
                 "oldest_due_age_ms": None if name not in oldest else now - oldest[name]}
                for name in names]

    def overview(self) -> dict[str, Any]:
        now = now_ms()
        queues = self.queues(now)
        totals = dict.fromkeys((s.value for s in JobState), 0)
        for row in queues:
            for state, n in row["counts"].items():
                totals[state] += n
        since = now - OVERVIEW_WINDOW_MS
        stats, attempts = gather(self.store, now=now, since=since)
        workers = self.workers(now)
        return {
            "store": self.describe(), "now": iso(now), "states": [s.value for s in JobState],
            "totals": totals, "queues": queues,
            "paused_queues": [q["queue"] for q in queues if q["paused"]],
            "workers": workers, "active_workers": sum(1 for w in workers if w["active"]),
            "stats": stats["queues"], "sampled": stats["sampled"],
            "series": series(attempts, since=since, now=now),
        }

    def stats(self, since_ms: int, queue: str | None) -> dict[str, Any]:
        now = now_ms()
        result, _ = gather(self.store, now=now, since=now - since_ms, queue=queue)
        return {**result, "since": iso(result["since"]), "now": iso(result["now"])}

    # ---------------------------------------------------------- jobs
    def jobs(self, *, state: JobState | None = None, queue: str | None = None,
             text: str | None = None, before: str | None = None,
             limit: int = PAGE_SIZE) -> dict[str, Any]:
        """A page of jobs, newest first, and the id to ask for the next one."""
        found = self.store.browse_jobs(state=state, queue=queue, text=text or None,
                                       before=before, limit=limit + 1)
        more = len(found) > limit
        found = found[:limit]
        return {"jobs": [job_json(j) for j in found],
                "next": found[-1].id if more and found else None}

    def job(self, job_id: str) -> dict[str, Any] | None:
        """A job with its attempts (newest last) and where its output is."""
        job = self.store.get(job_id)
        if job is None:
            return None
        attempts = [a.to_json() for a in self.store.attempts(job_id)]
        return {"job": job_json(job), "attempts": attempts,
                "running": job.state is JobState.PROCESSING,
                "claimable": job.state in CLAIMABLE_STATES,
                # As ``show --json`` gives them; a purged parent is "purged".
                **self.app.ledger.relatives(job)}

    # ---------------------------------------------------------- schedules
    def _schedule_store(self) -> Storage:
        """The store, or :class:`SchedulesUnsupportedError` (a backend
        without schedules), as ``queuectl schedule`` checks it."""
        if not self.store.supports_schedules:
            raise self.store._no_schedules()
        return self.store

    def schedules(self) -> list[dict[str, Any]]:
        """Every schedule as ``schedule list --json`` prints it, with its
        cadence in words."""
        from queuectl_core.schedules import describe_cadence

        return [{**s.to_json(), "cadence": describe_cadence(s)}
                for s in self._schedule_store().list_schedules()]

    def schedule(self, name: str) -> dict[str, Any] | None:
        """A schedule as ``schedule show --json`` prints it: its next 5 fire
        times (none while paused) and its last 10 firings, newest first."""
        from queuectl_core.schedules import describe_cadence, schedule_view

        store = self._schedule_store()
        found = store.get_schedule(name)
        if found is None:
            return None
        return {**schedule_view(found, store.schedule_firings(name, 10), now_ms()),
                "cadence": describe_cadence(found)}

    def log(self, job_id: str, attempt: int | None, stream: joblogs.Stream
            ) -> dict[str, Any]:
        """The end of one stream of an attempt's output (the latest attempt
        with output by default), as text, with its size so far."""
        log_dir = joblogs.job_log_dir(self.app.config.home / "logs" / "jobs", job_id)
        numbers = joblogs.attempt_numbers(log_dir)
        if attempt is None:
            attempt = numbers[-1] if numbers else None
        if attempt is None:
            return {"attempt": None, "stream": stream, "text": "", "bytes": 0,
                    "truncated": False}
        live = joblogs.attempt_path(log_dir, attempt, stream)
        data = b""
        total = 0
        try:
            for chunk in joblogs.read_chunks(live):
                total += len(chunk)
                data = (data + chunk)[-LOG_TAIL_BYTES:]
        except OSError:
            pass
        dropped = joblogs.dropped_bytes(live)
        return {"attempt": attempt, "stream": stream,
                "text": data.decode("utf-8", "replace"), "bytes": total + dropped,
                "truncated": total + dropped > len(data)}

    def dead(self, *, before: str | None, limit: int = PAGE_SIZE) -> dict[str, Any]:
        page = self.jobs(state=JobState.DEAD, before=before, limit=limit)
        page["total"] = self.store.counts()[JobState.DEAD]
        return page

