"""Plugin discovery against real (fake) installed distributions: a
``*.dist-info`` directory with an ``entry_points.txt`` on sys.path."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from queuectl_core import hookimpl
from queuectl_core.errors import PluginError
from queuectl_core.plugins import build_plugins
from queuectl_core.registry import BackendSpec
from tests.fake_dists import fake_dist

GOOD = """
from queuectl_core import hookimpl
from queuectl_core.registry import BackendSpec

@hookimpl
def queuectl_storage_backends():
    return [BackendSpec(name="Fake_Store", factory=lambda o, c: None, description="fake")]
"""


@pytest.fixture
def site(tmp_path: Path) -> Iterator[Path]:
    sys.path.insert(1, str(tmp_path))  # [0] is the script dir or cwd
    yield tmp_path
    sys.path.remove(str(tmp_path))
    for mod in ("qc_good_plugin", "qc_broken_plugin", "qc_dupe_plugin"):
        sys.modules.pop(mod, None)


def test_good_plugin_loads_and_broken_one_is_skipped(site: Path,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    fake_dist(site, "qc-good", {"good": "qc_good_plugin"}, {"qc_good_plugin": GOOD})
    fake_dist(site, "qc-broken", {"broken": "qc_broken_plugin"},
              {"qc_broken_plugin": "raise ImportError('missing dependency zzz')\n"})
    plugins = build_plugins()
    assert "fake-store" in plugins.backends()
    assert plugins.backend("fake_store").distribution == "qc-good"
    [failure] = plugins.failures
    assert (failure.name, failure.distribution) == ("broken", "qc-broken")
    assert "missing dependency zzz" in failure.error
    err = capsys.readouterr().err
    assert "plugin 'broken'" in err and "skipped" in err
    good = next(p for p in plugins.loaded if p.name == "good")
    assert good.version == "1.2.3" and good.provides == ["backend fake-store"]


def test_misspelled_hook_skips_only_that_plugin(site: Path) -> None:
    fake_dist(site, "qc-good", {"good": "qc_good_plugin"}, {"qc_good_plugin": GOOD})
    fake_dist(site, "qc-typo", {"typo": "qc_broken_plugin"}, {"qc_broken_plugin": """
from queuectl_core import hookimpl

@hookimpl
def queuectl_storage_backend():   # missing the final s
    return []
"""})
    plugins = build_plugins()
    assert [f.name for f in plugins.failures] == ["typo"]
    assert "fake-store" in plugins.backends()


@pytest.mark.parametrize(("returns", "error"), [
    ("BackendSpec(name='one')", "returned a BackendSpec, not a list of BackendSpec records"),
    ("'one'", "returned a str, not a list of BackendSpec records"),
    ("[BackendSpec(name='one'), {'name': 'two'}]", "returned a dict, not a BackendSpec"),
    ("[ExecutorSpec(name='one')]", "returned an ExecutorSpec, not a BackendSpec"),
    ("1 / 0", "ZeroDivisionError: division by zero"),
])
def test_a_hook_that_returns_no_records_is_skipped_whole_and_named(
        site: Path, capsys: pytest.CaptureFixture[str], returns: str, error: str) -> None:
    fake_dist(site, "qc-odd", {"odd": "qc_broken_plugin"}, {"qc_broken_plugin": f"""
from queuectl_core import hookimpl
from queuectl_core.registry import BackendSpec, ExecutorSpec

@hookimpl
def queuectl_storage_backends():
    return {returns}
