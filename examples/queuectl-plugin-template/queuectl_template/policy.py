"""The ``steps`` retry policy: wait ``seconds[0]`` after the first failed
attempt, ``seconds[1]`` after the second, and the last value after every
later one. Selected in YAML::

    retry:
      policy: steps
      options: {seconds: [5, 60, 600]}

or per job, with ``"retry": {"policy": "steps"}`` (the defaults then)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from queuectl_core.registry import PluginContext
from queuectl_core.settings import Settings


class StepsOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")  # a misspelt option is an error

    seconds: list[float] = Field(default=[10.0, 60.0, 300.0], min_length=1)


class StepsPolicy:
    def __init__(self, seconds: list[float]) -> None:
        self.seconds = seconds

    def delay_seconds(self, attempts: int, settings: Settings) -> float:
        """``attempts``: attempts made so far (1 after the first). The core
        caps the delay at ``max_delay`` and applies ``jitter`` afterwards."""
        return self.seconds[min(attempts, len(self.seconds)) - 1]


def make_policy(options: StepsOptions | None, context: PluginContext) -> StepsPolicy:
    """The factory: ``options`` is None when the YAML gives none."""
    return StepsPolicy((options or StepsOptions()).seconds)
