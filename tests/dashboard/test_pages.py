"""Every page, through both frameworks' test clients, on real rows."""

from __future__ import annotations

from sqlalchemy import Engine
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


def test_the_job_list_is_one_bounded_page(web: Web, engine: Engine) -> None:
    with Session(engine) as session, session.begin():
        queue.add_jobs(session, "bulk", [{"data": n} for n in range(51)])
    page = web.get("/jobs").text
    assert page.count('<tr data-state="created">') == 50
    assert "The 50 oldest jobs shown; more exist." in page


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
