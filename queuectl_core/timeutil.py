"""Time helpers. The store keeps every timestamp as integer epoch milliseconds
(UTC); users see ISO-8601."""

from __future__ import annotations

import math
import re
import time
from datetime import UTC, datetime, timedelta

from .errors import UsageError
from .errors import shown as shown  # its old home

#: The units of a duration, largest first, in milliseconds.
DURATION_UNITS_MS = {"w": 604_800_000, "d": 86_400_000, "h": 3_600_000, "m": 60_000,
                     "s": 1000, "ms": 1}
_UNIT_NAMES = {"w": "weeks", "d": "days", "h": "hours", "m": "minutes", "s": "seconds",
               "ms": "milliseconds"}
#: One part of a duration: a number and its unit, e.g. ``1.5h`` (compiled on
#: first use: the CLI's hot path parses none unless a job gives one).
_PART = r"\s*([0-9]+)(?:\.([0-9]+))?\s*(ms|s|m|h|d|w)?"
_UNIT_ORDER = list(DURATION_UNITS_MS)
_EXAMPLES = "use a number with a unit (ms, s, m, h, d, w), e.g. 500ms, 30s, 1.5m, 1h30m, 7d"

# Epoch milliseconds accepted for run_at: 1970 .. year 9999.
MAX_EPOCH_MS = 253_402_300_799_999
#: The earliest ``run_at`` given as a number (2001-01-01T00:00:00Z): a smaller
#: one is almost surely epoch seconds, which would mean January 1970.
MIN_RUN_AT_MS = 978_307_200_000
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def now_ms() -> int:
    """The current wall-clock time in epoch milliseconds."""
    return time.time_ns() // 1_000_000


def iso(ms: int | None) -> str | None:
    """Epoch milliseconds to ISO-8601 UTC with millisecond precision, e.g.
    ``2026-11-28T13:15:17.123Z``; None stays None."""
    if ms is None:
        return None
    dt = datetime.fromtimestamp(ms / 1000, tz=UTC)
    return dt.strftime("%Y-%m-%dT%H:%M:%S.") + f"{ms % 1000:03d}Z"


def parse_duration_ms(text: str, bare: str | None = "s") -> int:
    """Parse a duration into whole milliseconds: numbers with units, largest
    unit first, each unit once: ``500ms``, ``30s``, ``1.5m``, ``1h30m``,
    ``2d 12h``, ``1w``. A bare number means ``bare`` (a unit of
    :data:`DURATION_UNITS_MS`), or is refused when ``bare`` is None. The one
    parser of every duration queuectl reads (options, job JSON, YAML)."""
    parts = _duration_parts(text) if type(text) is str else None
    if parts is None:
        raise UsageError(f"invalid duration {text!r}: {_EXAMPLES}")
    if not parts[0][2] and bare is None:
        raise UsageError(f"{text!r} needs a unit, e.g. 7d (days) or 7h (hours)")
    # Exact: in units of 10**-places ms, rounded down to whole ms at the end.
    places = max(len(fraction) for _, fraction, _ in parts)
    total: int = 0
    for whole, fraction, unit in parts:
        total += int(whole + fraction.ljust(places, "0")) * DURATION_UNITS_MS[unit or str(bare)]
    total //= 10 ** places
    if total > MAX_EPOCH_MS:
        raise UsageError(f"duration {text!r} is too long")
    return total


def _duration_parts(text: str) -> list[tuple[str, str, str]] | None:
    """The (whole, fraction, unit) parts of ``text`` (unit "" for a bare
    number); None unless it is one bare number, or numbers with units from
    the largest unit down."""
    if len(text) > 200:
        return None
    parts: list[tuple[str, str, str]] = []
    end = 0
    for m in re.finditer(_PART, text):
        if m.start() != end:
            return None
        parts.append((m.group(1), m.group(2) or "", m.group(3) or ""))
        end = m.end()
    if not parts or text[end:].strip():
        return None
    if len(parts) == 1:
        return parts
    units = [unit for _, _, unit in parts]
    if "" in units:
        return None
    ranks = [_UNIT_ORDER.index(unit) for unit in units]
    return parts if ranks == sorted(set(ranks)) else None


def duration_value(value: object, unit: str) -> int | float:
    """A duration given in JSON or YAML, in ``unit`` (a key of
    :data:`DURATION_UNITS_MS`): a number is already in that unit (returned
    as is); a string is parsed by :func:`parse_duration_ms`, a bare number
    in it meaning ``unit`` too (an int when it is whole in ``unit``)."""
    if type(value) is str:
        ms = parse_duration_ms(value, bare=unit)
        size = DURATION_UNITS_MS[unit]
        return ms // size if ms % size == 0 else ms / size
    if isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value):
        return value
    raise UsageError(f"must be a number of {_UNIT_NAMES[unit]} or a duration such as \"90s\"")


def parse_timestamp_ms(value: object, field: str = "run_at") -> int:
    """Accept epoch milliseconds (an integer) or an ISO-8601 string (a naive
    one is taken as UTC) and return epoch milliseconds."""
    if isinstance(value, bool):
        raise UsageError(f"{field}: expected epoch milliseconds or an ISO-8601 string")
    if isinstance(value, int):
        if not 0 <= value <= MAX_EPOCH_MS:
            raise UsageError(f"{field}: {value} is out of range for epoch milliseconds")
        return value
    if isinstance(value, str):
        text = value.strip()
        if text.endswith(("Z", "z")):
            text = text[:-1] + "+00:00"
        try:
            dt = datetime.fromisoformat(text)
        except ValueError:
            raise UsageError(
                f"{field}: {value!r} is not an ISO-8601 timestamp "
                "(e.g. 2026-11-28T09:30:00Z)"
            ) from None
        if dt.tzinfo is None:
            dt = dt.replace(tzinfo=UTC)
        # Exact integer arithmetic: dt.timestamp() * 1000 is a float and can
        # land 1 ms early.
        ms = (dt - _EPOCH) // timedelta(milliseconds=1)
        if not 0 <= ms <= MAX_EPOCH_MS:
            raise UsageError(f"{field}: {value!r} is outside 1970-01-01 .. 9999-12-31 (UTC)")
        return ms
    raise UsageError(f"{field}: expected epoch milliseconds or an ISO-8601 string")


def parse_run_at_ms(value: object, field: str = "run_at") -> int:
    """``run_at`` as :func:`parse_timestamp_ms` takes it, except a number
    before 2001-01-01 (:data:`MIN_RUN_AT_MS`): that is epoch seconds, not
    milliseconds, and refused. A time written out (ISO-8601) is taken as
    given, whatever its year."""
    ms = parse_timestamp_ms(value, field)
    if type(value) is int and ms < MIN_RUN_AT_MS:
        day = iso(ms)[:10]  # type: ignore[index]
        raise UsageError(f"{field}: {value} would be {day} in epoch milliseconds: this looks "
                         "like seconds since the epoch; give milliseconds or ISO-8601")
    return ms
