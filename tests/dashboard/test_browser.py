"""The dashboard in a real browser: the system's Chromium, driven by Playwright.

The dashboard is served by uvicorn on a free port, over the test database. The
browser opens the overview, sees a job enqueued meanwhile appear without a reload (the
event stream; polling is set to an hour so it cannot be what refreshed), filters the
job list to the failed jobs, opens the count of a retry by that filter, retries the
failed job through its form and sees it complete through the live update, pauses its
topic, opens a job whose data holds a script (shown as text, never run), deletes a
job through its form, and reads the overview with JavaScript off. A screenshot of each
page is kept in the directory the test prints.

Chromium comes from the distribution (``apt-get install -y chromium``; ``.ci/run``
installs it when missing): Playwright's own browser downloads are not used. Without
it the test is skipped — except under CI (``CI=true``), where that is a failure.
"""

from __future__ import annotations

import os
import shutil
import socket
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import uvicorn
from sqlalchemy import Engine
from sqlalchemy.orm import Session

from programma_sa import JobQueue, Worker
from programma_sa.dashboard import Dashboard
from programma_sa.dashboard.asgi import asgi_app

from ..app import Job
from .conftest import SCHEDULES, enqueue

queue = JobQueue(Job)
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
#: Generous: only a failure waits this long (milliseconds, Playwright's unit).
PATIENCE_MS = 30_000
XSS = "<script>window.pwned = true; alert('pwned')</script>"


@pytest.fixture
def chromium() -> str:
    """The browser's path; asked for first, so a skip starts no server."""
    if os.path.exists(CHROMIUM):
        return CHROMIUM
    if os.environ.get("CI") == "true":
        pytest.fail(f"chromium is not installed ({CHROMIUM}): .ci/run installs it under CI")
    pytest.skip(f"chromium is not installed ({CHROMIUM}): apt-get install -y chromium")


@pytest.fixture
def shots(capsys: pytest.CaptureFixture[str]) -> Path:
    root = Path(os.environ.get("PROGRAMMA_TEST_ARTIFACTS", tempfile.gettempdir()))
    directory = root / "programma-dashboard-screenshots"
    directory.mkdir(parents=True, exist_ok=True)
    with capsys.disabled():
        print(f"\ndashboard screenshots: {directory}")
    return directory


@pytest.fixture
def serve(engine: Engine) -> Iterator[Callable[..., str]]:
    """Serves a dashboard with these options (every action allowed) on a free port;
    returns its URL (``http://127.0.0.1:<port>/dash``)."""
    from starlette.applications import Starlette
    from starlette.routing import Mount

    running: list[tuple[uvicorn.Server, threading.Thread, Dashboard]] = []

    def start(**options: Any) -> str:
        dashboard = Dashboard(
            queue, engine, permission=lambda request, action: True, schedules=SCHEDULES, **options
        )
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        app = Starlette(routes=[Mount("/dash", asgi_app(dashboard))])
        config = uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning")
        server = uvicorn.Server(config)
        thread = threading.Thread(target=server.run, daemon=True)
        thread.start()
        running.append((server, thread, dashboard))
        for _ in range(600):
            if server.started:
                break
            time.sleep(0.05)
        assert server.started, "uvicorn did not start"
        return f"http://127.0.0.1:{port}/dash"

    yield start
    for server, thread, dashboard in running:
        # Open event streams never end by themselves: uvicorn is told to exit at once.
        server.should_exit = True
        server.force_exit = True
        thread.join(PATIENCE_MS / 1000)
        dashboard.close()


