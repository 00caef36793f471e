"""One duration parser for every option and field that takes a duration
(``timeutil.parse_duration_ms`` and ``timeutil.duration_value``), and the
rule that keeps epoch seconds out of ``run_at`` (``timeutil.parse_run_at_ms``)."""

from __future__ import annotations

from fractions import Fraction

import pytest
from hypothesis import given
from hypothesis import strategies as st

from queuectl_core.errors import UsageError
from queuectl_core.limits import MAX_EPOCH_MS
from queuectl_core.timeutil import (
    DURATION_UNITS_MS,
    MIN_RUN_AT_MS,
    duration_value,
    parse_duration_ms,
    parse_run_at_ms,
)

BAD = ("use a number with a unit (ms, s, m, h, d, w), e.g. 500ms, 30s, 1.5m, 1h30m, 7d")
SECONDS_HINT = "this looks like seconds since the epoch; give milliseconds or ISO-8601"


@pytest.mark.parametrize(("text", "ms"), [
    ("500ms", 500), ("30s", 30_000), ("30", 30_000), ("1.5m", 90_000), ("2h", 7_200_000),
    ("7d", 604_800_000), ("2w", 1_209_600_000), ("1h30m", 5_400_000), ("1.5s", 1500),
    ("1h 30m", 5_400_000), (" 1d12h ", 129_600_000), ("10 s", 10_000), ("0s", 0),
    ("1w2d3h4m5s6ms", 604_800_000 + 2 * 86_400_000 + 3 * 3_600_000 + 4 * 60_000 + 5006),
    ("4.35s", 4350), ("0.0005s", 0), ("30.0", 30_000),
])
def test_durations_take_units_and_combinations(text: str, ms: int) -> None:
    assert parse_duration_ms(text) == ms


def test_a_bare_number_means_the_unit_the_caller_names() -> None:
    assert parse_duration_ms("250", bare="ms") == 250
    assert parse_duration_ms("1.5", bare="d") == 129_600_000
    assert parse_duration_ms("250ms", bare=None) == 250
    with pytest.raises(UsageError) as exc:
        parse_duration_ms("7", bare=None)
    assert str(exc.value) == "'7' needs a unit, e.g. 7d (days) or 7h (hours)"


@pytest.mark.parametrize("text", [
    "", " ", "abc", "-5s", "+5s", "5 weeks", "1e400s", "nan", "inf", "1h30", "30m1h", "1h1h",
    "1.s", ".5s", "1H", "\u0663s", "s", "5 m s", "1,5s", "0x10s", "ms",
])
def test_other_text_is_refused_with_one_message(text: str) -> None:
    with pytest.raises(UsageError) as exc:
        parse_duration_ms(text)
    assert str(exc.value) == f"invalid duration {text!r}: {BAD}"


def test_a_duration_beyond_the_time_range_is_too_long() -> None:
    with pytest.raises(UsageError) as exc:
        parse_duration_ms("99999999w")
    assert str(exc.value) == "duration '99999999w' is too long"


#: Components of a duration as users write them: (number text, unit), units
#: from the largest down, each at most once.
components = st.lists(st.sampled_from(list(DURATION_UNITS_MS)), min_size=1, unique=True).map(
    lambda units: sorted(units, key=lambda u: -DURATION_UNITS_MS[u])).flatmap(
    lambda units: st.tuples(*[st.tuples(
        st.integers(0, 999).map(str)
        | st.integers(0, 999_999).map(lambda n: f"{n // 1000}.{n % 1000:03d}"), st.just(u))
        for u in units]))


@given(parts=components, spaced=st.booleans())
def test_a_written_duration_parses_back_exactly(parts: tuple[tuple[str, str], ...],
                                                spaced: bool) -> None:
    text = (" " if spaced else "").join(number + unit for number, unit in parts)
    exact = sum(Fraction(number) * DURATION_UNITS_MS[unit] for number, unit in parts)
    assert parse_duration_ms(text) == int(exact)


@given(ms=st.integers(0, MAX_EPOCH_MS))
def test_whole_units_round_trip(ms: int) -> None:
    """Milliseconds written as weeks, days, ... and ms parse back to themselves."""
    text, rest = "", ms
    for unit, size in DURATION_UNITS_MS.items():
        count, rest = divmod(rest, size)
        if count:
            text += f"{count}{unit}"
    assert parse_duration_ms(text or "0ms") == ms


@given(text=st.text(max_size=12))
def test_any_text_parses_or_is_a_one_line_usage_error(text: str) -> None:
    try:
        ms = parse_duration_ms(text)
    except UsageError as exc:
        assert "\n" not in str(exc)
    else:
        assert 0 <= ms <= MAX_EPOCH_MS


def test_a_json_or_yaml_value_is_a_number_in_its_unit_or_a_duration() -> None:
    assert duration_value(90, "s") == 90 and type(duration_value(90, "s")) is int
    assert duration_value(0.25, "s") == 0.25
    assert duration_value("90s", "s") == 90
    assert duration_value("1h30m", "s") == 5400
    assert duration_value("250", "ms") == 250
    assert duration_value("1.5s", "ms") == 1500
    assert duration_value("12h", "d") == 0.5
    assert duration_value("1500ms", "s") == 1.5
    for bad in (True, None, [1], {"s": 1}, float("nan"), float("inf")):
        with pytest.raises(UsageError) as exc:
            duration_value(bad, "s")
        assert str(exc.value) == 'must be a number of seconds or a duration such as "90s"'
    with pytest.raises(UsageError) as exc:
        duration_value("soon", "s")
    assert str(exc.value) == f"invalid duration 'soon': {BAD}"


def test_run_at_before_2001_in_milliseconds_is_taken_for_seconds() -> None:
    assert MIN_RUN_AT_MS == 978_307_200_000  # 2001-01-01T00:00:00Z
    assert parse_run_at_ms(MIN_RUN_AT_MS) == MIN_RUN_AT_MS
    assert parse_run_at_ms(1_767_225_600_000) == 1_767_225_600_000
    # A time written out is never a guess, whatever its year.
    assert parse_run_at_ms("1999-12-31T00:00:00Z") == 946_598_400_000
    for seconds, day in ((1_767_225_600, "1970-01-21"), (MIN_RUN_AT_MS - 1, "2000-12-31"),
                         (0, "1970-01-01")):
        with pytest.raises(UsageError) as exc:
            parse_run_at_ms(seconds)
        assert str(exc.value) == (f"run_at: {seconds} would be {day} in epoch milliseconds: "
                                  f"{SECONDS_HINT}")
    with pytest.raises(UsageError) as exc:
        parse_run_at_ms(1_767_225_600, "--run-at")
    assert str(exc.value).startswith("--run-at: 1767225600 would be 1970-01-21")
    with pytest.raises(UsageError) as exc:
        parse_run_at_ms(-1)
    assert str(exc.value) == "run_at: -1 is out of range for epoch milliseconds"
