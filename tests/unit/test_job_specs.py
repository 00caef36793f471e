from __future__ import annotations

import math

import pytest

from queuectl_core.errors import ConfigError, UsageError
from queuectl_core.models import (
    JobSpec,
    Settings,
    normalize_setting_key,
    parse_job_spec,
    parse_setting_value,
    settings_from_stored,
)
from queuectl_core.timeutil import iso, parse_duration_ms, parse_timestamp_ms


def test_iso_formatting() -> None:
    assert iso(0) == "1970-01-01T00:00:00.000Z"
    assert iso(1_700_000_000_123) == "2023-11-14T22:13:20.123Z"
    assert iso(None) is None


@pytest.mark.parametrize(("text", "ms"), [("500ms", 500), ("30s", 30_000), ("30", 30_000),
                                          ("1.5m", 90_000), ("2h", 7_200_000),
                                          ("7d", 604_800_000)])
def test_durations(text: str, ms: int) -> None:
    assert parse_duration_ms(text) == ms


@pytest.mark.parametrize("text", ["", "abc", "-5s", "5 weeks", "1e400s", "nan"])
def test_bad_durations(text: str) -> None:
    with pytest.raises(UsageError):
        parse_duration_ms(text)


def test_timestamps() -> None:
    assert parse_timestamp_ms(1_700_000_000_000) == 1_700_000_000_000
    assert parse_timestamp_ms("2023-11-14T22:13:20.123Z") == 1_700_000_000_123
    assert parse_timestamp_ms("2023-11-14T22:13:20") == 1_700_000_000_000  # naive = UTC
    assert parse_timestamp_ms("2023-11-14T23:13:20+01:00") == 1_700_000_000_000
    for bad in (True, -1, 10**20, "tomorrow", 1.5, None):
        with pytest.raises(UsageError):
            parse_timestamp_ms(bad)


def test_job_spec_defaults_are_filled_at_enqueue() -> None:
    job = parse_job_spec({"command": "echo hi"}).to_new_job(default_max_retries=5, now=1000)
    assert job.max_retries == 5 and job.run_at == 1000 and job.priority == 0
    assert len(job.id) == 12
    own = parse_job_spec({"id": "j", "command": "x", "max_retries": 0, "run_at": 5000,
                          "priority": 9}).to_new_job(default_max_retries=5, now=1000)
    assert (own.id, own.max_retries, own.run_at, own.priority) == ("j", 0, 5000, 9)


@pytest.mark.parametrize("data", [
    {"command": "x", "max_retries": "3"},
    {"command": "x", "max_retries": 1.5},
    {"command": "x", "max_retries": True},
    {"command": "x", "max_retries": -1},
    {"command": "x", "max_retries": 10**9},
    {"command": "x", "priority": "high"},
    {"command": "x", "run_at": 1.5},
    {"command": "x", "id": 7},
    {"command": "x", "id": ""},
    {"command": "x", "id": " padded"},
    {"command": "x", "id": "line\nbreak"},
    {"command": "x", "id": "x" * 256},
    {"command": ""},
    {"command": "   "},
    {"command": "a\x00b"},
    {"command": ["ls"]},
    {"id": "no-command"},
    {"command": "x", "state": "completed"},
    {"command": "x", "attempts": 0},
])
def test_job_spec_is_strict(data: dict[str, object]) -> None:
    with pytest.raises(UsageError) as exc:
        parse_job_spec(data)
    assert "\n" not in str(exc.value)


def test_job_spec_rejects_non_objects() -> None:
    values: list[object] = [[], "echo", 3, None]
    for value in values:
        with pytest.raises(UsageError):
            parse_job_spec(value)


def test_bad_run_at_string_is_a_usage_error() -> None:
    spec = parse_job_spec({"command": "x", "run_at": "not a date"})
    with pytest.raises(UsageError):
        spec.to_new_job(default_max_retries=3)


def test_multiline_and_quoted_commands_are_kept_verbatim() -> None:
    command = "echo \"$HOME\" 'a  b'\nprintf 'ünï\\n'"
    assert JobSpec(command=command).command == command


def test_setting_keys_accept_dashes() -> None:
    assert normalize_setting_key("max-retries") == "max_retries"
    assert normalize_setting_key("Worker_Idle_Delay") == "worker_idle_delay"
    with pytest.raises(ConfigError, match="choose one of"):
        normalize_setting_key("retries")


@pytest.mark.parametrize(("key", "text", "value"), [
    ("max_retries", "5", 5), ("backoff_base", "3", 3.0), ("backoff_base", "1.5", 1.5),
    ("worker_idle_delay", "500", 500), ("lease_seconds", "30", 30)])
def test_setting_values(key: str, text: str, value: float) -> None:
    assert parse_setting_value(key, text) == value


@pytest.mark.parametrize(("key", "text"), [
    ("max_retries", "-1"), ("max_retries", "1.5"), ("max_retries", "three"),
    ("backoff_base", "nan"), ("backoff_base", "inf"), ("backoff_base", "0.5"),
    ("worker_idle_delay", "0"), ("lease_seconds", "1"), ("max_retries", "")])
def test_bad_setting_values(key: str, text: str) -> None:
    with pytest.raises(ConfigError):
        parse_setting_value(key, text)


def test_settings_precedence() -> None:
    assert settings_from_stored({}) == Settings()
    s = settings_from_stored({"max_retries": 9, "unknown_future_key": 1},
                             {"max_retries": 4, "backoff_base": 3})
    assert (s.max_retries, s.backoff_base) == (9, 3.0)
    assert math.isclose(Settings().backoff_base, 2.0)