@pytest.mark.postgresql_only(
    "the event stream refreshes the page; on SQLite pages poll (the polling test runs there)"
)
def test_the_dashboard_in_chromium(
    chromium: str, serve: Callable[..., str], engine: Engine, shots: Path
) -> None:
    from playwright.sync_api import expect, sync_playwright

    # Polling once an hour: whatever refreshes the page in time is the event stream.
    served = serve(poll_seconds=3600)

    enqueue(engine, "emails", {"to": "ann@example.com"})
    failed = enqueue(engine, "emails", {"to": "bob@example.com"})
    with Session(engine) as session, session.begin():
        queue.move_job_to_failed(session, failed)
    hostile = enqueue(engine, "reports", {"html": XSS}, attributes={"note": XSS})

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium, args=["--no-sandbox"])
        try:
            page = browser.new_page()
            page.set_default_timeout(PATIENCE_MS)
            dialogs: list[str] = []
            page.on("dialog", lambda dialog: (dialogs.append(dialog.message), dialog.dismiss()))

            # The overview, live: a job enqueued now appears without a reload.
            page.goto(f"{served}/")
            expect(page.locator('tr[data-topic="emails"] td[data-state="failed"]')).to_have_text(
                "1"
            )
            expect(page.locator("#live-status")).to_be_visible()  # the event stream is open
            page.screenshot(path=shots / "overview.png", full_page=True)
            enqueue(engine, "arrived-live", {})
            expect(page.locator('tr[data-topic="arrived-live"]')).to_be_visible()
            enqueue(engine, "arrived-live-again", {})  # the refreshed page stays live
            expect(page.locator('tr[data-topic="arrived-live-again"]')).to_be_visible()
            page.screenshot(path=shots / "overview-after-live-update.png", full_page=True)

            # The job list, filtered to the failed jobs, then the failed job.
            page.click("text=Jobs")
            expect(page.locator(f'a[href="/dash/job?id={failed}"]')).to_be_visible()
            page.screenshot(path=shots / "jobs.png", full_page=True)
            page.select_option('#job-filter select[name="state"]', "failed")
            page.click('#job-filter button[type="submit"]')
            expect(page.locator("tbody tr")).to_have_count(1)
            page.screenshot(path=shots / "jobs-filtered.png", full_page=True)
            page.click("text=Retry the matching jobs")
            expect(page.locator("#bulk-count")).to_have_text("1 job matches now.")
            page.screenshot(path=shots / "bulk-retry.png", full_page=True)
            page.goto(f"{served}/jobs?state=failed")
            page.click(f'a[href="/dash/job?id={failed}"]')
            expect(page.locator("#job-state")).to_have_text("failed")
            page.screenshot(path=shots / "job-failed.png", full_page=True)

            # Retry it through its form; a worker's pass completes it, and the page
            # shows that through the live update (the finished channel).
            page.click('form[action="/dash/actions/retry"] button')
            expect(page.locator(".notice")).to_have_text("Retry: done.")
            expect(page.locator("#job-state")).to_have_text("created")
            worker = Worker(
                queue, engine, "emails", lambda ctx: {"sent": True}, max_jobs=10, listen=False
            )
            assert worker.run_once().completed == 2  # ann's job and the retried one
            expect(page.locator("#job-state")).to_have_text("completed")
            expect(page.locator("#job-result")).to_contain_text('"sent": true')
            # The actions offered follow the state the live update brought.
            expect(page.locator('form[action="/dash/actions/cancel"]')).to_have_count(0)
            page.screenshot(path=shots / "job-retried-and-completed.png", full_page=True)

            # Pause its topic from the topic page.
            page.click("text=emails")
            page.click('form[action="/dash/actions/pause"] button')
            expect(page.locator(".notice")).to_have_text("Pause: done.")
            expect(page.locator("#topic-paused")).to_contain_text("Paused since")
            expect(page.locator('form[action="/dash/actions/resume"] button')).to_be_visible()
            page.screenshot(path=shots / "topic-paused.png", full_page=True)
            with Session(engine) as session:
                assert [p.topic for p in queue.paused_topics(session)] == ["emails"]

            # A script in the data is text on the page, and never runs.
            page.goto(f"{served}/job?id={hostile}")
            expect(page.locator("#job-data")).to_contain_text(XSS)
            expect(page.locator("#job-attributes")).to_contain_text(XSS)
            assert page.evaluate("window.pwned === undefined")
            assert dialogs == []
            page.screenshot(path=shots / "job-with-script-in-data.png", full_page=True)

            # An action through its form (CSRF token and all): delete the failed job.
            page.goto(f"{served}/job?id={failed}")
            page.click('form[action="/dash/actions/delete"] button')
            expect(page.locator(".notice")).to_have_text("Delete: done.")
            expect(page.locator(f'a[href="/dash/job?id={failed}"]')).to_have_count(0)
            page.screenshot(path=shots / "jobs-after-delete.png", full_page=True)

            page.click("text=Schedules")
            expect(page.locator("td", has_text="nightly-report")).to_be_visible()
            page.screenshot(path=shots / "schedules.png", full_page=True)

            # JavaScript off: the pages are whole HTML.
            context = browser.new_context(java_script_enabled=False)
            static = context.new_page()
            static.goto(f"{served}/")
            expect(static.locator('tr[data-topic="reports"]')).to_be_visible()
            static.screenshot(path=shots / "overview-without-javascript.png", full_page=True)
            context.close()
        finally:
            browser.close()


def test_without_the_event_stream_pages_poll(
    chromium: str, serve: Callable[..., str], engine: Engine
) -> None:
    from playwright.sync_api import expect, sync_playwright

    served = serve(live=False, poll_seconds=0.5)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium, args=["--no-sandbox"])
        try:
            page = browser.new_page()
            page.set_default_timeout(PATIENCE_MS)
            page.goto(f"{served}/")
            expect(page.locator("#live-status")).to_be_hidden()
            enqueue(engine, "arrived-by-polling", {})
            expect(page.locator('tr[data-topic="arrived-by-polling"]')).to_be_visible()
        finally:
            browser.close()
