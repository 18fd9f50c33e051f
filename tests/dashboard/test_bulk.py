"""Retry and cancel by the list's filter: the count on GET, the change on POST only,
and the refusals of any action, through both frameworks' test clients."""

from __future__ import annotations

import pytest
from sqlalchemy import Engine
from sqlalchemy.orm import Session

from programma_sa import JobQueue, JobState
from programma_sa.dashboard.bulk import BULK_LIMIT

from ..app import Job
from .conftest import Web, enqueue

queue = JobQueue(Job)


def _states(engine: Engine, ids: list[str]) -> list[JobState]:
    with Session(engine) as session:
        jobs = [queue.get_job(session, job_id) for job_id in ids]
    return [job.state for job in jobs if job is not None]


def _failed(engine: Engine, topic: str, count: int) -> list[str]:
    ids = [enqueue(engine, topic, {}) for _ in range(count)]
    with Session(engine) as session, session.begin():
        for job_id in ids:
            assert queue.move_job_to_failed(session, job_id)
    return ids


def test_retry_by_filter_counts_then_retries(web: Web, engine: Engine) -> None:
    emails = _failed(engine, "emails", 3)
    reports = _failed(engine, "reports", 1)
    web.allowed.add("bulk-retry")
    assert 'href="/dash/bulk?topic=emails&amp;action=retry"' in web.get("/jobs?topic=emails").text
    page = web.get("/bulk?action=retry&topic=emails")
    assert page.status == 200
    assert '<p id="bulk-count">3 jobs match now.</p>' in page.text
    assert '<input type="hidden" name="topic" value="emails">' in page.text
    assert '<button type="submit">Retry 3 jobs</button>' in page.text
    assert _states(engine, emails) == [JobState.FAILED] * 3  # nothing changes on GET
    done = web.post("/bulk", {"csrf_token": web.csrf_token(), "action": "retry", "topic": "emails"})
    assert done.status == 303
    assert done.headers["location"] == "/dash/jobs?topic=emails&notice=bulk-retry-3"
    assert _states(engine, emails) == [JobState.CREATED] * 3
    assert _states(engine, reports) == [JobState.FAILED]
    assert "Retry by filter: 3 jobs." in web.get("/jobs?topic=emails&notice=bulk-retry-3").text
    assert (
        '<p id="bulk-count">0 jobs match now.</p>'
        in web.get("/bulk?action=retry&topic=emails").text
    )


def test_cancel_by_filter(web: Web, engine: Engine) -> None:
    waiting = [enqueue(engine, "emails", {}) for _ in range(2)]
    failed = _failed(engine, "emails", 1)
    web.allowed.add("bulk-cancel")
    page = web.get("/bulk?action=cancel&topic=emails").text
    assert '<p id="bulk-count">2 jobs match now.</p>' in page  # the failed one is finished
    done = web.post(
        "/bulk", {"csrf_token": web.csrf_token(), "action": "cancel", "topic": "emails"}
    )
    assert done.headers["location"] == "/dash/jobs?topic=emails&notice=bulk-cancel-2"
    assert _states(engine, waiting) == [JobState.CANCELLED] * 2
    assert _states(engine, failed) == [JobState.FAILED]


def test_one_confirmation_takes_at_most_the_limit(web: Web, engine: Engine) -> None:
    with Session(engine) as session, session.begin():
        queue.add_jobs(session, "many", [{"data": n} for n in range(BULK_LIMIT + 1)])
    web.allowed.add("bulk-cancel")
    page = web.get("/bulk?action=cancel&topic=many").text
    assert (
        f'<p id="bulk-count">{BULK_LIMIT + 1} jobs match now. One confirmation takes'
        f" {BULK_LIMIT} of them; confirm again for the next ones.</p>"
    ) in page
    assert f'<button type="submit">Cancel {BULK_LIMIT} jobs</button>' in page
    done = web.post("/bulk", {"csrf_token": web.csrf_token(), "action": "cancel", "topic": "many"})
    assert done.headers["location"].endswith(f"notice=bulk-cancel-{BULK_LIMIT}")
    notice = web.get(f"/jobs?notice=bulk-cancel-{BULK_LIMIT}").text
    assert f"Cancel by filter: {BULK_LIMIT} jobs (the most one confirmation takes" in notice
    assert (
        '<p id="bulk-count">1 job matches now.</p>'
        in web.get("/bulk?action=cancel&topic=many").text
    )


