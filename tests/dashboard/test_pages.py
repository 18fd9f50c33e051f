"""Every page, through both frameworks' test clients, on real rows."""

from __future__ import annotations

import uuid

from sqlalchemy import Engine, update
from sqlalchemy.orm import Session

from programma_sa import JobQueue

from ..app import Job
from .conftest import Web, enqueue

queue = JobQueue(Job)


def _fail(engine: Engine, job_id: str) -> None:
    with Session(engine) as session, session.begin():
        assert queue.move_job_to_failed(session, job_id)


def test_the_overview_counts_each_topic_by_state(web: Web, engine: Engine) -> None:
    enqueue(engine, "emails", {"to": "a"})
    _fail(engine, enqueue(engine, "emails", {"to": "b"}))
    enqueue(engine, "reports", {})
    page = web.get("/")
    assert page.status == 200
    assert '<tr data-topic="emails">' in page.text
    assert '<td class="num" data-state="created">1</td>' in page.text
    assert '<td class="num" data-state="failed">1</td>' in page.text
    assert 'href="/dash/topic?name=reports"' in page.text
    assert "programma_jobs" in page.text  # the table's name, never the database URL


def test_a_page_is_readable_without_javascript(web: Web, engine: Engine) -> None:
    enqueue(engine, "emails", {})
    page = web.get("/jobs")
    # The rows are in the HTML itself; the scripts only refresh them.
    assert "<td>emails</td>" in page.text
    assert '<script src="/dash/static/htmx.min.js" defer></script>' in page.text


def test_the_topic_page(web: Web, engine: Engine) -> None:
    enqueue(engine, "reports", {})
    page = web.get("/topic?name=reports")
    assert page.status == 200
    assert "Topic reports" in page.text
    assert '<td class="num" data-state="created">1</td>' in page.text
    assert "nightly-report" in page.text  # its schedule


def test_an_unknown_topic_has_zeros_and_a_missing_name_is_not_found(web: Web) -> None:
    assert '<td class="num" data-state="created">0</td>' in web.get("/topic?name=nope").text
    missing = web.get("/topic")
    assert missing.status == 404
    assert "no topic named: give ?name=" in missing.text


def test_the_job_list(web: Web, engine: Engine) -> None:
    emails = enqueue(engine, "emails", {})
    reports = enqueue(engine, "reports", {})
    page = web.get("/jobs").text
    assert page.index(reports) < page.index(emails)  # newest first
    assert f'<a href="/dash/job?id={emails}">' in page


def test_the_job_page_shows_every_column(web: Web, engine: Engine) -> None:
    job_id = enqueue(
        engine,
        "emails",
        {"to": "ann@example.com"},
        attributes={"tenant": 7},
        priority=3,
        unique_key="k-1",
    )
    page = web.get(f"/job?id={job_id}")
    assert page.status == 200
    for expected in (
        f"Job {job_id}",
        '<td id="job-state">created</td>',
        "<th>priority</th><td>3</td>",
        "<th>unique_key</th><td>k-1</td>",
        "<th>unique_states</th><td>created, active, processing</td>",
        "<th>retry_after_seconds</th><td>30</td>",
        "<th>finished_at</th><td>—</td>",
    ):
        assert expected in page.text
    assert '<pre id="job-data">{\n  &#34;to&#34;: &#34;ann@example.com&#34;\n}</pre>' in page.text
    assert '<pre id="job-attributes">{\n  &#34;tenant&#34;: 7\n}</pre>' in page.text


def test_script_in_data_and_attributes_is_shown_as_text(web: Web, engine: Engine) -> None:
    payload = "<script>alert('x')</script>"
    job_id = enqueue(engine, payload, {"html": payload}, attributes={payload: payload})
    for path in (f"/job?id={job_id}", "/jobs", "/"):
        page = web.get(path).text
        assert "<script>alert" not in page
    page = web.get(f"/job?id={job_id}").text
    assert "&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt;" in page


def test_a_job_that_is_not_there(web: Web) -> None:
    bad = web.get("/job?id=<b>no</b>")
    assert bad.status == 404
    assert "no job with id &#39;&lt;b&gt;no&lt;/b&gt;&#39; (not a UUID)" in bad.text
    gone = web.get("/job?id=0190a0b2-0000-7000-8000-000000000000")
    assert gone.status == 404
    assert "no job with id 0190a0b2-0000-7000-8000-000000000000" in gone.text


