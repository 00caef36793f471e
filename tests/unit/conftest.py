"""Fixtures of the unit tests."""

from tests.unit.cli_harness import cli

__all__ = ["cli"]
