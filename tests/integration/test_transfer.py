"""export / import across backends: a queue moves from one store to another
with its history, all or nothing."""

from __future__ import annotations

import contextlib
import json
from pathlib import Path

import pytest

from tests.postgres_lock import postgres_shared

from .conftest import BACKENDS, Queue, postgres_dsn


@pytest.mark.parametrize("target", BACKENDS)
def test_export_then_import_into_another_backend(queue: Queue, tmp_path: Path,
                                                 target: str) -> None:
    queue.fast()
    queue.enqueue({"id": "ok", "command": "echo fine"})
    queue.enqueue({"id": "bad", "command": "exit 3", "max_retries": 0})
    queue.enqueue({"id": "later", "command": "echo later", "run_at": "2099-01-01T00:00:00Z"})
    queue.start_workers(1)
    queue.wait_counts(completed=1, dead=1, pending=1)
    queue.stop_workers()
    dump = tmp_path / "queue.jsonl"
    queue.run("export", "--output", str(dump))
    lines = [json.loads(line) for line in dump.read_text().splitlines()]
    assert [r["id"] for r in lines] == ["ok", "bad", "later"]
    assert lines[1]["attempts_history"][0]["exit_code"] == 3

    # The queue fixture holds the PostgreSQL test lock only for its own backend.
    with postgres_shared(postgres_dsn()) if target == "postgres" else contextlib.nullcontext():
        other = Queue(tmp_path / "other-home", queue.workdir, target)
        try:
            assert other.run("import", str(dump)).stdout.strip() == "Imported 3 jobs."
            exported_again = [json.loads(line) for line in
                              other.run("export").stdout.splitlines()]
            assert exported_again == lines, "the move kept every field and attempt"
            res = other.run("import", str(dump), check=False)
            assert res.returncode == 1 and "already exists" in res.stderr
            assert other.status()["completed"] == 1
            # The moved queue works: its DLQ job can be retried there.
            other.run("dlq", "retry", "bad")
            assert other.show("bad")["state"] == "pending"
        finally:
            other.cleanup()


def test_import_is_all_or_nothing(queue: Queue, tmp_path: Path) -> None:
    good = {"id": "a", "command": "true", "state": "pending", "attempts": 0,
            "max_retries": 3, "priority": 0, "run_at": "2026-01-01T00:00:00Z",
            "created_at": "2026-01-01T00:00:00Z", "updated_at": "2026-01-01T00:00:00Z"}
    bad = dict(good, id="b", attempts="many")
    path = tmp_path / "in.jsonl"
    path.write_text(json.dumps(good) + "\n" + json.dumps(bad) + "\n")
    res = queue.run("import", str(path), check=False)
    assert res.returncode == 2 and res.stderr.startswith("Error: line 2")
    assert queue.jobs() == []
    path.write_text(json.dumps(good) + "\n" + json.dumps(good) + "\n")
    res = queue.run("import", str(path), check=False)
    assert res.returncode == 1 and queue.jobs() == []
