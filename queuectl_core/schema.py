"""JSON Schemas for editors and CI: a job spec (what ``enqueue`` takes) and
the YAML configuration file (``queuectl schema job|config``).

The job spec's pydantic model is built from ``jobspec.SPEC_FIELDS`` and the
limits in ``limits.py``, the same ones the hand-written validation on the
CLI's hot path uses (``jobspec.spec_problem``); its validators add the rules
a JSON Schema cannot say (no NUL characters, a command that is not blank,
the size of ``env``), and a property test keeps the model and the hand
validation in agreement. Imported only for ``queuectl schema``.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, create_model, field_validator

from .durations import seconds
from .jobspec import AFTER_MODES, DURATION_KEYS, MAX_AFTER, SPEC_FIELDS, spec_problem
from .limits import (
    DEFAULT_QUEUE,
    MAX_COMMAND_LENGTH,
    MAX_ENV_ENTRIES,
    MAX_ID_LENGTH,
    MAX_PATH_LENGTH,
    MAX_PRIORITY,
    MAX_QUEUE_NAME_LENGTH,
    MAX_RETRIES_LIMIT,
    MAX_TIMEOUT_SECONDS,
)
from .settings import SETTING_SPECS

#: A queue name (and a retry policy's name).
NAME_PATTERN = r"^[A-Za-z0-9_][A-Za-z0-9._-]*$"


def _retry_model() -> type[BaseModel]:
    fields: dict[str, Any] = {
        "policy": (str | None, Field(None, min_length=1, max_length=MAX_QUEUE_NAME_LENGTH,
                                     pattern=NAME_PATTERN, description="a backoff policy")),
    }
    for key in ("backoff_base", "max_delay", "jitter"):
        spec = SETTING_SPECS[key]
        if key in DURATION_KEYS:
            fields[key] = (seconds(ge=spec.low, le=spec.high, allow_inf_nan=False) | None,
                           Field(None, description=spec.description))
            continue
        fields[key] = (float | None, Field(None, ge=spec.low, le=spec.high, allow_inf_nan=False,
                                           description=spec.description))
    return create_model("JobRetry", __config__=ConfigDict(extra="forbid", strict=True),
                        **fields)


class _SpecRules(BaseModel):
    """What the JSON Schema cannot say (no NUL characters or lone
    surrogates, a command that is not blank, printable ids, the size of
    ``env``): checked by the hand validation, field by field."""

    model_config = ConfigDict(extra="forbid", strict=True)

    @field_validator("id", "command", "cwd", "env", "after", "concurrency_key", "unique_key",
                     check_fields=False)
    @classmethod
    def _by_hand(cls, value: Any, info: ValidationInfo) -> Any:
        if value is not None:
            problem = spec_problem({"command": "x", str(info.field_name): value})
            if problem is not None:
                raise ValueError(problem.split(": ", 1)[-1])
        return value


def job_spec_model() -> type[BaseModel]:
    """The pydantic model of a job spec."""
    d = SPEC_FIELDS
    fields: dict[str, Any] = {
        "id": (str | None, Field(None, min_length=1, max_length=MAX_ID_LENGTH,
                                 description=d["id"])),
        "command": (str, Field(min_length=1, max_length=MAX_COMMAND_LENGTH,
                               description=d["command"])),
        "run_at": (int | str | None, Field(None, description=d["run_at"])),
        "max_retries": (int | None, Field(None, ge=0, le=MAX_RETRIES_LIMIT,
                                          description=d["max_retries"])),
        "priority": (int, Field(0, ge=-MAX_PRIORITY, le=MAX_PRIORITY, description=d["priority"])),
        "queue": (str, Field(DEFAULT_QUEUE, min_length=1, max_length=MAX_QUEUE_NAME_LENGTH,
                             pattern=NAME_PATTERN, description=d["queue"])),
        "timeout": (seconds(gt=0, le=MAX_TIMEOUT_SECONDS, allow_inf_nan=False) | None,
                    Field(None, description=d["timeout"])),
        "cwd": (str | None, Field(None, min_length=1, max_length=MAX_PATH_LENGTH,
                                  description=d["cwd"])),
        "env": (dict[str, str] | None, Field(None, max_length=MAX_ENV_ENTRIES,
                                             description=d["env"])),
        "retry": (_retry_model() | None, Field(None, description=d["retry"])),
        "after": (list[str] | None, Field(None, max_length=MAX_AFTER, description=d["after"])),
        "after_mode": (Literal[AFTER_MODES] | None, Field(None, description=d["after_mode"])),
        "concurrency_key": (str | None, Field(None, min_length=1, max_length=MAX_ID_LENGTH,
                                              description=d["concurrency_key"])),
        "unique_key": (str | None, Field(None, min_length=1, max_length=MAX_ID_LENGTH,
                                         description=d["unique_key"])),
    }
    assert set(fields) == set(SPEC_FIELDS), "every spec field, once"
    return create_model("JobSpec", __base__=_SpecRules, **fields)


def json_schema(kind: str) -> dict[str, Any]:
    """The JSON Schema of ``job`` (one line of ``enqueue``) or ``config``
    (``queuectl.yaml``)."""
    if kind == "job":
        schema = job_spec_model().model_json_schema()
        schema["title"] = "queuectl job"
    else:
        from .config_file import ConfigFile

        schema = ConfigFile.model_json_schema()
        schema["title"] = "queuectl.yaml"
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    return schema