def test_the_schedules_page(web: Web) -> None:
    page = web.get("/schedules")
    assert page.status == 200
    assert "<td>nightly-report</td>" in page.text
    assert "cron 30 2 * * *" in page.text
    assert "Europe/Berlin" in page.text
    assert page.text.count(":30:00+00:00") == 3  # its next three fire times


def test_an_unknown_page_and_static_files(web: Web) -> None:
    assert web.get("/nothing-here").status == 404
    script = web.get("/static/htmx.min.js")
    assert script.status == 200
    assert script.headers["content-type"].startswith("text/javascript")
    assert web.get("/static/htmx.LICENSE").status == 404  # only the listed files


def test_the_view_permission_is_the_hosts(web: Web) -> None:
    web.allowed.clear()
    refused = web.get("/")
    assert refused.status == 403
    assert "you may not view the dashboard" in refused.text


def test_pages_allow_only_the_dashboards_own_scripts(web: Web) -> None:
    headers = web.get("/").headers
    assert headers["content-security-policy"].startswith("default-src 'self';")
    assert "frame-ancestors 'none'" in headers["content-security-policy"]
    assert headers["x-content-type-options"] == "nosniff"
    assert headers["cache-control"] == "no-store"


def test_the_job_page_shows_its_timeline_last_error_and_result(web: Web, engine: Engine) -> None:
    failed = enqueue(engine, "emails", {})
    error = {"type": "app.Boom", "message": "<b>no</b>", "traceback": "line 1", "attempt": 2}
    with Session(engine) as session, session.begin():
        queue.set_attributes(session, failed, {"last_error": error})
        assert queue.move_job_to_failed(session, failed)
    page = web.get(f"/job?id={failed}").text
    assert '<ol class="timeline" id="job-timeline">' in page
    assert "<li>started <time>—</time> (attempt 0)</li>" in page
    assert "<li>failed <time>" in page and "<li>failed <time>—" not in page
    assert (
        '<p id="job-error"><strong>app.Boom</strong>: &lt;b&gt;no&lt;/b&gt; (attempt 2)</p>' in page
    )
    assert '<pre class="traceback">line 1</pre>' in page
    done = enqueue(engine, "emails", {})
    with Session(engine) as session, session.begin():
        assert queue.move_job_to_done(session, done)
        # What a worker stores with the completion of a handler that returned it.
        session.execute(update(Job).where(Job.id == uuid.UUID(done)).values(result={"sent": 3}))
    page = web.get(f"/job?id={done}").text
    assert '<pre id="job-result">{\n  &#34;sent&#34;: 3\n}</pre>' in page
    assert 'id="job-error"' not in page
    waiting = web.get(f"/job?id={enqueue(engine, 'emails', {})}").text
    assert "<li>finished <time>—</time></li>" in waiting


def test_oldest_processing_is_a_dash_when_nothing_processes(web: Web, engine: Engine) -> None:
    enqueue(engine, "emails", {})
    assert '<td class="num">—</td>' in web.get("/").text
    assert '<th>oldest processing</th><td class="num">—</td>' in web.get("/topic?name=emails").text
    with Session(engine) as session, session.begin():
        (claimed,) = queue.claim_jobs(session, "emails")
        assert queue.move_job_to_processing(session, claimed.id)
    assert (
        '<th>oldest processing</th><td class="num">—</td>' not in web.get("/topic?name=emails").text
    )


def test_the_overview_charts_the_last_hour(web: Web, engine: Engine) -> None:
    empty = web.get("/").text
    assert '<figure class="chart" id="throughput">' in empty
    assert "12 bars, oldest left; tallest 0." in empty
    for _ in range(3):
        _fail(engine, enqueue(engine, "emails", {}))
    done = enqueue(engine, "emails", {})
    with Session(engine) as session, session.begin():
        assert queue.move_job_to_done(session, done)
    page = web.get("/").text
    assert "tallest 4." in page
    assert "<title>5 to 0 min ago: 1 completed, 3 failed</title>" in page
    assert "<title>60 to 55 min ago: 0 completed, 0 failed</title>" in page
    # The newest bar is the tallest: full height, failures stacked on completions.
    assert 'class="completed" x="441.0" y="72.0" width="38.0" height="24.0"' in page
    assert 'class="failed" x="441.0" y="0.0" width="38.0" height="72.0"' in page
