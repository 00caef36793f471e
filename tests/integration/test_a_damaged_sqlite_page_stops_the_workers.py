"""A damaged SQLite page stops the workers with a clear message and a
non-zero exit (issue 20 item 10), instead of a crash loop of
``internal error: DatabaseError`` behind a group that looks fine."""

from __future__ import annotations

import sqlite3

import pytest

from .conftest import Queue


@pytest.mark.backends("sqlite")
def test_a_damaged_index_stops_the_group(queue: Queue) -> None:
    queue.enqueue_many([{"id": f"j{i}", "command": "true"} for i in range(30)])
    db = queue.home / "queue.db"
    conn = sqlite3.connect(db)
    [(root,)] = conn.execute(
        "SELECT rootpage FROM sqlite_master WHERE name = 'sqlite_autoindex_jobs_1'").fetchall()
    [(page_size,)] = conn.execute("PRAGMA page_size").fetchall()
    conn.close()
    with db.open("r+b") as fh:  # the index of job ids: one page of garbage
        fh.seek((root - 1) * page_size)
        fh.write(b"\xff" * page_size)
    run = queue.run("worker", "run", "--count", "2", check=False, timeout=60)
    assert run.returncode == 1, run.stderr
    assert f"SQLite database {db} is damaged (database disk image is malformed)" in run.stderr
    assert "the store is damaged; stopping every worker of this group" in run.stderr
    assert "internal error" not in run.stderr
    assert run.stderr.count(" started (pid ") <= 2, "no worker was restarted"
