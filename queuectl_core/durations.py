"""Duration fields of pydantic models (``queuectl.yaml`` sections, plugin
options, the job spec's JSON Schema): a number in the field's own unit, or
a duration string such as ``"30s"`` or ``"1h30m"``, parsed by
``timeutil.parse_duration_ms`` like every duration queuectl reads.

    from queuectl_core.durations import Milliseconds, Seconds

    class MyOptions(BaseModel):
        timeout: Seconds = Field(default=30.0, gt=0)        # 30, 1.5, "2m", "1h30m"
        lock_timeout_ms: Milliseconds = Field(default=5000)  # 5000, "5s"

The field's bounds apply to the number the string stands for; its JSON
Schema says "a number or a duration string". Imported only where pydantic
is (never on the CLI's hot path).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any

from pydantic import BeforeValidator, Field, GetJsonSchemaHandler
from pydantic.json_schema import JsonSchemaValue
from pydantic_core import CoreSchema

from .errors import UsageError
from .timeutil import duration_value

#: What a duration string looks like, for JSON Schemas (the parser is
#: stricter: units from the largest down, each once).
DURATION_PATTERN = r"^\s*([0-9]+(\.[0-9]+)?\s*(ms|s|m|h|d|w)?\s*)+$"


def duration_string_schema(unit: str) -> dict[str, Any]:
    """The JSON Schema of a duration given as a string."""
    return {"type": "string", "pattern": DURATION_PATTERN,
            "description": f"a duration, e.g. 30s, 5m, 1h30m (a bare number: {unit})"}


def to_unit(unit: str) -> Callable[[Any], Any]:
    """A before-validator: a string becomes a number of ``unit`` (ValueError
    with the parser's message if it is no duration); anything else is left
    for the field's own type and bounds to check."""

    def convert(value: Any) -> Any:
        if type(value) is not str:
            return value
        try:
            return duration_value(value, unit)
        except UsageError as exc:
            raise ValueError(str(exc)) from None

    return convert


class _OrDurationString:
    """The field's JSON Schema (a number, with its bounds) or a duration string."""

    def __init__(self, unit: str) -> None:
        self.unit = unit

    def __get_pydantic_json_schema__(self, core_schema: CoreSchema,
                                     handler: GetJsonSchemaHandler) -> JsonSchemaValue:
        return {"anyOf": [handler(core_schema), duration_string_schema(self.unit)]}


def seconds(**bounds: Any) -> Any:
    """:data:`Seconds` with its bounds (``gt=0``, ``le=...``) inside, for a
    field that may also be None (``seconds(gt=0) | None``): the bounds then
    show in the JSON Schema of the number."""
    return Annotated[float, Field(**bounds), BeforeValidator(to_unit("s")),
                     _OrDurationString("s")]


#: Seconds, fractions allowed: 30, 1.5, "90s", "1h30m".
Seconds = Annotated[float, BeforeValidator(to_unit("s")), _OrDurationString("s")]
#: Whole seconds: 5, "2m".
WholeSeconds = Annotated[int, BeforeValidator(to_unit("s")), _OrDurationString("s")]
#: Whole milliseconds: 30000, "30s", "1.5s".
Milliseconds = Annotated[int, BeforeValidator(to_unit("ms")), _OrDurationString("ms")]
