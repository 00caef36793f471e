"""``queuectl serve`` refuses, with one line and exit 2, to listen beyond
loopback or allow actions without a token, and refuses tokens that are
short or readable by others; it is found through the plugin command hook."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from queuectl_core.errors import UsageError
from queuectl_web.guard import check_listening, is_loopback, read_token, token_matches


def _serve(home: Path, *args: str, env: dict[str, str] | None = None
           ) -> subprocess.CompletedProcess[str]:
    queuectl = Path(sys.executable).with_name("queuectl")
    return subprocess.run([str(queuectl), "--home", str(home), "serve", *args],
                          capture_output=True, text=True, timeout=60,
                          env={**os.environ, "QUEUECTL_WEB_TOKEN": "", **(env or {})})


def test_serve_refuses_to_listen_beyond_loopback_without_a_token(tmp_path: Path) -> None:
    res = _serve(tmp_path, "--host", "0.0.0.0", "--port", "0")
    assert res.returncode == 2, res
    assert res.stderr.startswith("Error: refusing to listen on 0.0.0.0 without a token"), res


def test_actions_and_loose_token_files_are_refused(tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(UsageError, match="--allow-actions needs a token"):
        check_listening("127.0.0.1", None, True)
    loose = tmp_path / "token"
    loose.write_text("a-long-enough-token-1234\n")
    loose.chmod(0o644)
    with pytest.raises(UsageError, match="other users can read it"):
        read_token(str(loose))


def test_tokens_and_hosts(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert is_loopback("127.0.0.1") and is_loopback("::1") and is_loopback("localhost")
    assert not is_loopback("0.0.0.0") and not is_loopback("example.org")
    check_listening("127.0.0.1", None, False)
    check_listening("0.0.0.0", "t" * 20, True)
    with pytest.raises(UsageError):
        check_listening("192.168.1.4", None, False)
    monkeypatch.setenv("QUEUECTL_WEB_TOKEN", "short")
    with pytest.raises(UsageError, match="at least 16"):
        read_token(None)
    monkeypatch.setenv("QUEUECTL_WEB_TOKEN", " from-the-environment-42 ")
    assert read_token(None) == "from-the-environment-42"
    private = tmp_path / "token"
    private.write_text("from-a-private-file-0042\nignored\n")
    private.chmod(0o600)
    assert read_token(str(private)) == "from-a-private-file-0042"
    assert token_matches("abc", "abc") and not token_matches("abc", "abd")
    assert not token_matches(None, "abc") and not token_matches("abc", None)
