"""``/metrics``: Prometheus text, read from the store at each scrape (no
state in the server, so several servers or restarts agree).

* ``queuectl_jobs{queue,state}``: jobs by queue and state (maintained
  counts: as cheap at a million jobs as at none);
* ``queuectl_queue_paused{queue}``: 1 for a paused queue;
* ``queuectl_oldest_due_age_seconds{queue}``: how long the oldest due job
  of each queue has waited (0: none due);
* ``queuectl_recent_attempts{queue,outcome}``: attempts finished in the
  last :data:`WINDOW_MS` (a gauge: it goes down as they age out);
* ``queuectl_recent_run_seconds{queue}``: a gauge histogram of the run
  time of the completed and failed attempts of that window (from the
  newest 10,000);
* ``queuectl_workers`` and ``queuectl_active_workers`` (heartbeat fresher
  than the lease).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import GaugeHistogramMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from queuectl_core.timeutil import now_ms

if TYPE_CHECKING:
    from .reader import Reader

#: The window of the recent-attempt metrics.
WINDOW_MS = 5 * 60_000
#: Run-time buckets, in seconds.
BUCKETS = (0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0)


class QueueCollector(Collector):
    """Reads the queue at each scrape (the caller holds the reader's lock)."""

    def __init__(self, reader: Reader) -> None:
        self.reader = reader

    def collect(self) -> Iterator[Metric]:
        store = self.reader.store
        now = now_ms()
        jobs = GaugeMetricFamily("queuectl_jobs", "Jobs by queue and state.",
                                 labels=["queue", "state"])
        paused_g = GaugeMetricFamily("queuectl_queue_paused", "1 if the queue is paused.",
                                     labels=["queue"])
        age = GaugeMetricFamily("queuectl_oldest_due_age_seconds",
                                "How long the oldest due job of the queue has waited "
                                "(0: none due).", labels=["queue"])
        counts = store.queue_counts()
        paused = set(store.paused_queues())
        oldest = store.oldest_due(now)
        for queue in sorted({*counts, *paused, *oldest}):
            for state, n in counts.get(queue, {}).items():
                jobs.add_metric([queue, state.value], n)
            paused_g.add_metric([queue], 1 if queue in paused else 0)
            age.add_metric([queue], (now - oldest[queue]) / 1000 if queue in oldest else 0)
        yield from (jobs, paused_g, age)

        since = now - WINDOW_MS
        outcomes = GaugeMetricFamily(
            "queuectl_recent_attempts", "Attempts finished in the last 5 minutes, by outcome "
            "(dead: jobs that reached the DLQ).", labels=["queue", "outcome"])
        for queue, per in sorted(store.outcome_counts(since).items()):
            for outcome, n in sorted(per.items()):
                outcomes.add_metric([queue, outcome], n)
        yield outcomes

        runs: dict[str, list[float]] = {}
        for a in store.finished_attempts(since):
            if a.outcome in ("completed", "failed"):
                runs.setdefault(a.queue, []).append((a.finished_at - a.started_at) / 1000)
        hist = GaugeHistogramMetricFamily(
            "queuectl_recent_run_seconds", "Run time of the attempts completed or failed in "
            "the last 5 minutes (the newest 10,000).", labels=["queue"])
        for queue, values in sorted(runs.items()):
            buckets = [(str(b), float(sum(1 for v in values if v <= b))) for b in BUCKETS]
            buckets.append(("+Inf", float(len(values))))
            hist.add_metric([queue], buckets, gsum_value=sum(values))
        yield hist

        workers = self.reader.workers(now)
        total = GaugeMetricFamily("queuectl_workers", "Registered workers.")
        total.add_metric([], len(workers))
        active = GaugeMetricFamily("queuectl_active_workers",
                                   "Workers whose heartbeat is fresher than the lease.")
        active.add_metric([], sum(1 for w in workers if w["active"]))
        yield from (total, active)


def render(reader: Reader) -> bytes:
    """The metrics in Prometheus' text format."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(QueueCollector(reader))
    return generate_latest(registry)
