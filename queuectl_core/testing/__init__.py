"""Test kit for backend authors. See docs/writing-plugins.md.

    from queuectl_core.testing import StorageConformance

    class TestMyStore(StorageConformance):
        def open_storage(self, home):          # return a Storage in ``home``
            return MyStore(home / "data")

Importing it registers no fixtures or tests of its own. Under pytest, the
kit's modules are registered for assertion rewriting before they are
imported, so a failing kit test shows the values it compared.

It is also a pytest plugin that runs the whole kit against an installed
backend with no test code at all (``python -m queuectl_core.testing`` is
the short form)::

    pytest -p queuectl_core.testing --pyargs queuectl_core.testing.installed \\
        --queuectl-backend redis --queuectl-option url=redis://127.0.0.1:6379/0 \\
        --queuectl-namespace-option prefix
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

# Before the kit's modules are imported: afterwards it would be too late.
pytest.register_assert_rewrite(
    "queuectl_core.testing.kit", "queuectl_core.testing.kit_seam",
    "queuectl_core.testing.kit_claims", "queuectl_core.testing.kit_operations",
    "queuectl_core.testing.kit_limits", "queuectl_core.testing.kit_graph",
    "queuectl_core.testing.installed")

from .conformance import StorageConformance  # noqa: E402
from .memory import MemoryStorage  # noqa: E402

if TYPE_CHECKING:
    from typing import Any

    from _pytest.config.argparsing import Parser

__all__ = ["MemoryStorage", "StorageConformance"]


def pytest_addoption(parser: Parser) -> None:
    """The options of ``queuectl_core.testing.installed`` (when this module
    is loaded as a plugin: ``pytest -p queuectl_core.testing``)."""
    group = parser.getgroup("queuectl", "queuectl conformance kit")
    group.addoption("--queuectl-backend", metavar="NAME",
                    help="run the kit against this installed storage backend")
    group.addoption("--queuectl-option", metavar="KEY=VALUE", action="append", default=[],
                    help="an option of the backend, as in its YAML section (a YAML "
                         "value); repeat for more")
    group.addoption("--queuectl-namespace-option", metavar="KEY",
                    help="the backend option that keeps stores apart (a key prefix, "
                         "a schema): set to a name unique to each test and each run")


def pytest_configure(config: pytest.Config) -> None:
    """Check the backend and its options once, before any test runs: a
    mistake is one usage error, not an error in every test."""
    if config.getoption("queuectl_backend", None):
        from .installed import selected_backend

        selected_backend(config)


def pytest_terminal_summary(terminalreporter: Any, exitstatus: int, config: pytest.Config) -> None:
    """Say where the runner left each test's data on a server."""
    option = config.getoption("queuectl_namespace_option", None)
    if config.getoption("queuectl_backend", None) and option:
        terminalreporter.write_line(
            f"queuectl kit: each test kept its data under option {option!r} = 'qk_' and 20 "
            "hex digits; the runner cannot delete them from your server: drop them, or use "
            "a scratch database")
