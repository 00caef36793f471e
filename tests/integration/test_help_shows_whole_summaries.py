"""Every command list in --help shows each command's summary whole: click
cuts a first sentence that does not fit with "...", which hid what `dlq
purge` and `dlq show` do."""

from __future__ import annotations

import subprocess

import pytest

from .conftest import QUEUECTL, Queue


@pytest.mark.backends("sqlite")
def test_no_command_summary_is_cut(queue: Queue) -> None:
    for group in ([], ["worker"], ["dlq"], ["config"]):
        out = subprocess.run([str(QUEUECTL), *group, "--help"], capture_output=True,
                             text=True, env=queue.env, timeout=60, check=True).stdout
        commands = out.split("Commands:\n", 1)[1].splitlines()
        cut = [line for line in commands if line.rstrip().endswith(("...", "…"))]
        assert not cut, (group, cut)
