"""Every page and endpoint of the dashboard answers from a real store: the
pages, the JSON API with its OpenAPI document, keyset pages, and /metrics
as Prometheus' own parser reads it; on PostgreSQL too, with dependencies
and schedules."""

from __future__ import annotations

from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families
from web_helpers import Client, new_job, queue_app, run_to_the_end

from queuectl_core import joblogs
from queuectl_core.app import App
from queuectl_core.models import ExecResult
from queuectl_core.schedules import parse_spec
from queuectl_core.timeutil import now_ms


def _fill(app: App) -> None:
    app.ledger.enqueue([new_job("ok-1", "echo fine"), new_job("bad-1", "exit 3")])
    run_to_the_end(app, "ok-1", ExecResult(exit_code=0, stdout_tail="fine\n"))
    run_to_the_end(app, "bad-1", ExecResult(exit_code=3, error="command exited with code 3"))
    app.ledger.enqueue([new_job(f"more-{i}", queue="other") for i in range(5)])
    app.ledger.set_queue_paused("other", True)


def test_pages_show_the_queue(app: App, client: Client) -> None:
    _fill(app)
    web = client()
    home = web.get("/")
    assert home.status_code == 200 and "text/html" in home.headers["content-type"]
    assert 'data-count="other:pending">5<' in home.text
    assert 'data-paused="other">paused<' in home.text
    assert home.headers["content-security-policy"].startswith("default-src 'self'")
    assert "bad-1" in web.get("/jobs", params={"state": "dead"}).text
    assert "ok-1" not in web.get("/jobs", params={"state": "dead"}).text
    assert "more-3" in web.get("/jobs", params={"queue": "other", "q": "more-3"}).text
    job = web.get("/job", params={"id": "bad-1"})
    assert job.status_code == 200 and "command exited with code 3" in job.text
    assert "bad-1" in web.get("/dlq").text
    assert web.get("/workers").status_code == 200
    assert web.get("/job", params={"id": "nope"}).status_code == 404
    assert web.get("/jobs", params={"state": "bogus"}).status_code == 422
    assert web.get("/static/uPlot.iife.min.js").status_code == 200


def test_api_gives_counts_stats_jobs_and_workers(app: App, client: Client) -> None:
    _fill(app)
    web = client()
    overview = web.get("/api/overview").json()
    assert overview["totals"]["completed"] == 1 and overview["totals"]["dead"] == 1
    assert overview["paused_queues"] == ["other"]
    assert [q["queue"] for q in overview["queues"]] == ["default", "other"]
    assert len(overview["series"]["t"]) == 60 and sum(overview["series"]["completed"]) == 1
    stats = web.get("/api/stats", params={"since": "10m"}).json()
    everything = stats["queues"][-1]
    assert (everything["completed"], everything["failed"], everything["dead"]) == (1, 1, 1)
    assert everything["top_failing"] == [{"command": "exit 3", "failures": 1}]
    assert web.get("/api/stats", params={"since": "10"}).status_code == 422
    detail = web.get("/api/job", params={"id": "bad-1"}).json()
    assert [a["exit_code"] for a in detail["attempts"]] == [3]
    assert web.get("/api/dlq").json()["total"] == 1
    assert web.get("/api/workers").json() == []
    spec = web.get("/api/openapi.json").json()
    assert {"/api/overview", "/api/jobs", "/api/job", "/api/job/log", "/api/dlq",
            "/api/workers", "/api/job/retry", "/api/dlq/retry"} <= set(spec["paths"])


def test_job_pages_are_keyset_pages_newest_first(app: App, client: Client) -> None:
    app.ledger.enqueue([new_job(f"j{i:03d}") for i in range(120)])
    web = client()
    seen: list[str] = []
    before = None
    while True:
        page = web.get("/api/jobs", params={"limit": 50, **({"before": before} if before
                                                             else {})}).json()
        seen += [j["id"] for j in page["jobs"]]
        before = page["next"]
        if before is None:
            break
    assert seen == [f"j{i:03d}" for i in reversed(range(120))]
    html = web.get("/jobs").text
    assert "j119" in html and "j069" not in html and "before=j070" in html


