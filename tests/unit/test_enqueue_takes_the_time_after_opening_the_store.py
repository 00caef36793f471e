"""``enqueue`` stamps a job's time once its store is open.

Opening the store may take long (PostgreSQL: importing psycopg and
connecting, about 100 ms), and the job exists only from its insert on, so
``created_at`` (and ``run_at`` when none is given) must not include that
wait. One implementation serves the full CLI and the start-up cache
(``commands.enqueue``), so this holds for both."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from queuectl_core import commands, timeutil
from queuectl_core.app import App
from queuectl_core.config import AppConfig
from queuectl_core.registry import BackendSpec, PluginContext
from queuectl_core.storage import Storage
from queuectl_core.testing import MemoryStorage


def test_the_job_time_is_taken_after_the_store_opened(tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch,
                                                       capsys: pytest.CaptureFixture[str]
                                                       ) -> None:
    clock = [1_000_000]
    store = MemoryStorage()

    def open_slowly(options: Any, context: PluginContext) -> Storage:
        clock[0] += 500  # the opening takes 500 ms
        return store

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(timeutil, "now_ms", lambda: clock[0])
    config = AppConfig(home=tmp_path, config_path=None, backend="slow")
    app = App(config, backend=BackendSpec(name="slow", factory=open_slowly), listeners=False)
    commands.enqueue(app, commands.spec_from_json('{"id": "j", "command": "true"}'),
                     as_json=True)
    [job] = store.list_jobs()
    assert (job.created_at, job.run_at) == (1_000_500, 1_000_500)
    assert json.loads(capsys.readouterr().out) == {"enqueued": 1, "ids": ["j"]}
