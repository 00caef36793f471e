"""``python -m queuectl_core.testing NAME`` runs the whole conformance kit
against an installed backend, opened by its factory with options as YAML
would give them, with no test code; a wrong backend or option is one usage
error before any test runs."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path


def run_kit(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "queuectl_core.testing", *args,
                           "-q", "-p", "no:cacheprovider", "-p", "no:randomly"],
                          cwd=tmp_path, capture_output=True, text=True, timeout=300)


def test_the_kit_passes_on_an_installed_backend_with_its_options(tmp_path: Path) -> None:
    proc = run_kit(tmp_path, "sqlite", "-o", "synchronous=normal", "-o", "busy_timeout_ms=5s",
                   "-k", "claim_order or persist or largest")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert " passed" in proc.stdout and "failed" not in proc.stdout


def test_a_wrong_backend_or_option_is_one_usage_error(tmp_path: Path) -> None:
    unknown = run_kit(tmp_path, "nosuch")
    assert unknown.returncode == 4  # pytest's usage error
    assert "ERROR: unknown backend 'nosuch'; choose one of:" in unknown.stderr
    bad = run_kit(tmp_path, "sqlite", "-o", "colour=blue")
    assert bad.returncode == 4
    assert "ERROR: options of backend 'sqlite': colour: unknown field" in bad.stderr
    malformed = run_kit(tmp_path, "sqlite", "-o", "synchronous")
    assert "ERROR: --queuectl-option 'synchronous': expected KEY=VALUE" in malformed.stderr
