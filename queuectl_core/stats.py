"""What ``queuectl stats``, the dashboard and the metrics show, computed
from what a store reads (``Storage.finished_attempts``,
``Storage.outcome_counts``, ``Storage.oldest_due``): pure functions over
records, no store and no clock of their own.

``FinishedAttempt`` (in :mod:`~queuectl_core.models`) is what they read.
Per queue, over a window (``since`` to ``now``):

* ``completed``, ``failed`` (attempts that failed; the job retries or
  dies), ``lost`` (abandoned attempts), ``dead`` (jobs that reached the DLQ);
* ``throughput_per_min``: completed attempts per minute of the window;
* ``error_rate``: (failed + lost) / (completed + failed + lost), None when
  nothing finished;
* ``wait_ms``: from due (``run_at``) to started, of completed attempts, and
  ``run_ms``: from started to finished, of completed and failed attempts,
  each at p50, p95 and p99 (nearest rank);
* ``oldest_due_age_ms``: how long the oldest due job has waited (None:
  none due);
* ``top_failing``: the commands with most failed or lost attempts.

Counts are exact; the times and the failing commands come from the newest
``limit`` attempts of the window (``sampled`` says when there were more).
"""

from __future__ import annotations

from .models import FinishedAttempt

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Iterable, Mapping, Sequence
    from typing import Any

    from .storage import Storage

#: The percentiles reported for wait and run times.
PERCENTILES = (50, 95, 99)
#: How many of the newest attempts of a window the times are taken from.
SAMPLE_LIMIT = 10_000
#: The row of ``stats`` that sums every queue.
ALL = "(all)"


