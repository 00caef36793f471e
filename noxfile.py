"""Developer sessions: `nox -l` lists them."""

from __future__ import annotations

from pathlib import Path

import nox

nox.options.sessions = ["tests", "lint", "typecheck"]
nox.options.reuse_existing_virtualenvs = True

PLUGINS = sorted(str(p) for p in Path("plugins").iterdir() if (p / "pyproject.toml").exists())


def _install(session: nox.Session, extra: str) -> None:
    args = [f".[{extra}]"]
    for plugin in PLUGINS:
        args += ["-e", plugin]
    session.install("-e", *args)


@nox.session
def tests(session: nox.Session) -> None:
    """Run the test suite (unit, conformance and integration)."""
    _install(session, "test")
    session.run("pytest", *session.posargs)


@nox.session
def lint(session: nox.Session) -> None:
    """Check style and common bugs with ruff."""
    session.install("ruff")
    session.run("ruff", "check", ".")


@nox.session
def typecheck(session: nox.Session) -> None:
    """Check types with mypy (strict)."""
    _install(session, "dev")
    session.run("mypy")


@nox.session(default=False)
def bench(session: nox.Session) -> None:
    """Run every benchmark script in benchmarks/ (each prints its own table)."""
    _install(session, "test")
    for script in sorted(Path("benchmarks").glob("bench_*.py")):
        session.run("python", str(script), *session.posargs)
