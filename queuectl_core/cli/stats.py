"""``queuectl stats``: throughput, errors, wait and run times per queue
over a window (computed in :mod:`queuectl_core.stats`)."""

from __future__ import annotations

import click

from ..stats import duration_text, gather, table
from ..timeutil import iso, now_ms
from .jobs import json_option, queue_filter_option
from .main import State, pass_state
from .output import clip, emit_json, printable
from .params import DURATION_WITH_UNIT


@click.command()
@click.option("--since", "since_ms", type=DURATION_WITH_UNIT, default="1h", show_default=True,
              metavar="DURATION", help="The window: attempts finished this long ago or later "
              "(e.g. 15m, 1h, 2d).")
@queue_filter_option("Only this queue.")
@json_option
@pass_state
def stats(state: State, since_ms: int, queue_name: str | None, as_json: bool) -> None:
    """Per queue over the last --since: completed, failed, lost and dead
    counts, completed per minute, the error rate, wait time (due to
    started, of completed attempts) and run time at p50/p95/p99, the age of
    the oldest due job, and the commands that fail most.

    Counts are exact; times and failing commands come from the newest
    10,000 attempts of the window.
    """
    if since_ms <= 0:
        raise click.BadParameter("must be more than 0", param_hint="--since")
    now = now_ms()
    result, _ = gather(state.app().ledger.store, now=now, since=now - since_ms,
                       queue=queue_name)
    if as_json:
        emit_json({**result, "since": iso(result["since"]), "now": iso(result["now"])})
        return
    for row in result["queues"]:
        row["queue"] = clip(row["queue"], 16)
        for worst in row["top_failing"]:
            worst["command"] = clip(worst["command"], 100)
    click.echo(printable(table(result, duration_text(since_ms)), keep="\n"), nl=False)
