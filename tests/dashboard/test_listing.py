"""The job list's filter and keyset pages, through both frameworks' test clients."""

from __future__ import annotations

import html
import re

import pytest
from sqlalchemy import Engine
from sqlalchemy.orm import Session

from programma_sa import JobQueue

from ..app import Job
from .conftest import Web, enqueue

queue = JobQueue(Job)


def _next_link(page: str) -> str | None:
    """The path of the page's "next" link (under /dash), if it has one."""
    found = re.search(r'<a id="next-page" rel="next" href="/dash([^"]+)"', page)
    return None if found is None else html.unescape(found.group(1))


def _fail(engine: Engine, job_id: str, error_type: str = "app.Boom") -> None:
    with Session(engine) as session, session.begin():
        queue.set_attributes(session, job_id, {"last_error": {"type": error_type}})
        assert queue.move_job_to_failed(session, job_id)


def test_pages_follow_one_another_by_their_next_link(web: Web, engine: Engine) -> None:
    with Session(engine) as session, session.begin():
        ids = [str(i) for i in queue.add_jobs(session, "bulk", [{"data": n} for n in range(51)])]
    enqueue(engine, "other", {})
    first = web.get("/jobs?topic=bulk").text
    assert first.count('<tr data-state="created">') == 50
    link = _next_link(first)
    assert link is not None and link.startswith("/jobs?topic=bulk&cursor=")  # filter kept
    second = web.get(link).text
    assert second.count('<tr data-state="created">') == 1
    assert ids[0] in second  # the oldest, last
    assert _next_link(second) is None
    assert "<td>other</td>" not in first + second


def test_each_criterion_narrows_the_list(web: Web, engine: Engine) -> None:
    waiting = enqueue(engine, "emails", {}, attributes={"tenant": "acme"})
    boom = enqueue(engine, "emails", {})
    _fail(engine, boom)
    crash = enqueue(engine, "reports", {})
    _fail(engine, crash, "app.Crash")

    def shown(query: str) -> set[str]:
        page = web.get(f"/jobs?{query}")
        assert page.status == 200, page.text
        return {job for job in (waiting, boom, crash) if job in page.text}

    assert shown("") == {waiting, boom, crash}
    assert shown("topic=emails") == {waiting, boom}
    assert shown("state=failed") == {boom, crash}
    assert shown("topic=emails&state=failed") == {boom}
    assert shown("error_type=app.Crash") == {crash}
    assert shown("attributes=%7B%22tenant%22%3A+%22acme%22%7D") == {waiting}
    assert (
        shown("created_after=2000-01-01T00:00:00%2B00:00&created_before=2001-01-01T00:00:00Z")
        == set()
    )
    assert shown("finished_after=2000-01-01T00:00:00%2B00:00") == {boom, crash}
    assert "No jobs match this filter." in web.get("/jobs?topic=nothing").text


def test_the_form_shows_the_filter_it_applied(web: Web) -> None:
    page = web.get("/jobs?topic=%3Cb%3E&state=failed").text
    assert '<input name="topic" value="&lt;b&gt;">' in page
    assert '<option value="failed" selected>failed</option>' in page
    assert 'href="/dash/jobs">clear</a>' in page


@pytest.mark.parametrize(
    ("query", "message"),
    [
        (
            "state=bogus",
            "state must be one of created, active, processing, completed, failed, cancelled;"
            " got &#39;bogus&#39;",
        ),
        ("created_after=yesterday", "created_after is not an ISO-8601 date: &#39;yesterday&#39;"),
        (
            "attributes=tenant",
            "attributes must be a JSON object such as {&#34;key&#34;: &#34;value&#34;};"
            " got &#39;tenant&#39;",
        ),
        ("attributes=%5B1%5D", "attributes must be a mapping, got list"),
        ("cursor=page-2", "cursor must be a job id; got &#39;page-2&#39;"),
    ],
    ids=["state", "time", "attributes-not-json", "attributes-not-object", "cursor"],
)
def test_a_bad_filter_is_refused_with_its_reason(web: Web, query: str, message: str) -> None:
    refused = web.get(f"/jobs?{query}")
    assert refused.status == 400
    assert message in refused.text
