"""queuectl on a Redis server: the store against the conformance kit (each
test under a key prefix of its own, the kit's ``namespace``, deleted
afterwards by ``drop_storage``), and the real ``queuectl`` command with the
backend chosen in YAML, as a deployment would.

The server: ``QUEUECTL_TEST_REDIS_URL``, by default the local one. None
reachable: skipped with how to get one, unless ``QUEUECTL_REQUIRE_REDIS=1``
(CI), which makes that a failure."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from queuectl_core.ledger import Ledger
from queuectl_core.storage import Storage
from queuectl_core.testing import StorageConformance
from queuectl_core.testing.conformance import LEASE, OK, T0, new_job
from queuectl_redis.store import RedisStorage

URL = os.environ.get("QUEUECTL_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")


@pytest.fixture(scope="session")
def redis_url() -> str:
    try:
        redis.Redis.from_url(URL, socket_connect_timeout=3).ping()
    except redis.RedisError as exc:
        message = (f"Redis is not reachable at {URL} ({exc}): start one (`redis-server "
                   "--daemonize yes --save ''`) or set QUEUECTL_TEST_REDIS_URL")
        if os.environ.get("QUEUECTL_REQUIRE_REDIS") == "1":
            pytest.fail(message, pytrace=False)
        pytest.skip(message)
    return URL


class TestRedisConformance(StorageConformance):
    @pytest.fixture(autouse=True)
    def _server(self, redis_url: str) -> None:
        self.url = redis_url

    def open_storage(self, home: Path) -> Storage:
        return RedisStorage(self.url, prefix=self.namespace)

    def drop_storage(self, home: Path) -> None:
        client = redis.Redis.from_url(self.url)
        keys = list(client.scan_iter(match=f"{self.namespace}:*", count=1000))
        if keys:
            client.delete(*keys)
        client.close()


#: The queuectl installed beside this Python (the venv under test), else on PATH.
_BESIDE = Path(sys.executable).with_name("queuectl")
QUEUECTL = str(_BESIDE) if _BESIDE.exists() else shutil.which("queuectl") or "queuectl"


class Cli:
    def __init__(self, home: Path) -> None:
        self.env = {**os.environ, "QUEUECTL_HOME": str(home)}

    def __call__(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([QUEUECTL, *args], env=self.env, capture_output=True, text=True,
                              timeout=60)

    def json(self, *args: str) -> Any:
        proc = self(*args, "--json")
        assert proc.returncode == 0, proc.stderr
        return json.loads(proc.stdout)

    def wait(self, what: str, check: Callable[[], bool], timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while not check():
            assert time.monotonic() < deadline, f"timed out waiting for {what}"
            time.sleep(0.05)


@pytest.fixture
def cli(tmp_path: Path, redis_url: str) -> Iterator[Cli]:
    prefix = f"qcli_{uuid.uuid4().hex[:12]}"
    (tmp_path / "queuectl.yaml").write_text(
        f"backend: redis\nbackends:\n  redis:\n    url: {redis_url}\n    prefix: {prefix}\n")
    cli = Cli(tmp_path)
    yield cli
    cli("worker", "stop")
    client = redis.Redis.from_url(redis_url)
    keys = list(client.scan_iter(match=f"{prefix}:*"))
    if keys:
        client.delete(*keys)
    client.close()


def test_workers_run_retry_and_dead_letter_jobs_stored_in_redis(cli: Cli) -> None:
    assert cli("enqueue", '{"id":"ok","command":"echo hello from redis"}').returncode == 0
    assert cli("enqueue", '{"id":"bad","command":"exit 3","max_retries":1}').returncode == 0
    dup = cli("enqueue", '{"id":"ok","command":"true"}')
    assert dup.returncode != 0 and "ok" in dup.stderr
    assert cli("config", "set", "backoff_base", "1").returncode == 0
    started = cli("worker", "start", "--count", "2")
    assert started.returncode == 0, started.stderr

    def settled() -> bool:
        status = cli.json("status")
        return bool(status["completed"] == 1 and status["dead"] == 1)

    cli.wait("one job completed and one dead", settled)
    assert "redis" in cli("status").stdout
    assert cli("logs", "ok").stdout == "hello from redis\n"
    bad = cli.json("show", "bad")
    assert [a["outcome"] for a in bad["attempts_history"]] == ["failed", "failed"]
    assert [j["id"] for j in cli.json("dlq", "list")] == ["bad"]

    assert cli("dlq", "retry", "bad").returncode == 0

    def dead_again() -> bool:
        shown = cli.json("show", "bad")
        return bool(shown["state"] == "dead" and len(shown["attempts_history"]) == 4)

    cli.wait("the retried job dead again", dead_again)
    assert cli("worker", "stop").returncode == 0


def test_an_idle_worker_does_not_wait_for_a_job_held_back_by_its_key(redis_url: str) -> None:
    """``next_run_at`` skips keys at their limit (the seam's default would
    name the held-back job, due now: an idle worker would poll in a loop)."""
    prefix = f"qnext_{uuid.uuid4().hex[:12]}"
    store = Ledger(RedisStorage(redis_url, prefix=prefix))
    try:
        store.enqueue([new_job("k1", concurrency_key="gpu"),
                       new_job("k2", concurrency_key="gpu", run_at=T0 + 5)])
        claim = store.claim("w", T0 + 10, LEASE)
        assert claim is not None and store.next_run_at() is None
        store.complete(claim, OK, T0 + 11)
        assert store.next_run_at() == T0 + 5
    finally:
        store.close()
        client = redis.Redis.from_url(redis_url)
        keys = list(client.scan_iter(match=f"{prefix}:*"))
        if keys:
            client.delete(*keys)
        client.close()
