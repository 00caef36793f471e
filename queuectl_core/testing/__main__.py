"""``python -m queuectl_core.testing BACKEND [-o KEY=VALUE]... [--namespace-option KEY]
[PYTEST ARGS]``: the conformance kit against an installed backend (see
:mod:`queuectl_core.testing.installed`)."""

from __future__ import annotations

import argparse
import subprocess
import sys


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m queuectl_core.testing",
        description="Run queuectl's conformance kit against an installed storage backend. "
                    "Arguments after the known ones go to pytest (e.g. -x, -k NAME).")
    parser.add_argument("backend", help="the backend's name, as --backend takes it")
    parser.add_argument("-o", "--option", action="append", default=[], metavar="KEY=VALUE",
                        help="an option of the backend (a YAML value); repeat for more")
    parser.add_argument("--namespace-option", metavar="KEY",
                        help="the option that keeps stores apart on a server (a key "
                             "prefix, a schema): set to a name unique to each test")
    args, rest = parser.parse_known_args(argv)
    pytest_args = ["-p", "queuectl_core.testing", "--pyargs", "queuectl_core.testing.installed",
                   "--queuectl-backend", args.backend]
    for pair in args.option:
        pytest_args += ["--queuectl-option", pair]
    if args.namespace_option:
        pytest_args += ["--queuectl-namespace-option", args.namespace_option]
    # A new interpreter: this one imported the kit before pytest could
    # register it for assertion rewriting.
    return subprocess.call([sys.executable, "-m", "pytest", *pytest_args, *rest])


if __name__ == "__main__":
    sys.exit(main())
