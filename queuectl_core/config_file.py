"""The YAML file's schema, checked with pydantic (unknown keys are errors).
Imported only when a config file exists."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from .config import DEFAULT_EXECUTOR, DEFAULT_POLICY


class RetrySchema(BaseModel):
    model_config = ConfigDict(extra="forbid")

    policy: str = DEFAULT_POLICY
    options: dict[str, Any] = Field(default_factory=dict)


class DlqSchema(BaseModel):
    model_config = ConfigDict(extra="forbid")

    command: str | None = Field(default=None, min_length=1)
    timeout: float = Field(default=30.0, gt=0, le=86_400)


class FileSchema(BaseModel):
    model_config = ConfigDict(extra="forbid")

    backend: str | None = None
    backends: dict[str, dict[str, Any] | None] = Field(default_factory=dict)
    executor: str = DEFAULT_EXECUTOR
    executors: dict[str, dict[str, Any] | None] = Field(default_factory=dict)
    retry: RetrySchema = Field(default_factory=RetrySchema)
    defaults: dict[str, Any] = Field(default_factory=dict)
    dlq: DlqSchema = Field(default_factory=DlqSchema)
