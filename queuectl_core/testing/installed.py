"""The whole conformance kit against an installed backend, found through
the ``queuectl`` entry points and opened by its factory with the options
given on the command line, as the CLI would open it: a backend author runs
it with no test code of their own.

    python -m queuectl_core.testing redis -o url=redis://127.0.0.1:6379/15 \\
        --namespace-option prefix

which is short for::

    pytest -p queuectl_core.testing --pyargs queuectl_core.testing.installed \\
        --queuectl-backend redis --queuectl-option url=redis://127.0.0.1:6379/15 \\
        --queuectl-namespace-option prefix

``--queuectl-namespace-option KEY`` sets that option to a name unique to
each test (``KitBase.namespace``), so that a store on a server gives each
test a clean store; file stores live in each test's temporary directory
(the factory's ``context.home``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import ValidationError

from ..errors import QueuectlError
from ..models import validation_message
from ..plugins import build_plugins
from ..registry import BackendSpec, PluginContext
from ..storage import Storage
from .conformance import StorageConformance


def backend_options(spec: BackendSpec, raw: dict[str, Any]) -> Any:
    """The options as the backend's model validates them (None for none)."""
    if not raw:
        return None
    model = spec.resolve_options_model()
    if model is None:
        raise pytest.UsageError(f"backend {spec.name!r} takes no options")
    try:
        return model.model_validate(raw)
    except ValidationError as exc:
        raise pytest.UsageError(
            f"options of backend {spec.name!r}: {validation_message(exc)}") from None


def parse_options(pairs: list[str]) -> dict[str, Any]:
    raw: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise pytest.UsageError(f"--queuectl-option {pair!r}: expected KEY=VALUE")
        raw[key] = yaml.safe_load(value) if value else ""
    return raw


class Selected:
    """The backend the command line chose, its options, and the option
    that takes each test's namespace."""

    def __init__(self, spec: BackendSpec, raw: dict[str, Any], namespace_option: str | None):
        self.spec = spec
        self.raw = raw
        self.namespace_option = namespace_option

    def open(self, home: Path, namespace: str) -> Storage:
        raw = dict(self.raw)
        if self.namespace_option:
            raw[self.namespace_option] = namespace
        store: Storage = self.spec.resolve_factory()(backend_options(self.spec, raw),
                                                     PluginContext(home))
        return store


_selected = pytest.StashKey[Selected]()


def selected_backend(config: pytest.Config) -> Selected | None:
    """The backend given by ``--queuectl-backend``, checked once per run
    (a pytest.UsageError names what is wrong), or None."""
    if _selected in config.stash:
        return config.stash[_selected]
    name = config.getoption("queuectl_backend", None)
    if not name:
        return None
    try:
        spec = build_plugins().backend(name)
    except QueuectlError as exc:
        raise pytest.UsageError(str(exc)) from None
    namespace_option = config.getoption("queuectl_namespace_option")
    selected = Selected(spec, parse_options(config.getoption("queuectl_option")),
                        namespace_option)
    raw = dict(selected.raw)
    if namespace_option:
        raw[namespace_option] = "qk_check"
    backend_options(spec, raw)
    config.stash[_selected] = selected
    return selected


class TestInstalledBackend(StorageConformance):
    selected: Selected | None = None

    @pytest.fixture(autouse=True)
    def _selected_backend(self, request: pytest.FixtureRequest) -> None:
        self.selected = selected_backend(request.config)
        if self.selected is None:
            pytest.skip("no backend given: pytest -p queuectl_core.testing "
                        "--queuectl-backend NAME (or python -m queuectl_core.testing NAME)")

    def open_storage(self, home: Path) -> Storage:
        assert self.selected is not None
        return self.selected.open(home, self.namespace)
