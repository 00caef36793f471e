"""Schedules (their cadence, next fire times and firings) and a job's
dependencies (parents, children, keys) reach the pages and the JSON API as
``queuectl schedule list/show --json`` and ``queuectl show --json`` give
them; a backend without schedules says so instead of failing."""

from __future__ import annotations

import os
import uuid
from pathlib import Path
from urllib.parse import quote

import pytest
from web_helpers import Client, new_job, queue_app, run_to_the_end

from queuectl_core.app import App
from queuectl_core.models import ExecResult, JobState
from queuectl_core.schedules import manual_fire, parse_spec
from queuectl_core.timeutil import now_ms


def add_schedule(app: App, **spec: object) -> None:
    store = app.ledger.store
    assert store.put_schedule(parse_spec(spec, now=now_ms(), base_dir="/tmp"), None)


def run_schedule_once(app: App, name: str) -> str:
    """What ``queuectl schedule run NAME`` does: one firing, one job."""
    store = app.ledger.store
    found = store.get_schedule(name)
    assert found is not None
    fire = manual_fire(found, now_ms(), default_max_retries=0)
    assert store.fire_schedule(fire)
    return fire.jobs[0].id


def test_schedules_page_and_api_show_cadence_runs_and_firings(app: App, client: Client
                                                              ) -> None:
    add_schedule(app, name="nightly", cron="0 3 * * 1-5", tz="Europe/Paris",
                 command="backup.sh", queue="ops", overlap="queue", catchup="latest")
    add_schedule(app, name="ping", every="30s", command="curl host", paused=True)
    job_id = run_schedule_once(app, "nightly")
    web = client()

    listed = web.get("/api/schedules").json()
    assert [s["name"] for s in listed] == ["nightly", "ping"]
    nightly, ping = listed
    assert (nightly["cron"], nightly["tz"], nightly["queue"], nightly["overlap"],
            nightly["catchup"], nightly["last_job_id"]) == (
        "0 3 * * 1-5", "Europe/Paris", "ops", "queue", "latest", job_id)
    assert (ping["every"], ping["paused"], ping["cadence"]) == ("30s", True, "every 30s")

    page = web.get("/schedules").text
    assert 'data-schedule="nightly"' in page and 'href="/schedule?name=ping"' in page
    link = f'href="/job?id={quote(job_id)}"'
    assert f"{link}>{job_id}</a>" in page
    assert "Europe/Paris" in page and "every 30s" in page

    detail = web.get("/api/schedule", params={"name": "nightly"}).json()
    assert len(detail["next_runs"]) == 5 and detail["next_runs"] == sorted(detail["next_runs"])
    assert [(f["outcome"], f["job_id"]) for f in detail["firings"]] == [("run", job_id)]
    assert web.get("/api/schedule", params={"name": "ping"}).json()["next_runs"] == []
    shown = web.get("/schedule", params={"name": "nightly"}).text
    assert shown.count("<li>") == 5 and "outcome-run" in shown
    assert link in shown
    assert "None while paused." in web.get("/schedule", params={"name": "ping"}).text
    job_page = web.get("/job", params={"id": job_id}).text
    assert 'href="/schedule?name=nightly"' in job_page

    assert web.get("/api/schedule", params={"name": "nope"}).status_code == 404
    assert web.get("/schedule", params={"name": "nope"}).status_code == 404
    paths = web.get("/api/openapi.json").json()["paths"]
    assert {"/api/schedules", "/api/schedule"} <= set(paths)


def test_job_page_shows_parents_children_and_why_a_job_was_skipped(app: App, client: Client
                                                                   ) -> None:
    app.ledger.enqueue([new_job("parent", "exit 1")])
    app.ledger.enqueue([
        new_job("child", after=["parent"], after_mode="success", concurrency_key="db",
                unique_key="nightly-report"),
        new_job("cleanup", after=["parent"], after_mode="finished")])
    web = client()
    waiting = web.get("/api/job", params={"id": "child"}).json()
    assert waiting["job"]["state"] == "waiting"
    assert waiting["parents"] == [{"id": "parent", "state": "pending"}]
    run_to_the_end(app, "parent", ExecResult(exit_code=1, error="command exited with code 1"))

    parent = web.get("/api/job", params={"id": "parent"}).json()
    assert parent["parents"] == []
    assert parent["children"] == [{"id": "child", "state": "skipped"},
                                  {"id": "cleanup", "state": "pending"}]
    child = web.get("/api/job", params={"id": "child"}).json()
    assert child["job"]["state"] == "skipped" and "parent" in child["job"]["last_error"]
    assert child["parents"] == [{"id": "parent", "state": "dead"}] and child["children"] == []

    page = web.get("/job", params={"id": "child"}).text
    assert 'After (success)' in page and 'href="/job?id=parent">parent</a>' in page
    assert '<span class="badge state-dead">dead</span>' in page
    assert "nightly-report" in page and ">db<" in page
    parent_page = web.get("/job", params={"id": "parent"}).text
    assert 'href="/job?id=child">child</a> <span class="badge state-skipped">' in parent_page
    states = web.get("/jobs").text
    for state in JobState:
        assert f'<option value="{state.value}"' in states
    assert "child" in web.get("/jobs", params={"state": "skipped"}).text


def test_a_backend_without_schedules_says_so(tmp_path: Path, client: Client) -> None:
    """The Redis example backend stores no schedules."""
    redis = pytest.importorskip("redis")
    pytest.importorskip("queuectl_redis")
    url = os.environ.get("QUEUECTL_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
    try:
        redis.Redis.from_url(url, socket_connect_timeout=3).ping()
    except redis.RedisError as exc:
        if os.environ.get("QUEUECTL_REQUIRE_REDIS") == "1":
            pytest.fail(f"Redis is not reachable at {url} ({exc})", pytrace=False)
        pytest.skip(f"Redis is not reachable at {url} ({exc})")
    from fastapi.testclient import TestClient

    from queuectl_web.reader import Reader
    from queuectl_web.server import create_app

    prefix = f"qweb_{uuid.uuid4().hex[:12]}"
    home = tmp_path / "redis-home"
    home.mkdir()
    (home / "queuectl.yaml").write_text(
        f"backend: redis\nbackends:\n  redis:\n    url: {url}\n    prefix: {prefix}\n")
    app = queue_app(home)
    try:
        with TestClient(create_app(Reader(app))) as web:
            page = web.get("/schedules")
            assert page.status_code == 200 and "This backend has no schedules" in page.text
            assert "This backend has no schedules" in web.get(
                "/schedule", params={"name": "x"}).text
            api = web.get("/api/schedules")
            assert api.status_code == 501 and "does not support schedules" in api.json()["detail"]
            assert web.get("/api/schedule", params={"name": "x"}).status_code == 501
    finally:
        app.close()
        server = redis.Redis.from_url(url)
        keys = list(server.scan_iter(match=f"{prefix}:*"))
        if keys:
            server.delete(*keys)
