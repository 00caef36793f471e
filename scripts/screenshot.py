"""Regenerate the README's screenshot of the dashboard's overview.

    python scripts/screenshot.py [--out docs/images/dashboard-overview.png]

Makes a demo queue in a temporary home (jobs that succeed, fail, die and
wait, in three queues, one paused), runs two workers on it for a few
seconds, starts ``queuectl serve`` on a free port and has Debian's
``chromium`` (driven by Playwright for Python, as the browser test does)
save the overview. Needs: ``apt-get install -y chromium`` and the [dev]
extra (Playwright).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import select
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

QUEUECTL = Path(sys.executable).parent / "queuectl"
ROOT = Path(__file__).resolve().parents[1]


def run(env: dict[str, str], *args: str, stdin: str | None = None) -> str:
    return subprocess.run([str(QUEUECTL), *args], env=env, input=stdin, text=True,
                          capture_output=True, check=True).stdout


def demo_jobs() -> list[dict[str, object]]:
    jobs: list[dict[str, object]] = []
    for i in range(40):
        jobs.append({"command": f"sleep 0.0{i % 9 + 1}; echo report {i}", "queue": "reports"})
    for i in range(12):
        jobs.append({"command": f"echo mail {i}; sleep 0.2", "queue": "mail"})
    for i in range(4):
        jobs.append({"command": f"echo 'fetching feed {i}'; exit {i % 2 + 1}", "queue": "feeds",
                     "max_retries": 0})
    for i in range(6):
        jobs.append({"command": f"echo later {i}", "queue": "mail", "delay": "2h"})
    jobs.extend({"command": f"echo paused {i}", "queue": "thumbnails"} for i in range(9))
    return jobs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=str(ROOT / "docs" / "images" / "dashboard-overview.png"))
    args = parser.parse_args()
    chromium = shutil.which("chromium")
    if chromium is None:
        sys.exit("needs Debian's chromium: apt-get install -y chromium")
    from playwright.sync_api import sync_playwright

    home = Path(tempfile.mkdtemp(prefix="queuectl-shot-"))
    home.chmod(0o700)
    env = {k: v for k, v in os.environ.items() if not k.startswith("QUEUECTL_")}
    env["QUEUECTL_HOME"] = str(home)
    server = None
    try:
        run(env, "config", "set", "backoff_base", "1")
        run(env, "pause", "thumbnails")
        lines = []
        for job in demo_jobs():
            delay = job.pop("delay", None)
            if delay:
                job["run_at"] = time.strftime("%Y-%m-%dT%H:%M:%SZ",
                                              time.gmtime(time.time() + 7200))
            lines.append(json.dumps(job))
        run(env, "enqueue", "--file", "-", stdin="\n".join(lines) + "\n")
        run(env, "worker", "start", "--count", "2")
        time.sleep(8)
        server = subprocess.Popen([str(QUEUECTL), "serve", "--port", "0"], env=env,
                                  stderr=subprocess.PIPE, stdout=subprocess.DEVNULL)
        assert server.stderr is not None
        ready, _, _ = select.select([server.stderr], [], [], 30)
        line = server.stderr.readline().decode() if ready else ""
        found = re.search(r"(http://127\.0\.0\.1:\d+)", line)
        if not found:
            sys.exit(f"queuectl serve did not start: {line!r}")
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=chromium, args=["--no-sandbox"])
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            page.goto(found.group(1) + "/")
            page.wait_for_timeout(2500)  # a refresh, the charts drawn
            Path(args.out).parent.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=args.out, full_page=True)
            browser.close()
        print(f"wrote {args.out}")
    finally:
        if server is not None:
            server.terminate()
            server.wait(15)
        subprocess.run([str(QUEUECTL), "worker", "stop", "--timeout", "5"], env=env,
                       capture_output=True, check=False)
        shutil.rmtree(home, ignore_errors=True)


if __name__ == "__main__":
    main()
