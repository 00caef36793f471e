"""Human and JSON output. ``--json`` prints only JSON on stdout."""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from typing import Any

import click


def emit_json(data: Any) -> None:
    sys.stdout.write(json.dumps(data, indent=2, ensure_ascii=False) + "\n")


def short_time(iso_text: str | None) -> str:
    """``2026-11-28T13:15:17.123Z`` -> ``2026-11-28 13:15:17Z``."""
    if not iso_text:
        return "-"
    return iso_text[:10] + " " + iso_text[11:19] + "Z"


def clip(text: str | None, width: int) -> str:
    if not text:
        return "-"
    flat = " ".join(text.split())
    return flat if len(flat) <= width else flat[: width - 1] + "…"


def table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> None:
    widths = [len(h) for h in headers]
    for row in rows:
        for i, cell in enumerate(row):
            widths[i] = max(widths[i], len(cell))
    fmt = "  ".join(f"{{:<{w}}}" for w in widths)
    click.echo(fmt.format(*headers).rstrip())
    for row in rows:
        click.echo(fmt.format(*row).rstrip())


def number(value: float | int) -> str:
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def seconds_text(ms: int | None) -> str:
    """A duration in milliseconds as ``1.234s``; ``-`` for None."""
    return "-" if ms is None else f"{ms / 1000:.3f}s"


def signal_text(num: int) -> str:
    """``15 (SIGTERM)``; an unknown number as is."""
    import signal

    try:
        return f"{num} ({signal.Signals(num).name})"
    except ValueError:
        return str(num)


def note(message: str) -> None:
    """One line for the user on stderr, apart from the command's output."""
    sys.stderr.write(f"Note: {message}\n")
    sys.stderr.flush()


def error_line(message: str) -> None:
    """One ``Error:`` line on stderr, for a command that goes on after it
    (several ids, some of them bad) and exits non-zero at the end."""
    sys.stderr.write(f"Error: {message}\n")
    sys.stderr.flush()
