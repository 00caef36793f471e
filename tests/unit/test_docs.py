"""Docs and hooks stay in step: every hookspec is documented with its
exact signature, and every documented hook exists."""

from __future__ import annotations

import inspect
import re
from pathlib import Path

from queuectl_core import hookspecs

DOC = Path(__file__).resolve().parents[2] / "docs" / "writing-plugins.md"


def _signatures() -> dict[str, str]:
    found = {}
    for name, fn in inspect.getmembers(hookspecs, inspect.isfunction):
        if name.startswith("queuectl_"):
            sig = str(inspect.signature(fn)).replace("'", "")
            found[name] = f"def {name}{sig}"
    return found


def test_every_hook_is_documented_with_its_signature() -> None:
    text = DOC.read_text()
    for signature in _signatures().values():
        assert signature in text, f"{DOC.name} lacks `{signature}`"


def test_every_documented_hook_exists() -> None:
    documented = set(re.findall(r"def (queuectl_\w+)\(", DOC.read_text()))
    assert documented <= set(_signatures()), documented - set(_signatures())


def test_every_hookspec_has_a_docstring() -> None:
    for name, fn in inspect.getmembers(hookspecs, inspect.isfunction):
        if name.startswith("queuectl_"):
            assert fn.__doc__ and len(fn.__doc__.strip()) > 40, name
