"""``enqueue --file`` of a big file counts the jobs read on stderr when that
is a terminal, and clears the count before its answer."""

from __future__ import annotations

import json
import sys

import pytest

from queuectl_core import commands
from tests.unit.cli_harness import Cli

LINES = "".join(json.dumps({"id": f"j{i}", "command": "true"}) + "\n" for i in range(5))


@pytest.mark.parametrize("terminal", [True, False])
def test_a_big_file_counts_its_jobs_on_a_terminal_only(cli: Cli, monkeypatch: pytest.MonkeyPatch,
                                                      terminal: bool) -> None:
    monkeypatch.setattr(commands, "PROGRESS_EVERY", 2)  # "big": 2 jobs
    monkeypatch.setattr(sys.stderr, "isatty", lambda: terminal)
    result = cli.ok("enqueue", "--file", "-", stdin=LINES)
    assert result.out == "Enqueued 5 jobs.\n"
    assert result.err == ("\r2 jobs read...\r4 jobs read...\r\x1b[K" if terminal else "")
    assert [j.id for j in cli.store.list_jobs()] == [f"j{i}" for i in range(5)]
