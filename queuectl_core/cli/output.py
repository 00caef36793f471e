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


#: Escapes of the control characters that have a short one.
_SHORT = {"\n": "\\n", "\t": "\\t", "\r": "\\r", "\x1b": "\\e"}


def _escaped(ch: str) -> str:
    if ch in _SHORT:
        return _SHORT[ch]
    code = ord(ch)
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def printable(text: str, keep: str = "") -> str:
    """``text`` safe to print on a terminal: control and format characters
    (escape sequences, carriage returns, bidirectional overrides) and lone
    surrogates shown as escapes (``\\e``, ``\\x07``, ``\\u202e``), except
    those in ``keep``."""
    if text.isprintable() and not keep:
        return text
    return "".join(ch if ch.isprintable() or ch in keep or _plain_space(ch) else _escaped(ch)
                   for ch in text)


def _plain_space(ch: str) -> bool:
    """A space that moves the cursor by its width only (not a line break)."""
    return ch == " " or (ch.isspace() and ord(ch) >= 0xA0 and ch not in "\u2028\u2029")


def clip(text: str | None, width: int) -> str:
    if not text:
        return "-"
    flat = printable(" ".join(text.split()))
    return flat if len(flat) <= width else flat[: width - 1] + "…"


def table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> None:
    """Columns padded to their widest cell; every cell made printable."""
    rows = [[printable(cell) for cell in row] for row in rows]
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
