"""``list`` shows the newest 100 jobs and says on stderr how many more there
are, so that a big queue prints a screenful and ``--json`` stays clean."""

from __future__ import annotations

import json

from .conftest import Queue


def test_list_shows_the_newest_100_and_counts_the_rest_on_stderr(queue: Queue) -> None:
    queue.enqueue_many([{"id": f"j{i:03}", "command": "true", "queue": "ab"[i % 2]}
                        for i in range(103)])
    shown = queue.run("list")
    rows = shown.stdout.splitlines()[1:]
    assert [r.split()[0] for r in rows] == [f"j{i:03}" for i in range(3, 103)], (
        "the newest 100, in enqueue order")
    assert shown.stderr == ("Note: 3 older jobs are not shown"
                            " (--limit N shows the newest N, --limit 0 all)\n")
    as_json = queue.run("list", "--json", "--limit", "2", "--queue", "a")
    assert [j["id"] for j in json.loads(as_json.stdout)] == ["j100", "j102"]
    assert "50 older jobs are not shown" in as_json.stderr
    everything = queue.run("list", "--json", "--limit", "0")
    assert len(json.loads(everything.stdout)) == 103 and everything.stderr == ""
    exact = queue.run("list", "--limit", "52", "--queue", "a", "--state", "pending")
    assert len(exact.stdout.splitlines()) == 53 and exact.stderr == "", "no note: none left"
