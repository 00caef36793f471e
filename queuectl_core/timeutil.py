"""Time helpers. The store keeps every timestamp as integer epoch milliseconds
(UTC); users see ISO-8601."""

from __future__ import annotations

import re
import time
from datetime import UTC, datetime, timedelta

from .errors import UsageError
from .errors import shown as shown  # its old home

#: A duration: a number with an optional unit (compiled on first use: the
#: CLI's hot path never parses one).
_DURATION = r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$"
_UNITS_MS = {"ms": 1, "s": 1000, "m": 60_000, "h": 3_600_000, "d": 86_400_000}

# Epoch milliseconds accepted for run_at: 1970 .. year 9999.
MAX_EPOCH_MS = 253_402_300_799_999
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


def parse_duration_ms(text: str) -> int:
    """Parse ``30s``, ``500ms``, ``5m``, ``2h``, ``7d`` or a bare number of
    seconds into milliseconds."""
    m = re.match(_DURATION, text)
    if not m:
        raise UsageError(
            f"invalid duration {text!r}: use a number with a unit, e.g. 500ms, 30s, 5m, 2h, 7d"
        )
    value = float(m.group(1)) * _UNITS_MS[m.group(2) or "s"]
    if value > MAX_EPOCH_MS:
        raise UsageError(f"duration {text!r} is too long")
    return int(value)


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
