"""The YAML configuration file, as a pydantic model: this model is the
configuration object (``AppConfig.file``). Unknown keys are errors. Imported
only when a config file exists (or ``queuectl schema config`` asks for its
JSON Schema), so commands without one never load pydantic."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

from .durations import Seconds, duration_string_schema
from .errors import ConfigError, UsageError
from .limits import DEFAULT_DLQ_TIMEOUT, DEFAULT_EXECUTOR, DEFAULT_POLICY
from .schedules import declared_schedules
from .settings import SETTING_SPECS, check_setting, normalize_setting_key


class RetrySection(BaseModel):
    model_config = ConfigDict(extra="forbid")

    policy: str = Field(default=DEFAULT_POLICY, description="the backoff policy to use")
    options: dict[str, Any] = Field(default_factory=dict,
                                    description="the backoff policy's options")


class DlqSection(BaseModel):
    model_config = ConfigDict(extra="forbid")

    command: str | None = Field(default=None, min_length=1,
                                description="run with each dead job as JSON on stdin")
    timeout: Seconds = Field(default=DEFAULT_DLQ_TIMEOUT, gt=0, le=86_400,
                             description="seconds the DLQ command may take")


def _defaults_schema(schema: dict[str, Any]) -> None:
    properties: dict[str, Any] = {}
    for key, spec in SETTING_SPECS.items():
        number = {"type": "integer" if spec.kind is int else "number", "minimum": spec.low,
                  "maximum": spec.high}
        shape = number if spec.unit is None else {
            "anyOf": [number, duration_string_schema(spec.unit)]}
        properties[key] = {**shape, "default": spec.default, "description": spec.description}
    schema["properties"] = properties
    schema["additionalProperties"] = False


class ConfigFile(BaseModel):
    """``queuectl.yaml``: which plugins to use, their options, and the
    runtime settings' defaults."""

    model_config = ConfigDict(extra="forbid")

    backend: str | None = Field(default=None, min_length=1,
                                description="the storage backend to use")
    backends: dict[str, dict[str, Any] | None] = Field(
        default_factory=dict, description="options per backend, checked by its plugin")
    executor: str = Field(default=DEFAULT_EXECUTOR, description="how commands run")
    executors: dict[str, dict[str, Any] | None] = Field(
        default_factory=dict, description="options per executor, checked by its plugin")
    retry: RetrySection = Field(default_factory=RetrySection)
    defaults: dict[str, Any] = Field(
        default_factory=dict, json_schema_extra=_defaults_schema,
        description="runtime settings used until `config set` stores one")
    dlq: DlqSection = Field(default_factory=DlqSection)
    notifiers: dict[str, dict[str, Any] | None] = Field(
        default_factory=dict,
        description="notifiers to run (alerts, metrics), each with its options, checked by "
                    "its plugin")

    schedules: dict[str, dict[str, Any]] = Field(
        default_factory=dict,
        description="recurring schedules: name -> the fields of `schedule add` in JSON "
                    "(cron or every, command, ...), synced into the store by running workers")

    @field_validator("schedules")
    @classmethod
    def _schedules(cls, value: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
        try:
            declared_schedules(value, now=0)
        except UsageError as exc:
            raise ValueError(str(exc)) from None
        return value

    def notifier_options(self) -> dict[str, dict[str, Any]]:
        """Each notifier to run and its options: the ``notifiers`` section,
        and the ``command`` notifier for ``dlq.command``."""
        wanted = {key: dict(value or {}) for key, value in self.notifiers.items()}
        if self.dlq.command is not None:
            if any(key.lower().replace("_", "-") == "command" for key in wanted):
                raise ConfigError("dlq.command and notifiers.command both configure the "
                                  "command notifier: keep one")
            wanted["command"] = {"command": self.dlq.command, "timeout": self.dlq.timeout}
        return wanted

    @field_validator("backend", mode="before")
    @classmethod
    def _named(cls, value: object) -> object:
        # ``backend:`` with no value: a name that was lost, not "the default".
        if value is None:
            raise ValueError("give a backend's name (e.g. sqlite), or remove the key")
        return value

    @field_validator("defaults")
    @classmethod
    def _settings(cls, value: dict[str, Any]) -> dict[str, Any]:
        # ``max-retries`` and ``max_retries`` alike; each value in its range.
        checked: dict[str, Any] = {}
        for key, item in value.items():
            try:
                norm = normalize_setting_key(str(key))
                checked[norm] = check_setting(norm, item)
            except ConfigError as exc:
                raise ValueError(str(exc)) from None
        return checked
