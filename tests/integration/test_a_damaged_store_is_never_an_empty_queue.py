"""A store that held jobs and lost them to damage is refused, naming the
file, never taken for a new empty queue (issue 20 item 5): the JSON journal
removed or emptied (it is created with its first line before its snapshot,
which says so), the SQLite file emptied or removed (``queue.db-created``
marks that it held a queue)."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest

from .conftest import Queue, one_error


def truncate(path: Path) -> None:
    os.truncate(path, 0)


DAMAGE: dict[str, tuple[str, Callable[[Path], None]]] = {
    "json journal removed": ("json/journal-1.jsonl", Path.unlink),
    "json journal emptied": ("json/journal-1.jsonl", truncate),
    "sqlite file emptied": ("queue.db", truncate),
    "sqlite file removed": ("queue.db", Path.unlink),
}


@pytest.mark.backends("sqlite")
@pytest.mark.parametrize("damage", DAMAGE)
def test_a_store_that_lost_its_jobs_is_refused(queue: Queue, damage: str) -> None:
    name, harm = DAMAGE[damage]
    backend = name.partition("/")[0] if "/" in name else "sqlite"
    queue.env["QUEUECTL_BACKEND"] = backend
    queue.enqueue_many([{"id": f"j{i}", "command": "true"} for i in range(10)])
    assert queue.status()["pending"] == 10
    path = queue.home / name
    assert path.is_file()
    harm(path)
    for args in (["status"], ["list"], ["enqueue", '{"command": "true"}']):
        one_error(queue.run(*args, check=False), 1, str(path))
