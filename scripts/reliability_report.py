#!/usr/bin/env python3
"""Render the crash suite's result rows into docs/reliability.md.

The crash suite (``pytest -m crash tests/crash``) appends one JSON line per
scenario and backend to ``$QUEUECTL_RELIABILITY_OUT``, by default
``tests/crash/.last-run.jsonl``. This script takes the newest row for each
(scenario, backend) in that file and writes a Markdown table, with the date
of the run and the machine it ran on, between the markers
``<!-- results:start -->`` and ``<!-- results:end -->`` of the document.

    python scripts/reliability_report.py                  # update docs/reliability.md
    python scripts/reliability_report.py results.jsonl    # from another file
    python scripts/reliability_report.py --stdout         # print, change nothing
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_RESULTS = ROOT / "tests" / "crash" / ".last-run.jsonl"
DEFAULT_DOC = ROOT / "docs" / "reliability.md"
START = "<!-- results:start -->"
END = "<!-- results:end -->"
BACKEND_ORDER = {"sqlite": 0, "json": 1, "postgres": 2}

Row = dict[str, Any]


def default_results() -> Path:
    out = os.environ.get("QUEUECTL_RELIABILITY_OUT")
    return Path(out) if out else DEFAULT_RESULTS


def read_rows(path: Path) -> list[Row]:
    """Every row of the JSON-lines file, in file order; a line that does not
    parse (say, cut short by a killed run) is reported and skipped."""
    rows: list[Row] = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except ValueError as exc:
            print(f"{path}:{number}: skipped, not JSON ({exc})", file=sys.stderr)
            continue
        if isinstance(row, dict) and "scenario" in row and "backend" in row:
            rows.append(row)
    return rows


def latest(rows: list[Row]) -> list[Row]:
    """The newest row per (scenario, backend), sorted by scenario then backend."""
    newest: dict[tuple[str, str], Row] = {}
    for row in rows:  # later lines win
        newest[(str(row["scenario"]), str(row["backend"]))] = row
    return sorted(newest.values(), key=lambda r: (
        str(r["scenario"]), BACKEND_ORDER.get(str(r["backend"]), 9), str(r["backend"])))


def cell(value: Any) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:.2f}" if value < 10 else f"{value:.1f}"
    return str(value).replace("|", "\\|")


def result(row: Row) -> str:
    outcome = str(row.get("outcome", "?"))
    return {"passed": "pass", "failed": "**FAIL**", "skipped": "skipped"}.get(outcome, outcome)


def machine_line(rows: list[Row]) -> str:
    info: dict[str, Any] = {}
    for row in rows:  # the newest row that knows a value wins
        for key, value in (row.get("machine") or {}).items():
            if value is not None:
                info[key] = value
    parts = [
        f"nproc {info.get('nproc', '?')}",
        f"Python {info.get('python', '?')}",
        f"SQLite {info.get('sqlite', '?')}",
        f"PostgreSQL {info.get('postgres') or 'not reachable'}",
    ]
    if info.get("platform"):
        parts.append(str(info["platform"]))
    return ", ".join(parts)


def render(rows: list[Row], source: Path) -> str:
    chosen = latest(rows)
    if not chosen:
        return "No results yet: run `pytest -m crash tests/crash`.\n"
    dates = sorted(str(r.get("started_at", "?")) for r in chosen)
    runs = sorted({str(r.get("run_id", "?")) for r in chosen})
    first, last = (d.replace("T", " ").replace("Z", "") for d in (dates[0], dates[-1]))
    when = (f"{first[:16]} to {last[11:16]} UTC" if first[:10] == last[:10]
            else f"{first[:16]} to {last[:16]} UTC")
    total = sum(float(r.get("duration_s") or 0) for r in chosen)
    failed = [r for r in chosen if r.get("outcome") != "passed"]
    lines = [
        f"Run: {when} ({len(runs)} pytest session{'s' if len(runs) != 1 else ''}; "
        f"generated from `{source.name}` by `scripts/reliability_report.py`).",
        "",
        f"Machine: {machine_line(chosen)}.",
        "",
        f"{len(chosen)} rows, {len(chosen) - len(failed)} passed, {len(failed)} failed; "
        f"scenario time {total:.0f} s (test bodies, without pytest start-up and teardown).",
        "",
        "| scenario | backend | result | jobs | kills | lost | run twice | stuck "
        "| longest recovery (s) | duration (s) |",
        "|---|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in chosen:
        lines.append("| " + " | ".join([
            cell(r["scenario"]), cell(r["backend"]), result(r), cell(r.get("jobs")),
            cell(r.get("kills")), cell(r.get("lost")), cell(r.get("run_twice")),
            cell(r.get("stuck")), cell(r.get("longest_recovery_s")),
            cell(r.get("duration_s")),
        ]) + " |")
    lines += ["", "Notes:", ""]
    for r in chosen:
        notes = [str(n) for n in r.get("notes") or []]
        if r.get("error"):
            notes.append(f"failure: {r['error']}")
        if notes:
            lines.append(f"- {r['scenario']}, {r['backend']} (seed {r.get('seed')}): "
                         + "; ".join(notes).replace("|", "\\|"))
    return "\n".join(lines) + "\n"


def replace_section(doc: str, section: str) -> str:
    start, end = doc.find(START), doc.find(END)
    if start < 0 or end < start:
        raise SystemExit(f"error: the document has no {START} ... {END} section")
    return doc[:start + len(START)] + "\n" + section + doc[end:]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("results", nargs="?", type=Path, default=None,
                        help="JSON-lines results (default: $QUEUECTL_RELIABILITY_OUT or "
                             "tests/crash/.last-run.jsonl)")
    parser.add_argument("--doc", type=Path, default=DEFAULT_DOC,
                        help="document to update (default: docs/reliability.md)")
    parser.add_argument("--stdout", action="store_true",
                        help="print the section instead of updating the document")
    args = parser.parse_args(argv)
    source: Path = args.results or default_results()
    if not source.is_file():
        print(f"error: no results file {source}; run `pytest -m crash tests/crash` first",
              file=sys.stderr)
        return 1
    section = render(read_rows(source), source)
    if args.stdout:
        sys.stdout.write(section)
        return 0
    doc_path: Path = args.doc
    updated = replace_section(doc_path.read_text(encoding="utf-8"), section)
    tmp = doc_path.with_name(doc_path.name + ".tmp")
    tmp.write_text(updated, encoding="utf-8")
    tmp.replace(doc_path)
    print(f"updated {doc_path} from {source}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
