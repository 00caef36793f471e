"""What the start-up cache remembers of a backend's YAML options: a snapshot
of the validated values when the backend's record says its factory takes
one (``snapshot_options``), else nothing, so that calls go the full way."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel, ConfigDict

from queuectl_core import hookimpl
from queuectl_core.app import App
from queuectl_core.cli import cache
from queuectl_core.config import resolve_config
from queuectl_core.plugins import build_plugins
from queuectl_core.registry import BackendSpec, OptionsSnapshot, PluginContext
from queuectl_core.testing import MemoryStorage


class Options(BaseModel):
    model_config = ConfigDict(extra="forbid")
    size: int = 1
    label: str = "x"


def open_memory(options: Any, context: PluginContext) -> MemoryStorage:
    return MemoryStorage()


class Registers:
    """A plugin that registers one backend record."""

    def __init__(self, spec: BackendSpec) -> None:
        self.spec = spec

    @hookimpl
    def queuectl_storage_backends(self) -> list[BackendSpec]:
        return [self.spec]


def remembered(tmp_path: Path, spec: BackendSpec) -> dict[str, Any]:
    (tmp_path / "queuectl.yaml").write_text(
        "backend: mem\nbackends:\n  mem:\n    size: 3\n")
    config = resolve_config(home=str(tmp_path), config=None, backend=None)
    plugins = build_plugins(entry_points=False)
    plugins.register(Registers(spec), "mem", distribution="test")
    app = App(config, plugins)
    assert app.backend.name == "mem"
    cache.remember(app)
    data: dict[str, Any] = json.loads((tmp_path / "cache" / cache.CACHE_FILE).read_text())
    return data


def spec(**fields: Any) -> BackendSpec:
    return BackendSpec(name="mem", factory=open_memory, options_model=Options, **fields)


def test_a_snapshot_is_remembered_when_the_backend_takes_one(tmp_path: Path) -> None:
    data = remembered(tmp_path, spec(snapshot_options=True))
    assert data["options"] == {"size": 3, "label": "x"}
    assert data["factory"] == f"{__name__}:open_memory"


def test_without_snapshots_options_send_the_call_the_full_way(tmp_path: Path) -> None:
    data = remembered(tmp_path, spec())
    assert data["options"] is None
    assert data["factory"] is None


def test_a_snapshot_reads_like_the_model_and_cannot_change() -> None:
    snapshot = OptionsSnapshot(Options(size=3).model_dump())
    assert (snapshot.size, snapshot.label) == (3, "x")
    with pytest.raises(AttributeError, match="no field 'colour'"):
        _ = snapshot.colour
    with pytest.raises(AttributeError, match="read-only"):
        snapshot.size = 4
    assert snapshot == OptionsSnapshot({"label": "x", "size": 3})
