"""A DSN's password reaches neither a job's environment nor a cache (issue
20 item 9): ``QUEUECTL_POSTGRES_DSN`` (declared secret by the postgres
plugin's record, ``secret_env``) is scrubbed from every command's
environment, whatever the backend, and the start-up cache keeps neither the
YAML's text nor an option declared secret (``secret_options``)."""

from __future__ import annotations

import pytest

from .conftest import Queue, postgres_dsn

ENV_PASSWORD = "pw-in-the-env-7e1"
YAML_PASSWORD = "pw-in-the-yaml-4c9"


def with_password(dsn: str, password: str) -> str:
    # trust authentication ignores the password: the store still opens.
    return f"{dsn}{'&' if '?' in dsn else '?'}password={password}"


@pytest.mark.backends("postgres")
def test_a_dsn_password_reaches_no_job_and_no_cache(queue: Queue) -> None:
    queue.env["QUEUECTL_POSTGRES_DSN"] = with_password(postgres_dsn(), ENV_PASSWORD)
    (queue.home / "queuectl.yaml").write_text(
        f"backends:\n  postgres:\n    schema: {queue.pg_schema}\n"
        f"    dsn: '{with_password(postgres_dsn(), YAML_PASSWORD)}'\n")
    queue.fast()
    queue.enqueue({"id": "env", "command": "env; echo done"})
    queue.enqueue({"id": "other", "command": "true"})  # once the cache is written
    queue.start_workers(1)
    queue.wait_state("env", "completed")
    queue.stop_workers()
    # What the job saw, also kept in the store (output_tail_bytes).
    output = (queue.home / "logs" / "jobs" / "env" / "attempt-1.out").read_text()
    assert "done" in output and "QUEUECTL_JOB_ID=env" in output
    assert ENV_PASSWORD not in output and "QUEUECTL_POSTGRES_DSN" not in output
    cached = [p for p in (queue.home / "cache").rglob("*") if p.is_file()]
    assert cached, "the start-up cache was written"
    for path in cached:
        text = path.read_bytes()
        assert YAML_PASSWORD.encode() not in text, path
        assert ENV_PASSWORD.encode() not in text, path
