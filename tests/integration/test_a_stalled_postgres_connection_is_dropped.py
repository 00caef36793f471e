"""A PostgreSQL connection that goes silent (a proxy that stops forwarding,
a frozen VM) is given up within a bounded time: a store call fails with a
clear error, ``enqueue`` exits instead of hanging, and a worker that cannot
renew its lease stops its command before the lease ends, so the job never
runs twice at once. The stall comes from a proxy of our own on loopback
(tests/stall_proxy.py) that keeps every connection open and forwards nothing."""

from __future__ import annotations

import json
import subprocess
import threading
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from tests.stall_proxy import StallProxy

from .conftest import QUEUECTL, Queue, postgres_dsn, wait_until

pytestmark = [pytest.mark.backends("postgres"), pytest.mark.slow]


def proxied(dsn: str, port: int) -> str:
    parts = urlsplit(dsn)
    return parts._replace(netloc=f"{parts.hostname}:{port}").geturl()


@pytest.fixture
def proxy() -> Any:
    parts = urlsplit(postgres_dsn())
    with StallProxy((parts.hostname or "127.0.0.1", parts.port or 5432)) as p:
        yield p


def bounded(queue: Queue, seconds: int) -> None:
    """The queue's YAML with short PostgreSQL timeouts."""
    (queue.home / "queuectl.yaml").write_text(
        f"backends:\n  postgres:\n    schema: {queue.pg_schema}\n"
        f"    call_timeout_s: {seconds}\n    connect_timeout_s: {seconds}\n")


def test_a_call_on_a_silent_server_fails_within_its_deadline(queue: Queue,
                                                              proxy: StallProxy) -> None:
    from queuectl_core.errors import TransientStorageError
    from queuectl_postgres.store import PostgresStorage

    assert queue.pg_schema is not None
    store = PostgresStorage(proxied(postgres_dsn(), proxy.port), schema=queue.pg_schema,
                            call_timeout_s=2)
    outcome: list[BaseException | object] = []

    def call() -> None:
        try:
            outcome.append(store.get("nothing-here"))
        except BaseException as exc:
            outcome.append(exc)

    try:
        assert store.get("nothing-here") is None
        proxy.pause()
        started = time.monotonic()
        thread = threading.Thread(target=call, daemon=True)
        thread.start()
        thread.join(15)
        took = time.monotonic() - started
        assert not thread.is_alive(), "a call on a silent server hung for 15 s"
        [error] = outcome
        assert isinstance(error, TransientStorageError), error
        assert "gave no answer within 2 s" in str(error), error
        assert 1.9 <= took < 6, took
        proxy.resume()
        assert store.get("nothing-here") is None, "the next call reconnects"
    finally:
        proxy.resume()
        store.close()


def test_enqueue_gives_up_on_a_silent_server_and_stores_nothing(queue: Queue,
                                                                proxy: StallProxy) -> None:
    bounded(queue, 2)
    queue.env["QUEUECTL_POSTGRES_DSN"] = proxied(postgres_dsn(), proxy.port)
    proc = subprocess.Popen([str(QUEUECTL), "enqueue", "--file", "-"], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=queue.env,
                            cwd=queue.workdir, start_new_session=True)
    queue.popens.append(proc)
    lines = "".join(json.dumps({"id": f"j{i}", "command": "true"}) + "\n" for i in range(100))
    wait_until(lambda: proxy.bytes_forwarded > 0, 10)
    proxy.pause()
    started = time.monotonic()
    out, err = proc.communicate(lines.encode(), timeout=30)
    took = time.monotonic() - started
    assert proc.returncode == 1, (out, err)
    assert "gave no answer within 2 s" in err.decode() and len(err.splitlines()) == 1, err
    assert took < 15, took
    proxy.resume()
    assert queue.jobs() == [], "nothing was stored"


def test_a_worker_cut_off_from_the_store_stops_its_job_before_the_lease_ends(
        queue: Queue, proxy: StallProxy, tmp_path: Path) -> None:
    from .test_postgres_cluster import second_machine

    marks = tmp_path / "marks"
    marks.mkdir()
    queue.fast(lease_seconds=6)
    queue.env["QUEUECTL_POSTGRES_DSN"] = proxied(postgres_dsn(), proxy.port)
    # The first run holds a lock for 30 s; a second run that starts while
    # the first still runs cannot take it and says so.
    command = (f"flock -n {marks}/lock sh -c 'echo run >> {marks}/runs; "
               f"[ $(wc -l < {marks}/runs) -gt 1 ] || sleep 30' "
               f"|| echo overlap >> {marks}/overlaps")
    queue.start_workers(1)
    queue.enqueue({"id": "long", "command": command})
    runs = marks / "runs"
    queue.wait_until(lambda: runs.exists(), 20, "the first run to start")
    proxy.pause()
    other = second_machine(queue, tmp_path)
    try:
        other.start_workers(1)
        other.wait_until(lambda: len(runs.read_text().splitlines()) >= 2, 40,
                         "the other machine to run the job again")
        other.wait_state("long", "completed", timeout=20)
        assert not (marks / "overlaps").exists(), "two runs of the job overlapped"
        log = (queue.home / "logs" / "workers.log").read_text()
        assert "before it ends" in log, log[-2000:]
        proxy.resume()
        job = json.loads(queue.run("show", "long", "--json").stdout)
        assert job["state"] == "completed"
    finally:
        proxy.resume()
        other.cleanup()
