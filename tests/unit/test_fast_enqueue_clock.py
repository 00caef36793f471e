"""The CLI's fast path stamps a job's time once its store is open.

Opening the store may take long (PostgreSQL: importing psycopg and
connecting, about 100 ms), and the job exists only from its insert on, so
``created_at`` (and ``run_at`` when none is given) must not include that
wait: as in the full ``enqueue``, which takes the time after it opened the
store."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from queuectl_core.cli import fast


class SlowStore:
    def __init__(self, clock: list[int]) -> None:
        self.clock = clock
        self.jobs: list[dict[str, Any]] = []

    def stored_settings(self) -> dict[str, Any]:
        return {}

    def enqueue(self, job: dict[str, Any]) -> bool:
        self.jobs.append(job)
        return True

    def close(self) -> None:
        pass


def test_the_job_time_is_taken_after_the_store_opened(tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch,
                                                       capsys: pytest.CaptureFixture[str]
                                                       ) -> None:
    clock = [1_000_000]
    store = SlowStore(clock)

    def open_slowly(home: str, cache: dict[str, Any]) -> SlowStore:
        clock[0] += 500  # the opening takes 500 ms
        return store

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(fast, "_context", lambda: (str(tmp_path / "home"),
                                                   {"job_event_listeners": False}))
    monkeypatch.setattr(fast, "_open_store", open_slowly)
    monkeypatch.setattr(fast, "_now_ms", lambda: clock[0])
    assert fast._enqueue('{"id": "j", "command": "true"}', True) == 0
    [job] = store.jobs
    assert (job["created_at"], job["run_at"]) == (1_000_500, 1_000_500)
    assert json.loads(capsys.readouterr().out) == {"enqueued": 1, "ids": ["j"]}