def percentiles(values: Iterable[int]) -> dict[str, int | None]:
    """``{"p50": .., "p95": .., "p99": ..}`` by nearest rank; None when empty."""
    ordered = sorted(values)
    found: dict[str, int | None] = {}
    for p in PERCENTILES:
        if not ordered:
            found[f"p{p}"] = None
        else:
            rank = max(1, -(-p * len(ordered) // 100))  # ceil(p/100 * n)
            found[f"p{p}"] = ordered[rank - 1]
    return found


def _one(name: str, outcomes: Mapping[str, int], attempts: Sequence[FinishedAttempt],
         oldest_due: int | None, *, now: int, since: int, top: int) -> dict[str, Any]:
    completed = outcomes.get("completed", 0)
    failed = outcomes.get("failed", 0)
    lost = outcomes.get("lost", 0)
    finished = completed + failed + lost
    minutes = max(now - since, 1) / 60_000
    failing: dict[str, int] = {}
    for a in attempts:
        if a.outcome in ("failed", "lost"):
            failing[a.command] = failing.get(a.command, 0) + 1
    worst = sorted(failing.items(), key=lambda kv: (-kv[1], kv[0]))[:top]
    return {
        "queue": name,
        "completed": completed,
        "failed": failed,
        "lost": lost,
        "dead": outcomes.get("dead", 0),
        "cancelled": outcomes.get("cancelled", 0),
        "throughput_per_min": round(completed / minutes, 3),
        "error_rate": None if finished == 0 else round((failed + lost) / finished, 4),
        "wait_ms": percentiles(max(0, a.started_at - a.due_at) for a in attempts
                               if a.due_at is not None),
        "run_ms": percentiles(a.finished_at - a.started_at for a in attempts
                              if a.outcome in ("completed", "failed")),
        "oldest_due_age_ms": None if oldest_due is None else max(0, now - oldest_due),
        "top_failing": [{"command": c, "failures": n} for c, n in worst],
    }


def compute(*, now: int, since: int, attempts: Sequence[FinishedAttempt],
            outcomes: Mapping[str, Mapping[str, int]], oldest_due: Mapping[str, int],
            queues: Iterable[str] = (), sampled: bool = False, top: int = 5
            ) -> dict[str, Any]:
    """The stats of every queue named in ``queues``, ``outcomes`` or
    ``oldest_due``, and of all of them together (:data:`ALL`)."""
    names = sorted({*queues, *outcomes, *oldest_due})
    by_queue: dict[str, list[FinishedAttempt]] = {name: [] for name in names}
    for a in attempts:
        by_queue.setdefault(a.queue, []).append(a)
    rows = [_one(name, outcomes.get(name, {}), by_queue.get(name, []),
                 oldest_due.get(name), now=now, since=since, top=top) for name in names]
    total: dict[str, int] = {}
    for per in outcomes.values():
        for key, n in per.items():
            total[key] = total.get(key, 0) + n
    rows.append(_one(ALL, total, attempts, min(oldest_due.values(), default=None),
                     now=now, since=since, top=top))
    return {"since": since, "now": now, "sampled": sampled, "queues": rows}


def gather(store: Storage, *, now: int, since: int, queue: str | None = None,
           limit: int = SAMPLE_LIMIT) -> tuple[dict[str, Any], list[FinishedAttempt]]:
    """Read what :func:`compute` needs from ``store`` and compute it; also
    the attempts read (newest first), for :func:`series`."""
    attempts = store.finished_attempts(since, queue, limit + 1)
    sampled = len(attempts) > limit
    attempts = attempts[:limit]
    oldest = store.oldest_due(now)
    names: list[str] = list(store.queue_counts()) if queue is None else [queue]
    if queue is not None:
        oldest = {queue: oldest[queue]} if queue in oldest else {}
    result = compute(now=now, since=since, attempts=attempts,
                     outcomes=store.outcome_counts(since, queue), oldest_due=oldest,
                     queues=names, sampled=sampled)
    return result, attempts


def series(attempts: Iterable[FinishedAttempt], *, since: int, now: int,
           buckets: int = 60) -> dict[str, list[Any]]:
    """Per time bucket of the window (``buckets`` of them, oldest first):
    its start (epoch seconds), completed and failed (or lost) attempts, and
    the p50 and p95 run time (ms) of its completed attempts."""
    width = max(1, -(-(now - since) // buckets))
    done = [0] * buckets
    bad = [0] * buckets
    runs: list[list[int]] = [[] for _ in range(buckets)]
    for a in attempts:
        i = (a.finished_at - since) // width
        if not 0 <= i < buckets:
            continue
        if a.outcome == "completed":
            done[i] += 1
            runs[i].append(a.finished_at - a.started_at)
        elif a.outcome in ("failed", "lost"):
            bad[i] += 1
    cuts = [percentiles(r) for r in runs]
    return {"t": [(since + i * width) // 1000 for i in range(buckets)],
            "completed": done, "failed": bad,
            "run_p50_ms": [c["p50"] for c in cuts], "run_p95_ms": [c["p95"] for c in cuts]}


def duration_text(ms: int | None) -> str:
    """A duration for people: ``-``, ``850ms``, ``12.3s``, ``4m05s``, ``3h20m``, ``2d04h``."""
    if ms is None:
        return "-"
    if ms < 1000:
        return f"{ms}ms"
    if ms < 60_000:
        return f"{ms / 1000:.1f}s"
    s = ms // 1000
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    if s < 86_400:
        return f"{s // 3600}h{s % 3600 // 60:02d}m"
    return f"{s // 86_400}d{s % 86_400 // 3600:02d}h"


def table(result: Mapping[str, Any], window: str) -> str:
    """The text that ``queuectl stats`` prints."""
    more = " (times from the newest attempts)" if result.get("sampled") else ""
    lines = [f"Stats of the last {window}{more}",
             f"{'QUEUE':<16} {'DONE':>7} {'FAILED':>7} {'LOST':>5} {'DEAD':>5} {'/MIN':>8} "
             f"{'ERRORS':>7}  {'WAIT p50/p95/p99':<22} {'RUN p50/p95/p99':<22} OLDEST DUE"]
    for row in result["queues"]:
        rate = "-" if row["error_rate"] is None else f"{row['error_rate'] * 100:.1f}%"
        wait = "/".join(duration_text(v) for v in row["wait_ms"].values())
        run = "/".join(duration_text(v) for v in row["run_ms"].values())
        lines.append(f"{row['queue']:<16} {row['completed']:>7} {row['failed']:>7} "
                     f"{row['lost']:>5} {row['dead']:>5} {row['throughput_per_min']:>8.2f} "
                     f"{rate:>7}  {wait:<22} {run:<22} "
                     f"{duration_text(row['oldest_due_age_ms'])}")
    worst = result["queues"][-1]["top_failing"]
    if worst:
        lines.append("Most failing commands:")
        lines.extend(f"  {w['failures']:>6}  {w['command']}" for w in worst)
    return "\n".join(lines) + "\n"