@pytest.mark.parametrize(
    ("query", "message"),
    [
        (
            "action=retry&state=created",
            "retry by filter takes jobs in state failed or cancelled; "
            "the filter asks for &#39;created&#39;",
        ),
        (
            "action=cancel&state=completed",
            "cancel by filter takes jobs in state created or active or processing; "
            "the filter asks for &#39;completed&#39;",
        ),
        (
            "action=retry&created_after=2026-01-01T00:00:00Z",
            "retry by filter cannot use created_after; clear it from the filter",
        ),
        ("action=retry&attributes=x", "attributes must be a JSON object"),
    ],
    ids=["retry-state", "cancel-state", "retry-created", "attributes"],
)
def test_a_filter_an_action_cannot_honour(
    web: Web, engine: Engine, query: str, message: str
) -> None:
    ids = _failed(engine, "emails", 1)
    web.allowed.update({"bulk-retry", "bulk-cancel"})
    shown = web.get(f"/bulk?{query}")
    assert shown.status == 400 and message in shown.text
    form = dict(pair.split("=", 1) for pair in query.split("&"))
    refused = web.post("/bulk", {"csrf_token": web.csrf_token(), **form})
    assert refused.status == 400
    assert message in refused.text
    assert _states(engine, ids) == [JobState.FAILED]


def test_the_list_offers_what_its_filter_allows(web: Web) -> None:
    def offered(query: str) -> list[str]:
        page = web.get(f"/jobs?{query}").text
        return [name for name in ("retry", "cancel") if f"action={name}" in page]

    assert offered("") == ["retry", "cancel"]
    assert offered("state=failed") == ["retry"]
    assert offered("state=processing") == ["cancel"]
    assert offered("state=completed") == []
    assert offered("created_after=2026-01-01T00:00:00Z") == ["cancel"]


def test_bulk_refusals(make_web: object, engine: Engine) -> None:
    ids = _failed(engine, "emails", 2)
    form = {"action": "retry", "topic": "emails"}
    web = make_web()  # type: ignore[operator]
    refused = web.post("/bulk", {"csrf_token": web.csrf_token(), **form})
    assert refused.status == 403 and "you may not bulk-retry here" in refused.text
    web.allowed.add("bulk-retry")
    forged = web.post("/bulk", {"csrf_token": "forged", **form})
    assert forged.status == 403 and "CSRF check failed" in forged.text
    unknown = web.post("/bulk", {"csrf_token": web.csrf_token(), "action": "explode"})
    assert unknown.status == 404 and "no bulk action &#39;explode&#39;" in unknown.text
    assert web.get("/bulk?action=explode").status == 404
    read_only = make_web(read_only=True)  # type: ignore[operator]
    read_only.allowed.add("bulk-retry")
    page = read_only.get("/bulk?action=retry&topic=emails").text
    assert '<p id="bulk-count">2 jobs match now.</p>' in page and '<form method="post"' not in page
    assert "/bulk?" not in read_only.get("/jobs").text
    refused = read_only.post("/bulk", {"csrf_token": read_only.csrf_token(), **form})
    assert refused.status == 403 and "the dashboard is read-only" in refused.text
    assert _states(engine, ids) == [JobState.FAILED] * 2


def test_a_job_deleted_after_the_listing_is_skipped(engine: Engine) -> None:
    """Another transaction deletes a listed job before its cancel: not counted. (On
    SQLite too: the listing's transaction has ended, and the cancels' has not read.)"""
    from programma_sa.dashboard.bulk import BULK

    gone, kept = (enqueue(engine, "emails", {}) for _ in range(2))

    class Racing(JobQueue):
        deleted = False

        def cancel_job(self, session: object, job_id: object) -> object:  # type: ignore[override]
            if not self.deleted:  # before the first cancel: after the listing ended
                with Session(engine) as other, other.begin():  # a second connection
                    assert queue.delete_job(other, gone)
                self.deleted = True
            return super().cancel_job(session, job_id)  # type: ignore[arg-type]

    criteria = {"topic": "emails", "state": ["created"]}
    assert BULK["cancel"].run(Racing(Job), lambda: Session(engine), criteria) == 1
    assert _states(engine, [gone, kept]) == [JobState.CANCELLED]