"""})
    plugins = build_plugins()
    backends = plugins.backends()
    assert "sqlite" in backends and "one" not in backends
    message = f"plugin 'odd' (from qc-odd 1.2.3) failed in queuectl_storage_backends: {error}"
    [failure] = plugins.failures
    assert (failure.hook, failure.error, failure.message) == (
        "queuectl_storage_backends", error, message)
    assert capsys.readouterr().err == f"queuectl: warning: {message}; skipped\n"
    with pytest.raises(PluginError) as info:
        plugins.backend("odd")
    assert str(info.value) == f"backend 'odd' is unavailable: {message}"


def test_disabled_plugins_are_not_loaded(site: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fake_dist(site, "qc-broken", {"broken": "qc_broken_plugin"},
              {"qc_broken_plugin": "raise ImportError('nope')\n"})
    monkeypatch.setenv("QUEUECTL_DISABLE_PLUGINS", "broken")
    assert build_plugins().failures == []


def test_two_plugins_claiming_one_name_is_an_error(site: Path) -> None:
    fake_dist(site, "qc-good", {"good": "qc_good_plugin"}, {"qc_good_plugin": GOOD})
    fake_dist(site, "qc-dupe", {"dupe": "qc_dupe_plugin"}, {"qc_dupe_plugin": GOOD})
    with pytest.raises(PluginError, match=r"qc-good and qc-dupe|qc-dupe and qc-good"):
        build_plugins().backends()


def test_unknown_name_lists_choices() -> None:
    plugins = build_plugins()
    with pytest.raises(PluginError, match=r"choose one of: .*sqlite"):
        plugins.backend("nosuch")
    assert plugins.backend("sqlite").name == "sqlite"
    assert plugins.executor("shell").name == "shell"
    assert plugins.backoff_policy("exponential").name == "exponential"


def test_broadcast_failures_never_propagate(capsys: pytest.CaptureFixture[str]) -> None:
    from queuectl_core.models import Job, JobState

    seen: list[str] = []

    class Listener:
        @hookimpl
        def queuectl_job_event(self, event: str, job: Job) -> None:
            seen.append(event)
            raise RuntimeError("listener bug")

        @hookimpl
        def queuectl_job_dead(self, job: Job) -> None:
            seen.append("dead:" + job.id)

        @hookimpl
        def queuectl_storage_backends(self) -> list[BackendSpec]:
            return []

    plugins = build_plugins(entry_points=False)
    plugins.register(Listener(), "listener")
    job = Job(id="j", command="x", state=JobState.DEAD, max_retries=0, run_at=0,
              created_at=0, updated_at=0)
    plugins.job_event("dead", job)
    plugins.job_dead(job)
    assert seen == ["dead", "dead:j"]
    assert "listener bug" in capsys.readouterr().err


def test_discovery_cache_hits_and_notices_new_distributions(
        site: Path, tmp_path_factory: pytest.TempPathFactory,
        monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    from queuectl_core import plugins as plugins_module

    cache = tmp_path_factory.mktemp("home") / "cache"  # not on sys.path
    first = {ep.name for ep in plugins_module.discover(cache)}
    assert (cache / "plugins.json").exists() and "sqlite" in first

    def no_scan() -> list[plugins_module.EntryPoint]:
        raise AssertionError("scanned although nothing changed")

    monkeypatch.setattr(plugins_module, "_scan", no_scan)
    assert {ep.name for ep in plugins_module.discover(cache)} == first
    monkeypatch.undo()

    # Installing a distribution adds a dist-info directory: its parent's
    # mtime changes and the next discovery sees the new plugin.
    before = os.stat(site).st_mtime_ns
    fake_dist(site, "qc-good", {"good": "qc_good_plugin"}, {"qc_good_plugin": GOOD})
    os.utime(site, ns=(before + 10**9, before + 10**9))
    assert "good" in {ep.name for ep in plugins_module.discover(cache)}
    assert "fake-store" in build_plugins(cache_dir=cache).backends()


def test_unreadable_cache_is_rebuilt(tmp_path: Path) -> None:
    from queuectl_core import plugins as plugins_module

    cache = tmp_path / "cache"
    cache.mkdir()
    (cache / "plugins.json").write_text("{not json")
    assert "sqlite" in {ep.name for ep in plugins_module.discover(cache)}
    assert (cache / "plugins.json").read_text().startswith("{\"key\"")
