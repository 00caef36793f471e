from __future__ import annotations

import stat
from pathlib import Path

import pytest

from queuectl_core.config import resolve_config
from queuectl_core.errors import ConfigError


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for var in ("QUEUECTL_HOME", "QUEUECTL_CONFIG", "QUEUECTL_BACKEND"):
        monkeypatch.delenv(var, raising=False)


def test_home_is_created_private(tmp_path: Path) -> None:
    cfg = resolve_config(home=str(tmp_path / "a" / "home"), config=None, backend=None)
    assert cfg.home.is_dir() and stat.S_IMODE(cfg.home.stat().st_mode) == 0o700
    assert cfg.backend == "sqlite" and cfg.config_path is None


def test_default_home_follows_xdg(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path))
    assert resolve_config(home=None, config=None, backend=None).home == tmp_path / "queuectl"


def test_yaml_is_read_and_overridden(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "queuectl.yaml").write_text(
        "backend: json\nbackends:\n  json: {path: x.json}\n  sqlite:\n    path: q.db\n"
        "defaults:\n  max-retries: 7\n")
    cfg = resolve_config(home=str(tmp_path), config=None, backend=None)
    assert cfg.backend == "json" and cfg.defaults == {"max_retries": 7}
    assert cfg.backend_options("sqlite") == {"path": "q.db"}
    monkeypatch.setenv("QUEUECTL_BACKEND", "postgres")
    assert resolve_config(home=str(tmp_path), config=None, backend=None).backend == "postgres"
    assert resolve_config(home=str(tmp_path), config=None, backend="sqlite").backend == "sqlite"


@pytest.mark.parametrize(("text", "message"), [
    ("backend: sqlite\nbakend: x\n", "bakend: unknown field"),
    ("- a\n- b\n", "mapping"),
    ("backend: [unclosed\n", "not valid YAML"),
    ("defaults:\n  max_retries: -1\n", "max_retries"),
    ("defaults:\n  nope: 1\n", "unknown setting"),
    ("retry:\n  polcy: linear\n", "unknown field"),
    ("dlq:\n  command: ''\n", "dlq.command"),
    ("dlq:\n  command: x\n  timeout: 0\n", "dlq.timeout"),
    ("dlq:\n  cmd: x\n", "dlq.cmd: unknown field"),
])
def test_bad_yaml_is_a_config_error(tmp_path: Path, text: str, message: str) -> None:
    (tmp_path / "queuectl.yaml").write_text(text)
    with pytest.raises(ConfigError, match=message) as exc:
        resolve_config(home=str(tmp_path), config=None, backend=None)
    assert "\n" not in str(exc.value)


def test_explicit_config_path(tmp_path: Path) -> None:
    other = tmp_path / "elsewhere.yaml"
    other.write_text("executor: shell\n")
    cfg = resolve_config(home=str(tmp_path / "h"), config=str(other), backend=None)
    assert cfg.config_path == other
    with pytest.raises(ConfigError, match="does not exist"):
        resolve_config(home=str(tmp_path / "h"), config=str(tmp_path / "missing.yaml"),
                       backend=None)


def test_dlq_command_runs_the_builtin_command_notifier(tmp_path: Path) -> None:
    from queuectl_core.app import App
    from queuectl_core.command_notifier import CommandNotifier

    (tmp_path / "queuectl.yaml").write_text("dlq:\n  command: cat > /dev/null\n  timeout: 5\n")
    cfg = resolve_config(home=str(tmp_path), config=None, backend=None)
    assert cfg.file is not None
    assert (cfg.file.dlq.command, cfg.file.dlq.timeout) == ("cat > /dev/null", 5.0)
    app = App(cfg)
    assert app.plugins.has_listeners()
    [notifier] = app.plugins.running_notifiers()
    assert isinstance(notifier, CommandNotifier)
    assert (notifier.command, notifier.timeout, notifier.events) == (
        "cat > /dev/null", 5.0, frozenset({"dead"}))
    assert notifier.log_path == tmp_path / "logs" / "dlq-handler.log"
    bare = App(resolve_config(home=str(tmp_path / "h2"), config=None, backend=None))
    assert bare.plugins.running_notifiers() == [] and not bare.plugins.has_listeners()


def test_retry_policy_by_name_with_yaml_options_only_for_the_configured(tmp_path: Path
                                                                         ) -> None:
    from queuectl_core.app import App
    from queuectl_core.builtin import ConstantBackoff, ExponentialBackoff, LinearBackoff

    (tmp_path / "queuectl.yaml").write_text("retry:\n  policy: linear\n")
    app = App(resolve_config(home=str(tmp_path), config=None, backend=None))
    assert isinstance(app.backoff_policy(), LinearBackoff)
    assert isinstance(app.backoff_policy("constant"), ConstantBackoff)
    assert isinstance(app.backoff_policy("exponential"), ExponentialBackoff)
