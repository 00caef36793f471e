"""Notifiers configured in YAML, through the real CLI: the built-in
``command`` notifier for events other than ``dead`` (the CLI's own events
included, start-up cache or not), and mistakes in the ``notifiers``
section named in one line before anything runs."""

from __future__ import annotations

import json

import pytest

from .conftest import Queue, one_error


@pytest.mark.backends("sqlite")
def test_the_command_notifier_gets_the_events_it_asks_for(queue: Queue) -> None:
    """``enqueued`` happens in the CLI (twice: the second call may come from
    the start-up cache), ``claimed`` and ``completed`` in a worker; only the
    events named run the command, each with its event on stdin."""
    queue.home.mkdir()
    events = queue.home / "events.jsonl"
    (queue.home / "queuectl.yaml").write_text(
        "notifiers:\n  command:\n"
        f"    command: 'cat >> {events}; echo >> {events}'\n"
        "    events: [enqueued, completed]\n")
    queue.enqueue({"id": "first", "command": "true"})
    queue.enqueue({"id": "second", "command": "true"})
    queue.start_workers(1)

    def seen() -> list[tuple[str, str]] | None:
        lines = events.read_text().splitlines() if events.exists() else []
        got = sorted((e["event"], e["job"]["id"]) for e in map(json.loads, filter(None, lines)))
        return got if len(got) == 4 else None

    assert queue.wait_until(seen, 20, "four events") == [
        ("completed", "first"), ("completed", "second"),
        ("enqueued", "first"), ("enqueued", "second")]
    queue.stop_workers()


@pytest.mark.backends("sqlite")
@pytest.mark.parametrize(("yaml_text", "code", "words"), [
    pytest.param("notifiers:\n  nosuch: {}\n", 1, ["unknown notifier 'nosuch'", "command"],
                 id="unknown-notifier"),
    pytest.param("notifiers:\n  command: {command: 'true', colour: blue}\n", 2,
                 ["notifier 'command'", "colour: unknown field"], id="unknown-option"),
    pytest.param("notifiers:\n  command: {}\n", 1, ["notifier 'command'", "give it a command"],
                 id="no-command"),
    pytest.param("dlq: {command: 'true'}\nnotifiers:\n  command: {command: 'true'}\n", 2,
                 ["dlq.command and notifiers.command"], id="configured-twice"),
])
def test_a_bad_notifiers_section_is_one_error_for_every_command(
        queue: Queue, yaml_text: str, code: int, words: list[str]) -> None:
    queue.home.mkdir()
    (queue.home / "queuectl.yaml").write_text(yaml_text)
    for args in (["status"], ["list"], ["enqueue", '{"command":"true"}'], ["worker", "start"]):
        one_error(queue.run(*args, check=False), code, *words)
    (queue.home / "queuectl.yaml").unlink()
    assert queue.jobs() == []
