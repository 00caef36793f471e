"""What the CLI prints for people never carries a job's control characters
to the terminal (an escape sequence in a command or an error could clear
the screen, recolour it, or reverse the text after it): tables and `show`
print them as escapes, `show` keeps a multi-line command's lines, indented;
--json keeps everything exact. Text that is not UTF-8 gets the same
message wherever it comes from."""

from __future__ import annotations

import json
import os
import subprocess

import pytest

from .conftest import QUEUECTL, Queue, one_error

HOSTILE = 'printf "\x1b[2J\x1b[31mred\r"\n\techo "\u202eevil\x07"\necho done'


def printable_lines(text: str) -> bool:
    """Nothing but printable characters, line breaks and tabs."""
    return all(line.replace("\t", " ").isprintable() for line in text.split("\n"))


@pytest.mark.backends("sqlite")
def test_control_characters_are_escaped_in_tables_and_show(queue: Queue) -> None:
    queue.run("enqueue", "--id", "hostile", "-c", HOSTILE)
    queue.run("enqueue", "--id", "bell", "-c", "exit 3", "--max-retries", "0")
    listed = queue.run("list").stdout
    assert printable_lines(listed), listed
    # Whitespace (lines, tabs, \r) joined into one line, escapes shown, clipped:
    assert 'printf "\\e[2J\\e[31mred " echo "\\u202eev…' in listed

    shown = queue.run("show", "hostile").stdout
    assert printable_lines(shown), shown
    lines = shown.splitlines()
    at = next(i for i, line in enumerate(lines) if line.startswith("  command:"))
    indent = lines[at].index("printf")
    assert lines[at][indent:] == 'printf "\\e[2J\\e[31mred\\r"'
    # The command's own lines, each under the first; a tab stays a tab.
    assert lines[at + 1] == " " * indent + '\techo "\\u202eevil\\x07"'
    assert lines[at + 2] == " " * indent + "echo done"
    assert lines[at + 3].startswith("  state:")

    assert queue.json("show", "hostile")["command"] == HOSTILE  # --json: exact


@pytest.mark.backends("sqlite")
@pytest.mark.parametrize(("argv", "message"), [
    pytest.param([b"enqueue", b"-c", b"echo \xff"],
                 "invalid job: command: not valid UTF-8 (byte 0xff at character 6)",
                 id="flag"),
    pytest.param([b"enqueue", b'{"command": "echo \xc3\x28"}'],
                 "invalid job: command: not valid UTF-8 (byte 0xc3 at character 6)",
                 id="json-argument"),
    pytest.param([b"enqueue", b"-c", b"true", b"--id", b"a\x80b"],
                 "invalid job: id: not valid UTF-8 (byte 0x80 at character 2)", id="id"),
    pytest.param([b"enqueue", b'{"command": "echo \\ud800"}'],
                 "invalid job: command: not valid Unicode text (a lone surrogate \\ud800 at "
                 "character 6)", id="json-escape"),
])
def test_text_that_is_not_utf8_is_named_with_its_byte(queue: Queue, argv: list[bytes],
                                                      message: str) -> None:
    proc = subprocess.run([os.fsencode(QUEUECTL), *argv], capture_output=True, text=True,
                          env=queue.env, cwd=queue.workdir, timeout=60, check=False)
    one_error(proc, 2)
    assert proc.stderr == f"Error: {message}\n"
    assert json.loads(queue.run("list", "--json").stdout) == []
