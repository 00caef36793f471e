"""Options of the queuectl_postgres plugin (``queuectl.yaml``), a pydantic model
imported only when the YAML gives options."""

from __future__ import annotations

import re

from pydantic import BaseModel, ConfigDict, Field, field_validator

from queuectl_core.durations import WholeSeconds

#: Lower-case SQL identifiers only: no quoting surprises, no case folding.
_SCHEMA_NAME = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")

class PostgresOptions(BaseModel):
    """``backends: {postgres: {...}}`` in queuectl.yaml."""

    # ``schema`` would shadow a (deprecated) BaseModel method, so the
    # attribute is ``schema_name`` and the YAML key its alias ``schema``.
    model_config = ConfigDict(extra="forbid", validate_by_name=True, validate_by_alias=True)

    #: libpq connection string, URL (``postgresql://user@host:5432/db``) or
    #: key=value form; None: read ``QUEUECTL_POSTGRES_DSN``.
    dsn: str | None = None
    #: The PostgreSQL schema holding queuectl's tables (created if missing).
    #: Several queues can share one database under different schemas.
    schema_name: str = Field(default="queuectl", alias="schema")
    #: Seconds to wait for a connection before the server counts as unreachable.
    connect_timeout_s: WholeSeconds = Field(default=5, ge=1, le=300)
    #: Seconds one exchange with the server (a statement, a commit) may take
    #: in a command before the connection counts as stalled and the command
    #: gives up. Workers use a quarter of the lease instead, if less.
    call_timeout_s: float = Field(default=30, ge=1, le=3600)

    @field_validator("schema_name")
    @classmethod
    def _check_schema(cls, value: str) -> str:
        if not _SCHEMA_NAME.match(value):
            raise ValueError(
                "must be a plain SQL identifier: lower-case letters, digits and _, "
                "not starting with a digit, at most 63 characters"
            )
        if value.startswith("pg_"):
            raise ValueError("names starting with pg_ are reserved by PostgreSQL")
        return value
