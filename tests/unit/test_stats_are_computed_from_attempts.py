"""``queuectl stats`` numbers, computed from records alone
(``queuectl_core.stats``): percentiles by nearest rank, rates over the
window, per-minute series, the commands that fail most."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from queuectl_core.models import FinishedAttempt
from queuectl_core.stats import ALL, compute, duration_text, percentiles, series

T0 = 1_800_000_000_000
HOUR = 3_600_000


def attempt(queue: str, outcome: str, start: int, run: int, *, due: int | None = None,
            command: str = "true") -> FinishedAttempt:
    return FinishedAttempt(job_id=f"{queue}-{start}", queue=queue, command=command,
                           outcome=outcome, started_at=start, finished_at=start + run,
                           due_at=due)


def test_percentiles_are_nearest_rank() -> None:
    assert percentiles(range(1, 101)) == {"p50": 50, "p95": 95, "p99": 99}
    assert percentiles([7]) == {"p50": 7, "p95": 7, "p99": 7}
    assert percentiles([]) == {"p50": None, "p95": None, "p99": None}
    assert percentiles([30, 10, 20]) == {"p50": 20, "p95": 30, "p99": 30}


@given(st.lists(st.integers(0, 10**9), min_size=1))
def test_percentiles_are_values_in_order(values: list[int]) -> None:
    found = percentiles(values)
    assert found["p50"] in values and found["p99"] in values
    assert min(values) <= found["p50"] <= found["p95"] <= found["p99"] <= max(values)  # type: ignore[operator]


def test_each_queue_and_all_of_them_get_rates_times_and_failing_commands() -> None:
    now = T0 + HOUR
    attempts = [
        attempt("a", "completed", T0 + 1000, 200, due=T0 + 900),
        attempt("a", "completed", T0 + 2000, 400, due=T0 + 1000),
        attempt("a", "failed", T0 + 3000, 100, command="./flaky"),
        attempt("b", "lost", T0 + 4000, 5000, command="./slow"),
        attempt("b", "failed", T0 + 5000, 100, command="./flaky"),
    ]
    outcomes = {"a": {"completed": 2, "failed": 1, "dead": 1}, "b": {"lost": 1, "failed": 1}}
    result = compute(now=now, since=T0, attempts=attempts, outcomes=outcomes,
                     oldest_due={"b": now - 90_000}, queues=["c"])
    rows = {row["queue"]: row for row in result["queues"]}
    assert list(rows) == ["a", "b", "c", ALL]
    a = rows["a"]
    assert (a["completed"], a["failed"], a["dead"], a["lost"]) == (2, 1, 1, 0)
    assert a["throughput_per_min"] == round(2 / 60, 3)
    assert a["error_rate"] == round(1 / 3, 4)
    assert a["wait_ms"] == {"p50": 100, "p95": 1000, "p99": 1000}
    assert a["run_ms"] == {"p50": 200, "p95": 400, "p99": 400}
    assert a["oldest_due_age_ms"] is None
    assert rows["b"]["run_ms"]["p99"] == 100, "a lost attempt has no run time"
    assert rows["b"]["oldest_due_age_ms"] == 90_000
    assert rows["c"]["error_rate"] is None and rows["c"]["completed"] == 0
    everything = rows[ALL]
    assert (everything["completed"], everything["failed"], everything["lost"]) == (2, 2, 1)
    assert everything["top_failing"] == [{"command": "./flaky", "failures": 2},
                                         {"command": "./slow", "failures": 1}]
    assert everything["oldest_due_age_ms"] == 90_000


def test_series_counts_each_minute_of_the_window() -> None:
    attempts = [attempt("a", "completed", T0 + 10, 50), attempt("a", "completed", T0 + 20, 150),
                attempt("a", "failed", T0 + 60_500, 10), attempt("a", "completed", T0 - 5, 1)]
    got = series(attempts, since=T0, now=T0 + HOUR)
    assert len(got["t"]) == 60 and got["t"][1] - got["t"][0] == 60
    assert got["completed"][:2] == [2, 0] and got["failed"][:2] == [0, 1]
    assert got["run_p50_ms"][0] == 50 and got["run_p95_ms"][0] == 150
    assert got["run_p50_ms"][1] is None


def test_durations_read_as_people_write_them() -> None:
    assert [duration_text(ms) for ms in (None, 850, 12_300, 245_000, 12_000_000, 190_000_000)
            ] == ["-", "850ms", "12.3s", "4m05s", "3h20m", "2d04h"]
