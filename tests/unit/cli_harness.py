"""The real ``queuectl`` command line run in this process against one
in-memory store: every command goes through ``main()``, so exit codes and
the one-line errors are the real ones. Used through the ``cli`` fixture
(registered in conftest.py)."""

from __future__ import annotations

import io
import json
import os
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from queuectl_core.app import App
from queuectl_core.cli import main as cli_main
from queuectl_core.config import resolve_config
from queuectl_core.joblogs import job_log_dir
from queuectl_core.ledger import Ledger
from queuectl_core.models import Claim, Job
from queuectl_core.testing import MemoryStorage
from queuectl_core.timeutil import now_ms


@dataclass
class Result:
    code: int
    out: str
    err: str

    def json(self) -> Any:
        return json.loads(self.out)


class Cli:
    """``queuectl`` in this process, on one in-memory store."""

    def __init__(self, home: Path, capsys: pytest.CaptureFixture[str],
                 monkeypatch: pytest.MonkeyPatch) -> None:
        self.home = home
        self.store = Ledger(MemoryStorage())
        self.capsys = capsys
        self.monkeypatch = monkeypatch
        store = self.store

        def app(state: cli_main.State) -> App:
            if state._app is None:
                built = App(resolve_config(home=str(home), config=None, backend=None))
                built.__dict__["ledger"] = store
                state._app = built
            return state._app

        monkeypatch.setattr(cli_main.State, "app", app)

    def __call__(self, *args: str, stdin: str | None = None) -> Result:
        self.capsys.readouterr()
        if stdin is not None:
            self.monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(stdin.encode())))
        try:
            cli_main.main(list(args))
        except SystemExit as exc:
            code = exc.code
        else:  # pragma: no cover - main always exits
            code = 0
        captured = self.capsys.readouterr()
        assert isinstance(code, int)
        assert "Traceback" not in captured.err, captured.err
        return Result(code, captured.out, captured.err)

    def ok(self, *args: str, stdin: str | None = None) -> Result:
        res = self(*args, stdin=stdin)
        assert res.code == 0, res
        return res

    # helpers that play the worker's part
    def add(self, job_id: str, command: str = "true", **fields: Any) -> None:
        now = now_ms()
        self.store.enqueue([Job.new(id=job_id, command=command,
                                    max_retries=fields.pop("max_retries", 3), run_at=now,
                                    created_at=now, **fields)])

    def claim(self, worker_id: str = "elsewhere:1:abc", queue: str | None = None) -> Claim:
        claim = self.store.claim(worker_id, now_ms(), 60_000,
                                 None if queue is None else [queue])
        assert claim is not None
        return claim

    def log_dir(self, job_id: str) -> Path:
        d = job_log_dir(self.home / "logs" / "jobs", job_id)
        d.mkdir(parents=True, exist_ok=True)
        return d


@pytest.fixture
def cli(tmp_path: Path, capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> Iterator[Cli]:
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    for key in list(os.environ):
        if key.startswith("QUEUECTL_"):
            monkeypatch.delenv(key)
    yield Cli(tmp_path / "home", capsys, monkeypatch)


def one_error_line(res: Result, code: int, *words: str) -> None:
    assert res.code == code, res
    lines = res.err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), res.err
    for word in words:
        assert word in lines[0], (word, lines[0])
    assert not res.out, res.out

