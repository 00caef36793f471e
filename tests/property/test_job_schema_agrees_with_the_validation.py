"""The JSON Schema's model of a job spec (``queuectl schema job``) and the
hand-written validation on the CLI's hot path (``jobspec.spec_problem``)
accept and refuse the same job specs."""

from __future__ import annotations

import json
import subprocess
import sys
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from queuectl_core.jobspec import SPEC_FIELDS, spec_problem
from queuectl_core.schema import job_spec_model

MODEL = job_spec_model()

texts = st.one_of(st.text(max_size=8), st.sampled_from(
    ["", " ", "x", " x", "default", "-bad", ".x", "a.b-c_d", "x\x00y", "\ud800", "q" * 65,
     "linear", "exponential", "2030-01-02T03:04:05Z",
     # durations (timeout, retry.max_delay), good, bad and out of range
     "90s", "1h30m", "1.5s", "0s", "31d", "20000w", "1h30", "30m1h", "soon", "250"]))
numbers = st.one_of(st.integers(-10**10, 10**10), st.floats(allow_nan=True),
                    st.sampled_from([0, 1, 3, 10_000, 10_001, 0.5, 2592000, 2592001]))
scalars = st.one_of(st.none(), st.booleans(), texts, numbers)
values = st.one_of(scalars, st.lists(scalars, max_size=2),
                   st.dictionaries(texts, scalars, max_size=3),
                   st.fixed_dictionaries({}, optional={
                       "policy": texts, "backoff_base": numbers, "max_delay": numbers,
                       "jitter": numbers, "other": scalars}))
specs = st.fixed_dictionaries(
    {"command": st.one_of(texts, scalars)},
    optional={**{key: values for key in SPEC_FIELDS if key != "command"},
              "bogus": scalars})


def model_accepts(spec: dict[str, Any]) -> bool:
    try:
        MODEL.model_validate(spec)
    except ValidationError:
        return False
    return True


@settings(max_examples=800, deadline=None)
@given(specs)
def test_the_model_and_the_hand_validation_agree(spec: dict[str, Any]) -> None:
    if "command" in spec and spec["command"] is None:
        del spec["command"]
    assert model_accepts(spec) == (spec_problem(spec) is None), (spec, spec_problem(spec))


def test_examples_from_the_docs_are_valid() -> None:
    for spec in ({"id": "job1", "command": "echo hi"},
                 {"command": "./render.sh", "queue": "render", "timeout": 7200,
                  "env": {"SCALE": "2"}, "retry": {"policy": "linear", "max_delay": 60}},
                 {"command": "x", "run_at": "2030-01-02T03:04:05Z", "max_retries": 5}):
        assert spec_problem(spec) is None and model_accepts(spec)


def test_queuectl_schema_prints_both_schemas() -> None:
    for kind, title in (("job", "queuectl job"), ("config", "queuectl.yaml")):
        out = subprocess.run([sys.executable, "-m", "queuectl_core.cli.main", "schema", kind],
                             capture_output=True, text=True, check=True).stdout
        schema = json.loads(out)
        assert schema["title"] == title and schema["additionalProperties"] is False
    job = json.loads(subprocess.run([sys.executable, "-m", "queuectl_core.cli.main", "schema",
                                     "job"], capture_output=True, text=True, check=True).stdout)
    assert set(job["properties"]) == set(SPEC_FIELDS) and job["required"] == ["command"]
