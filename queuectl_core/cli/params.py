"""Option types shared by the commands: durations, parsed the one way the
job JSON and the YAML file parse them (``timeutil.parse_duration_ms``)."""

from __future__ import annotations

from typing import Any

import click

from ..errors import UsageError


class Duration(click.ParamType):  # type: ignore[type-arg]  # generic from click 8.2
    """A duration option (``30s``, ``5m``, ``1h30m``, ``1.5s``...), as whole
    milliseconds. A bare number means ``bare`` (seconds unless told), or is
    refused when ``bare`` is None. A bad value is one ``Error:`` line naming
    the option (exit 2), like every other invalid input."""

    name = "duration"

    def __init__(self, bare: str | None = "s") -> None:
        self.bare = bare

    def convert(self, value: Any, param: click.Parameter | None,
                ctx: click.Context | None) -> int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value  # already converted
        from ..timeutil import parse_duration_ms

        try:
            return parse_duration_ms(str(value), bare=self.bare)
        except UsageError as exc:
            opts = param.opts if param is not None else []
            name = max(opts, key=len) if opts else "duration"
            raise UsageError(f"{name}: {exc}") from None


#: Seconds when bare (timeouts and delays, as documented).
DURATION = Duration()
#: A unit is required (``purge --older-than``: a bare 7 is not 7 seconds).
DURATION_WITH_UNIT = Duration(bare=None)
