"""The dashboard in a real browser: Debian's chromium driven by Playwright
for Python (its own browser builds cannot be downloaded here), against
``queuectl serve`` and two workers on a temporary home. The overview's
counts change live, a job's page shows its output, a dead job is refused
a retry without the token and retried with it; every page is saved as a
screenshot under the test's tmp folder.

Outside CI the test skips, saying how to run it, when chromium or
Playwright is missing; in CI (``CI`` set) that is a failure: ``.ci/run``
installs both."""

from __future__ import annotations

import importlib.util
import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.integration.conftest import Queue, read_line, spawn

HOW_TO = ("the browser test needs Debian's chromium (apt-get install -y chromium) and "
          "Playwright for Python (pip install playwright, in the [dev] extra; no browser "
          "download: it drives the system's chromium); .ci/run installs both")
TOKEN = "browser-test-token-5f2c9a1e"


def _browser() -> tuple[Any, str]:
    """Playwright's ``sync_playwright`` and the path of chromium."""
    chromium = shutil.which("chromium")
    if chromium is None or importlib.util.find_spec("playwright") is None:
        if os.environ.get("CI"):
            pytest.fail(HOW_TO, pytrace=False)
        pytest.skip(HOW_TO)
    from playwright.sync_api import sync_playwright

    return sync_playwright, chromium


def _serve(queue: Queue, tmp_path: Path) -> tuple[subprocess.Popen[bytes], str]:
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN + "\n")
    token_file.chmod(0o600)
    server = spawn(queue, "serve", "--port", "0", "--allow-actions",
                   "--token-file", str(token_file))
    line = read_line(server.stderr, 30)
    found = re.search(r"on (http://127\.0\.0\.1:\d+) \(actions allowed\)", line)
    assert found, line
    return server, found.group(1)


@pytest.mark.backends("sqlite")
def test_dashboard_in_a_real_browser(queue: Queue, tmp_path: Path) -> None:
    sync_playwright, chromium = _browser()
    from playwright.sync_api import expect

    queue.fast(backoff_base=1)
    queue.run("schedule", "add", "nightly", "--cron", "0 3 * * *", "--command", "./backup.sh")
    marker = tmp_path / "second-time"
    server, url = _serve(queue, tmp_path)
    shots = tmp_path / "screenshots"
    shots.mkdir()
    try:
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=chromium, args=["--no-sandbox"])
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            errors: list[str] = []
            page.on("pageerror", lambda exc: errors.append(str(exc)))

            page.goto(url + "/")
            expect(page.locator('[data-total="completed"]')).to_have_text("0")
            queue.start_workers(2)
            queue.enqueue({"id": "hello", "command": "echo line-one; echo line-two"})
            queue.enqueue({"id": "doomed", "command": "echo no >&2; exit 3",
                           "max_retries": 0})
            queue.enqueue({"id": "second-chance", "max_retries": 0,
                           "command": f"test -e {marker} || {{ touch {marker}; exit 4; }}"})
            # No reload: the page updates itself.
            expect(page.locator('[data-total="completed"]')).to_have_text("1", timeout=15_000)
            expect(page.locator('[data-total="dead"]')).to_have_text("2", timeout=15_000)
            expect(page.locator('[data-count="default:dead"]')).to_have_text("2")
            page.screenshot(path=shots / "overview.png", full_page=True)

            page.goto(url + "/job?id=hello")
            expect(page.locator("#log")).to_contain_text("line-one\nline-two")
            page.screenshot(path=shots / "job.png", full_page=True)

            page.goto(url + "/jobs?state=dead")
            expect(page.locator("table.jobs")).to_contain_text("second-chance")
            page.screenshot(path=shots / "jobs.png", full_page=True)

            page.goto(url + "/job?id=second-chance")
            page.click('button[data-action="retry"]')
            expect(page.locator("#notice")).to_contain_text("Refused (401)")
            assert queue.show("second-chance")["state"] == "dead"
            page.fill("#token", TOKEN)
            page.click('button[data-action="retry"]')
            expect(page.locator("#notice")).to_contain_text("moved back to queue for retry")
            queue.wait_state("second-chance", "completed")

            page.goto(url + "/dlq")
            expect(page.locator("#dead-total")).to_have_text("1")
            page.screenshot(path=shots / "dlq.png", full_page=True)
            page.goto(url + "/workers")
            expect(page.locator("#workers tbody tr.active")).to_have_count(2)
            page.screenshot(path=shots / "workers.png", full_page=True)
            page.goto(url + "/schedules")
            expect(page.locator("body")).to_contain_text("nightly")
            page.screenshot(path=shots / "schedules.png", full_page=True)
            browser.close()
        assert errors == [], errors
        assert sorted(p.name for p in shots.iterdir()) == [
            "dlq.png", "job.png", "jobs.png", "overview.png", "schedules.png", "workers.png"]
    finally:
        server.terminate()
        server.wait(15)
