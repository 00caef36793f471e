"""The runtime settings shared by every worker of a store (``config set``).

Each setting is declared once, as a field of :class:`Settings` with its
range and description; :data:`SETTING_SPECS`, the checks and the YAML
``defaults`` all come from that declaration.
"""

from __future__ import annotations

import math

from .errors import ConfigError, UsageError
from .limits import MAX_DELAY_SECONDS, MAX_RETRIES_LIMIT, MAX_TIMEOUT_SECONDS, MIN_OUTPUT_CAP
from .records import Record, field
from .timeutil import duration_value

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any


class SettingSpec(Record):
    kind: type[int] | type[float]
    default: int | float
    low: int | float
    high: int | float
    description: str
    #: For a duration: the unit of a bare number (a key of
    #: ``timeutil.DURATION_UNITS_MS``); it may also be given as "90s", "1h30m".
    unit: str | None = None


def _setting(default: int | float, low: int | float, high: int | float,
             description: str, unit: str | None = None) -> Any:
    spec = SettingSpec(type(default), default, low, high, description, unit)
    return field(default, meta={"setting": spec})


class Settings(Record):
    """Effective runtime settings: stored > YAML ``defaults`` > built-in."""

    max_retries: int = _setting(3, 0, MAX_RETRIES_LIMIT,
                                "retries after the first attempt before a job is dead")
    backoff_base: float = _setting(2.0, 1.0, 1000.0,
                                   "retry delay in seconds: backoff_base ** attempts "
                                   "(exponential), backoff_base * attempts (linear), or "
                                   "backoff_base (constant)")
    worker_idle_delay: int = _setting(2000, 1, 3_600_000,
                                      "ms an idle worker waits between polls (at most)", "ms")
    lease_seconds: int = _setting(15, 3, 86_400,
                                  "seconds a claim stays valid without a heartbeat", "s")
    max_delay: float = _setting(0.0, 0.0, MAX_DELAY_SECONDS,
                                "longest retry delay in seconds (0: no cap)", "s")
    jitter: float = _setting(0.0, 0.0, 1.0,
                             "each retry delay is cut by a random fraction up to this")
    job_timeout: float = _setting(0.0, 0.0, MAX_TIMEOUT_SECONDS,
                                  "seconds a job without its own timeout may run (0: no limit)",
                                  "s")
    output_max_bytes: int = _setting(10 * 1024 * 1024, 0, 2**40,
                                     "cap on each attempt's stdout and on its stderr on disk; "
                                     "the newest output is kept (0: no cap, else at least "
                                     "4096)")
    output_tail_bytes: int = _setting(4096, 0, 1024 * 1024,
                                      "bytes of each attempt's stdout and stderr kept in the "
                                      "store, for `logs` on any machine")
    retention_days: float = _setting(0.0, 0.0, 36_500.0,
                                     "completed, cancelled and skipped jobs are purged this many "
                                     "days after they finish, with their logs (0: kept)", "d")


#: Every setting's type, default, range and description, by key.
SETTING_SPECS: dict[str, SettingSpec] = {
    f.name: f.meta["setting"] for f in Settings.record_fields()}
SETTING_KEYS = tuple(SETTING_SPECS)


def _is_int(value: object) -> bool:
    return type(value) is int  # bool is not an int here, nor is 3.0


def check_setting(key: str, value: object) -> int | float:
    """Validate one (normalized) setting value; returns it, as a float for
    float settings. Raises ConfigError with a one-line message."""
    spec = SETTING_SPECS[key]
    if spec.unit is not None and type(value) is str:
        value = _duration(key, value, spec.unit, spec.kind)
    if spec.kind is int:
        if not _is_int(value):
            raise ConfigError(f"{key}: {value!r} is not a whole number")
    else:
        if type(value) not in (int, float) or not math.isfinite(value):  # type: ignore[arg-type]
            raise ConfigError(f"{key}: {value!r} is not a finite number")
        value = float(value)  # type: ignore[arg-type]
    assert isinstance(value, int | float)
    if not spec.low <= value <= spec.high:
        raise ConfigError(f"{key}: must be from {spec.low:g} to {spec.high:g}, got {value:g}")
    if key == "output_max_bytes" and 0 < value < MIN_OUTPUT_CAP:
        raise ConfigError(f"{key}: must be 0 (no cap) or at least {MIN_OUTPUT_CAP}, "
                          f"got {value:g}")
    return value


def _duration(key: str, text: str, unit: str, kind: type) -> int | float:
    """A duration setting given as text ("90s", "1h30m"; a bare number in
    the setting's own unit), as a number in that unit."""
    try:
        value = duration_value(text, unit)
    except UsageError as exc:
        raise ConfigError(f"{key}: {exc}") from None
    if kind is int and not _is_int(value):
        names = {"s": "seconds", "ms": "milliseconds"}
        raise ConfigError(f"{key}: {text!r} is not a whole number of {names.get(unit, unit)}")
    return value


def normalize_setting_key(key: str) -> str:
    """``max-retries`` and ``max_retries`` name the same key."""
    norm = key.strip().lower().replace("-", "_")
    if norm not in SETTING_SPECS:
        raise ConfigError(f"unknown setting {key!r}; choose one of: {', '.join(SETTING_KEYS)}")
    return norm


def parse_setting_value(key: str, text: str) -> int | float:
    """Parse a value typed on the command line for a (normalized) key."""
    spec = SETTING_SPECS[key]
    raw = text.strip()
    try:
        value: int | float = int(raw, 10) if spec.kind is int else float(raw)
    except ValueError:
        if spec.unit is not None:  # a duration: "90s", "1h30m"
            return check_setting(key, text)
        kind = "a whole number" if spec.kind is int else "a finite number"
        raise ConfigError(f"{key}: {text!r} is not {kind}") from None
    return check_setting(key, value)


def settings_from_stored(stored: dict[str, Any], defaults: dict[str, Any] | None = None
                         ) -> Settings:
    """Effective settings: stored values override ``defaults`` (from YAML),
    which override the built-in defaults. Unknown stored keys are ignored so
    that an older queuectl can read a store written by a newer one."""
    merged: dict[str, Any] = {}
    for source, where in ((defaults or {}, "YAML defaults"), (stored, "stored setting")):
        for key, value in source.items():
            if key in SETTING_SPECS:
                try:
                    merged[key] = check_setting(key, value)
                except ConfigError as exc:
                    raise ConfigError(f"invalid {where}: {exc}") from None
    return Settings(**merged)
