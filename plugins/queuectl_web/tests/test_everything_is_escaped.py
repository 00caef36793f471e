"""What jobs carry (commands, output, errors, ids) reaches the pages as
text, never as markup; env values and secrets never reach them at all."""

from __future__ import annotations

from web_helpers import Client, new_job, run_to_the_end

from queuectl_core import joblogs
from queuectl_core.app import App
from queuectl_core.models import ExecResult

EVIL = """<script>alert("x")</script> it's "quoted" & <b>bold</b>"""


def test_commands_output_and_errors_are_escaped(app: App, client: Client) -> None:
    app.ledger.enqueue([new_job("evil", f"echo '{EVIL}'; exit 1",
                                env={"API_KEY": "hunter2-secret"})])
    run_to_the_end(app, "evil", ExecResult(exit_code=1, error=EVIL, stdout_tail=EVIL,
                                           stderr_tail=EVIL))
    log_dir = joblogs.job_log_dir(app.config.home / "logs" / "jobs", "evil")
    log_dir.mkdir(parents=True)
    (log_dir / "attempt-1.out").write_text(EVIL + "\n")
    web = client()
    pages = {path: web.get(path, params=params).text for path, params in [
        ("/", {}), ("/jobs", {}), ("/jobs", {"q": EVIL}), ("/dlq", {}),
        ("/job", {"id": "evil"})]}
    for path, html in pages.items():
        assert "<script>alert" not in html, path
        assert "<b>bold" not in html, path
        assert "hunter2-secret" not in html, path
    job_page = pages["/job"]
    assert "&lt;script&gt;alert(&#34;x&#34;)&lt;/script&gt; it&#39;s &#34;quoted&#34; &amp;" \
        in job_page
    assert "API_KEY=" in job_page  # the name stays, the value is masked
    api = web.get("/api/job", params={"id": "evil"})
    assert api.headers["content-type"] == "application/json"
    assert api.json()["job"]["env"] == {"API_KEY": "••••••"}
    assert "hunter2-secret" not in web.get("/api/jobs").text
    log = web.get("/api/job/log", params={"id": "evil"})
    assert log.headers["content-type"] == "application/json" and log.json()["text"] == EVIL + "\n"
    assert web.get("/", params={"x": EVIL}).headers["x-content-type-options"] == "nosniff"


def test_schedule_commands_and_names_are_escaped(app: App, client: Client) -> None:
    from queuectl_core.schedules import manual_fire, parse_spec
    from queuectl_core.timeutil import now_ms

    store = app.ledger.store
    assert store.put_schedule(parse_spec({"name": "evil", "every": "1h", "command": EVIL},
                                         now=now_ms(), base_dir="/tmp"), None)
    found = store.get_schedule("evil")
    assert found is not None and store.fire_schedule(manual_fire(found, now_ms(),
                                                                 default_max_retries=0))
    web = client()
    pages = [web.get("/schedules").text, web.get("/schedule", params={"name": "evil"}).text]
    for html in pages:
        assert "<script>alert" not in html and "<b>bold" not in html
        assert "&lt;script&gt;alert(&#34;x&#34;)&lt;/script&gt; it&#39;s &#34;quoted&#34;" in html
    assert web.get("/api/schedules").json()[0]["command"] == EVIL
    # A name that no schedule can have (names are [A-Za-z0-9._-]) comes back as text.
    missing = web.get("/schedule", params={"name": EVIL})
    assert missing.status_code == 404 and missing.headers["content-type"] == "application/json"


def test_a_missing_job_is_named_as_text(app: App, client: Client) -> None:
    answer = client().get("/api/job", params={"id": EVIL})
    assert answer.status_code == 404 and answer.headers["content-type"] == "application/json"
