"""``queuectl stats``: per queue over --since, as a table or --json; bad
windows are one error line; commands are printed safely."""

from __future__ import annotations

from queuectl_core.models import ExecResult
from queuectl_core.timeutil import now_ms
from tests.unit.cli_harness import Cli, one_error_line


def test_stats_per_queue_as_a_table_and_as_json(cli: Cli) -> None:
    cli.add("ok", "echo ok", queue="mail")
    cli.add("bad", "printf '\x1b[31mred'; exit 2", max_retries=0)
    done = cli.claim(queue="mail")
    cli.store.complete(done, ExecResult(exit_code=0), now_ms())
    failed = cli.claim(queue="default")
    cli.store.fail(failed, ExecResult(exit_code=2, error="command exited with code 2"),
                   now_ms(), None)
    data = cli.ok("stats", "--json").json()
    rows = {row["queue"]: row for row in data["queues"]}
    assert list(rows) == ["default", "mail", "(all)"]
    assert (rows["mail"]["completed"], rows["default"]["failed"],
            rows["default"]["dead"]) == (1, 1, 1)
    assert rows["(all)"]["error_rate"] == 0.5
    assert data["since"].endswith("Z") and data["sampled"] is False
    table = cli.ok("stats", "--since", "15m").out
    assert table.startswith("Stats of the last 15m00s\nQUEUE ")
    assert "\x1b" not in table and "\\e[31mred" in table, "a command's escapes are shown"
    only = cli.ok("stats", "--queue", "mail", "--json").json()
    assert [row["queue"] for row in only["queues"]] == ["mail", "(all)"]
    one_error_line(cli("stats", "--since", "5"), 2, "--since", "needs a unit")
