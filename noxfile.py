"""Developer sessions: `nox -l` lists them."""

from __future__ import annotations

import os
from pathlib import Path

import nox

nox.options.sessions = ["tests", "lint", "typecheck"]
nox.options.reuse_existing_virtualenvs = True

#: The bundled plugins and the example ones (whose tests run too).
PLUGINS = sorted(str(p) for d in ("plugins", "examples") for p in Path(d).iterdir()
                 if (p / "pyproject.toml").exists())


def _install(session: nox.Session, extra: str) -> None:
    args = [f".[{extra}]"]
    for plugin in PLUGINS:
        args += ["-e", plugin]
    session.install("-e", *args)


@nox.session
def tests(session: nox.Session) -> None:
    """Run the test suite (unit, conformance and integration), in parallel
    as scripts/test.sh does (QUEUECTL_TEST_JOBS processes; 0 = serial)."""
    _install(session, "test")
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    jobs = os.environ.get("QUEUECTL_TEST_JOBS") or str(min((cpus or 1) * 3, 8))
    parallel = [] if jobs == "0" else ["-n", jobs, "--dist", "worksteal"]
    session.run("pytest", *parallel, *session.posargs)


@nox.session
def lint(session: nox.Session) -> None:
    """Check style, complexity and common bugs with ruff, and the structure
    (seam size, module sizes, import circles)."""
    session.install("ruff")
    session.run("ruff", "check", ".")
    session.run("python", "scripts/check_structure.py")


@nox.session
def typecheck(session: nox.Session) -> None:
    """Check types with mypy (strict)."""
    _install(session, "dev")
    session.run("mypy")


#: `nox -s bench -- --quick`: small settings for the scripts that have no --quick.
BENCH_QUICK_ARGS = {
    "bench_cli_startup.py": ["--runs", "10"],
    "bench_json_store.py": ["--finished", "10000", "--ops", "100"],
    "bench_postgres_claim.py": ["--large", "100000", "--ops", "500"],
}


@nox.session(default=False)
def bench(session: nox.Session) -> None:
    """Run every benchmark script in benchmarks/ (each prints its own table).

    `nox -s bench -- --quick` runs each with small settings; other words pick
    scripts by name (`nox -s bench -- drain pickup`). Results and how to read
    them: docs/performance.md. bench_drain.py also runs task-spooler (`tsp`,
    Debian package task-spooler, not installed here) when it is on PATH.
    """
    _install(session, "test")
    session.install("huey")  # bench_drain.py's comparison; imported only there
    quick = "--quick" in session.posargs
    words = [arg for arg in session.posargs if arg != "--quick"]
    for script in sorted(Path("benchmarks").glob("bench_*.py")):
        if words and not any(word in script.name for word in words):
            continue
        args = BENCH_QUICK_ARGS.get(script.name, ["--quick"]) if quick else []
        session.run("python", str(script), *args)
