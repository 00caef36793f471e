"""Settings typed on the command line and stored (``queuectl_core.settings``):
keys with dashes, strict values, and which source wins."""

from __future__ import annotations

import math

import pytest

from queuectl_core.errors import ConfigError
from queuectl_core.settings import (
    Settings,
    normalize_setting_key,
    parse_setting_value,
    settings_from_stored,
)


def test_setting_keys_accept_dashes_and_any_case() -> None:
    assert normalize_setting_key("max-retries") == "max_retries"
    assert normalize_setting_key("Worker_Idle_Delay") == "worker_idle_delay"
    with pytest.raises(ConfigError, match="choose one of"):
        normalize_setting_key("retries")


@pytest.mark.parametrize(("key", "text", "value"), [
    ("max_retries", "5", 5), ("backoff_base", "3", 3.0), ("backoff_base", "1.5", 1.5),
    ("worker_idle_delay", "500", 500), ("lease_seconds", "30", 30)])
def test_setting_values_parse_to_their_type(key: str, text: str, value: float) -> None:
    assert parse_setting_value(key, text) == value


@pytest.mark.parametrize(("key", "text"), [
    ("max_retries", "-1"), ("max_retries", "1.5"), ("max_retries", "three"),
    ("backoff_base", "nan"), ("backoff_base", "inf"), ("backoff_base", "0.5"),
    ("worker_idle_delay", "0"), ("lease_seconds", "1"), ("max_retries", "")])
def test_bad_setting_values_are_refused(key: str, text: str) -> None:
    with pytest.raises(ConfigError):
        parse_setting_value(key, text)


def test_stored_settings_win_over_yaml_defaults_over_built_in_ones() -> None:
    assert settings_from_stored({}) == Settings()
    s = settings_from_stored({"max_retries": 9, "unknown_future_key": 1},
                             {"max_retries": 4, "backoff_base": 3})
    assert (s.max_retries, s.backoff_base) == (9, 3.0)
    assert math.isclose(Settings().backoff_base, 2.0)


def test_settings_replace_changes_only_the_fields_named() -> None:
    base = Settings(backoff_base=3)
    changed = base.replace(max_retries=7)
    assert (changed.max_retries, changed.backoff_base) == (7, 3.0)
    assert base.max_retries == Settings().max_retries, "the original is unchanged"
