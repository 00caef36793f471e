"""Times and durations as users write them and as queuectl prints them
(``queuectl_core.timeutil``)."""

from __future__ import annotations

import pytest

from queuectl_core.errors import UsageError
from queuectl_core.timeutil import iso, parse_duration_ms, parse_timestamp_ms


def test_times_print_as_iso_8601_utc_with_milliseconds() -> None:
    assert iso(0) == "1970-01-01T00:00:00.000Z"
    assert iso(1_700_000_000_123) == "2023-11-14T22:13:20.123Z"
    assert iso(None) is None


@pytest.mark.parametrize(("text", "ms"), [("500ms", 500), ("30s", 30_000), ("30", 30_000),
                                          ("1.5m", 90_000), ("2h", 7_200_000),
                                          ("7d", 604_800_000)])
def test_durations_take_a_unit_seconds_by_default(text: str, ms: int) -> None:
    assert parse_duration_ms(text) == ms


@pytest.mark.parametrize("text", ["", "abc", "-5s", "5 weeks", "1e400s", "nan"])
def test_bad_durations_are_usage_errors(text: str) -> None:
    with pytest.raises(UsageError):
        parse_duration_ms(text)


def test_timestamps_are_epoch_ms_or_iso_8601_naive_meaning_utc() -> None:
    assert parse_timestamp_ms(1_700_000_000_000) == 1_700_000_000_000
    assert parse_timestamp_ms("2023-11-14T22:13:20.123Z") == 1_700_000_000_123
    assert parse_timestamp_ms("2023-11-14T22:13:20") == 1_700_000_000_000  # naive = UTC
    assert parse_timestamp_ms("2023-11-14T23:13:20+01:00") == 1_700_000_000_000
    for bad in (True, -1, 10**20, "tomorrow", 1.5, None):
        with pytest.raises(UsageError):
            parse_timestamp_ms(bad)
