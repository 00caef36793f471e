"""Helpers of the web plugin's tests: a real queue and jobs run to their end
through the ledger, as a worker records them."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from fastapi.testclient import TestClient

from queuectl_core.app import App
from queuectl_core.config import resolve_config
from queuectl_core.models import ExecResult, Job
from queuectl_core.timeutil import now_ms

TOKEN = "test-token-0123456789abcdef"
#: The password in the PostgreSQL DSN of ``pg_home`` (never shown).
PG_PASSWORD = "s3cret-pw-7f3a"


def queue_app(home: Path, backend: str | None = None) -> App:
    return App(resolve_config(home=str(home), config=None, backend=backend))


def new_job(job_id: str, command: str = "true", **fields: object) -> Job:
    now = now_ms()
    values: dict[str, object] = {"id": job_id, "command": command, "state": "pending",
                                 "max_retries": 0, "run_at": now, "created_at": now,
                                 "updated_at": now, **fields}
    return Job(**values)  # type: ignore[arg-type]


def run_to_the_end(app: App, job_id: str, result: ExecResult) -> None:
    """Claim ``job_id`` and record ``result`` (a failure with no retries
    left: dead), as a worker would."""
    ledger = app.ledger
    now = now_ms()
    claim = ledger.claim("w-test", now, 60_000, ["default"])
    assert claim is not None and claim.job.id == job_id, claim
    if result.exit_code == 0:
        ledger.complete(claim, result, now + 5)
    else:
        ledger.fail(claim, result, now + 5, None)



Client = Callable[..., TestClient]