def test_log_tail_reads_the_attempt_output(app: App, client: Client) -> None:
    app.ledger.enqueue([new_job("talk", "echo hi")])
    run_to_the_end(app, "talk", ExecResult(exit_code=0))
    log_dir = joblogs.job_log_dir(app.config.home / "logs" / "jobs", "talk")
    log_dir.mkdir(parents=True)
    (log_dir / "attempt-1.out").write_text("line one\nline two\n")
    log = client().get("/api/job/log", params={"id": "talk"}).json()
    assert log == {"attempt": 1, "stream": "out", "text": "line one\nline two\n", "bytes": 18,
                   "truncated": False}
    assert client().get("/api/job/log", params={"id": "talk", "stream": "x"}).status_code == 422


def test_metrics_parse_as_prometheus_text(app: App, client: Client) -> None:
    _fill(app)
    text = client().get("/metrics").text
    families = {f.name: f for f in text_string_to_metric_families(text)}
    jobs = {(s.labels["queue"], s.labels["state"]): s.value
            for s in families["queuectl_jobs"].samples}
    assert jobs[("other", "pending")] == 5 and jobs[("default", "dead")] == 1
    paused = {s.labels["queue"]: s.value for s in families["queuectl_queue_paused"].samples}
    assert paused == {"default": 0, "other": 1}
    ages = {s.labels["queue"]: s.value for s in families["queuectl_oldest_due_age_seconds"].samples}
    assert ages["other"] >= 0
    outcomes = {(s.labels["queue"], s.labels["outcome"]): s.value
                for s in families["queuectl_recent_attempts"].samples}
    assert outcomes == {("default", "completed"): 1, ("default", "failed"): 1,
                        ("default", "dead"): 1}
    runs = [s for s in families["queuectl_recent_run_seconds"].samples
            if s.name.endswith("_bucket") and s.labels["le"] == "+Inf"]
    assert [s.value for s in runs] == [2]
    assert families["queuectl_active_workers"].samples[0].value == 0


def test_postgres_store_is_served_without_its_password(pg_home: Path, client: Client) -> None:
    from fastapi.testclient import TestClient
    from web_helpers import PG_PASSWORD

    from queuectl_web.reader import Reader
    from queuectl_web.server import create_app

    app = queue_app(pg_home)
    try:
        _fill(app)
        with TestClient(create_app(Reader(app))) as web:
            pages = [web.get(p).text for p in ("/", "/jobs", "/dlq", "/api/overview", "/metrics")]
            assert all(PG_PASSWORD not in page for page in pages)
            assert "postgres" in pages[0]
            assert 'data-count="other:pending">5<' in pages[0]
            assert [j["id"] for j in web.get("/api/jobs", params={"limit": 2}).json()["jobs"]] \
                == ["more-4", "more-3"]
            app.ledger.enqueue([new_job("last", after=["bad-1", "ok-1"], after_mode="finished")])
            assert web.get("/api/job", params={"id": "last"}).json()["parents"] == [
                {"id": "bad-1", "state": "dead"}, {"id": "ok-1", "state": "completed"}]
            assert 'href="/job?id=last">last</a>' in web.get("/job", params={"id": "ok-1"}).text
            assert app.ledger.store.put_schedule(parse_spec(
                {"name": "hourly", "cron": "0 * * * *", "command": "true"}, now=now_ms(),
                base_dir="/tmp"), None)
            assert [s["name"] for s in web.get("/api/schedules").json()] == ["hourly"]
            assert len(web.get("/api/schedule", params={"name": "hourly"}).json()
                       ["next_runs"]) == 5
            assert 'data-schedule="hourly"' in web.get("/schedules").text
    finally:
        app.close()
