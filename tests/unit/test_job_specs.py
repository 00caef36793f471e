"""What ``enqueue`` accepts as a job (``queuectl_core.jobspec``): strict
types, one-line errors, defaults filled in when the job is made."""

from __future__ import annotations

import pytest

from queuectl_core.errors import UsageError
from queuectl_core.jobspec import parse_job_spec
from queuectl_core.models import JobState, spec_to_job


def test_defaults_are_filled_in_when_the_job_is_made() -> None:
    job = spec_to_job(parse_job_spec({"command": "echo hi"}), default_max_retries=5, now=1000,
                      base_dir=None)
    assert job.max_retries == 5 and job.run_at == 1000 and job.priority == 0
    assert len(job.id) == 12
    assert (job.state, job.attempts, job.created_at, job.updated_at) == (
        JobState.PENDING, 0, 1000, 1000)
    own = spec_to_job(parse_job_spec({"id": "j", "command": "x", "max_retries": 0,
                                      "run_at": 1_700_000_000_000, "priority": 9}),
                      default_max_retries=5, now=1000, base_dir=None)
    assert (own.id, own.max_retries, own.run_at, own.priority) == ("j", 0, 1_700_000_000_000, 9)


@pytest.mark.parametrize("data", [
    {"command": "x", "max_retries": "3"},
    {"command": "x", "max_retries": 1.5},
    {"command": "x", "max_retries": True},
    {"command": "x", "max_retries": -1},
    {"command": "x", "max_retries": 10**9},
    {"command": "x", "priority": "high"},
    {"command": "x", "run_at": 1.5},
    {"command": "x", "id": 7},
    {"command": "x", "id": ""},
    {"command": "x", "id": " padded"},
    {"command": "x", "id": "line\nbreak"},
    {"command": "x", "id": "x" * 256},
    {"command": ""},
    {"command": "   "},
    {"command": "a\x00b"},
    {"command": ["ls"]},
    {"id": "no-command"},
    {"command": "x", "state": "completed"},
    {"command": "x", "attempts": 0},
])
def test_a_bad_field_is_refused_in_one_line(data: dict[str, object]) -> None:
    with pytest.raises(UsageError) as exc:
        parse_job_spec(data)
    assert "\n" not in str(exc.value)


def test_a_job_must_be_an_object() -> None:
    values: list[object] = [[], "echo", 3, None]
    for value in values:
        with pytest.raises(UsageError):
            parse_job_spec(value)


def test_a_run_at_string_that_is_no_time_is_a_usage_error() -> None:
    spec = parse_job_spec({"command": "x", "run_at": "not a date"})
    with pytest.raises(UsageError):
        spec_to_job(spec, default_max_retries=3, now=1000, base_dir=None)


def test_multiline_and_quoted_commands_are_kept_verbatim() -> None:
    command = "echo \"$HOME\" 'a  b'\nprintf 'ünï\\n'"
    spec = parse_job_spec({"command": command})
    assert spec["command"] == command
    assert spec_to_job(spec, default_max_retries=3, now=1000, base_dir=None).command == command
