"""Actions: each one, and each refusal (read-only, CSRF, the host's hook, bad input),
through both frameworks' test clients. A refused action changes nothing."""

from __future__ import annotations

import pytest
from sqlalchemy import Engine
from sqlalchemy.orm import Session

from programma_sa import JobQueue, JobState
from programma_sa.dashboard import ACTIONS, Action, Dashboard

from ..app import Job
from .conftest import Web

queue = JobQueue(Job)


def _enqueue(engine: Engine) -> str:
    with Session(engine) as session, session.begin():
        return str(queue.add_job(session, "emails", {"to": "ann"}))


def _job(engine: Engine, job_id: str) -> object:
    with Session(engine) as session:
        return queue.get_job(session, job_id)


def test_delete(web: Web, engine: Engine) -> None:
    job_id = _enqueue(engine)
    web.allowed.add("delete")
    done = web.post("/actions/delete", {"csrf_token": web.csrf_token(), "job_id": job_id})
    assert done.status == 303
    assert done.headers["location"] == "/dash/jobs?notice=delete-done"
    assert _job(engine, job_id) is None
    assert "Delete: done." in web.get("/jobs?notice=delete-done").text
    again = web.post("/actions/delete", {"csrf_token": web.csrf_token(), "job_id": job_id})
    assert again.headers["location"] == "/dash/jobs?notice=delete-unchanged"


def test_reschedule(web: Web, engine: Engine) -> None:
    job_id = _enqueue(engine)
    web.allowed.add("reschedule")
    form = {
        "csrf_token": web.csrf_token(),
        "job_id": job_id,
        "start_after": "2031-01-02T03:04:05+00:00",
    }
    done = web.post("/actions/reschedule", form)
    assert done.status == 303
    assert done.headers["location"] == f"/dash/job?id={job_id}&notice=reschedule-done"
    job = _job(engine, job_id)
    assert job is not None
    assert job.start_after.isoformat() == "2031-01-02T03:04:05+00:00"  # type: ignore[attr-defined]
    page = web.get(f"/job?id={job_id}&notice=reschedule-done").text
    assert "Reschedule: done." in page
    assert "2031-01-02 03:04:05+00:00" in page


def test_the_job_page_offers_what_the_state_allows(web: Web, engine: Engine) -> None:
    job_id = _enqueue(engine)
    page = web.get(f"/job?id={job_id}").text
    assert 'action="/dash/actions/reschedule"' in page
    assert 'action="/dash/actions/delete"' in page
    assert f'name="csrf_token" value="{web.csrf_token()}"' in page
    with Session(engine) as session, session.begin():
        queue.move_job_to_failed(session, job_id)
    page = web.get(f"/job?id={job_id}").text
    assert 'action="/dash/actions/reschedule"' not in page  # a finished job is not due again
    assert 'action="/dash/actions/delete"' in page


@pytest.mark.parametrize(
    ("form", "message"),
    [
        (
            {"start_after": ""},
            "Reschedule refused: the form&#39;s &#39;start_after&#39; field is missing or empty",
        ),
        (
            {"start_after": "tomorrow"},
            "Reschedule refused: start_date is not an ISO-8601 date: &#39;tomorrow&#39;",
        ),
        (
            {"start_after": "2031-01-02T03:04:05+00:00", "job_id": "x"},
            "Reschedule refused: job id is not a UUID: &#39;x&#39;",
        ),
    ],
    ids=["empty", "not-a-date", "bad-id"],
)
def test_bad_input_is_refused_with_its_reason(
    web: Web, engine: Engine, form: dict[str, str], message: str
) -> None:
    job_id = _enqueue(engine)
    web.allowed.add("reschedule")
    refused = web.post(
        "/actions/reschedule", {"csrf_token": web.csrf_token(), "job_id": job_id, **form}
    )
    assert refused.status == 400
    assert message in refused.text
    job = _job(engine, job_id)
    assert job is not None and job.state is JobState.CREATED  # type: ignore[attr-defined]


def test_an_action_the_host_does_not_allow(web: Web, engine: Engine) -> None:
    job_id = _enqueue(engine)
    refused = web.post("/actions/delete", {"csrf_token": web.csrf_token(), "job_id": job_id})
    assert refused.status == 403
    assert "you may not delete here" in refused.text
    assert _job(engine, job_id) is not None


def test_without_a_permission_hook_pages_show_and_actions_are_refused(
    make_web: object, engine: Engine
) -> None:
    web = make_web(permission=None)  # type: ignore[operator]
    job_id = _enqueue(engine)
    assert web.get(f"/job?id={job_id}").status == 200
    refused = web.post("/actions/delete", {"csrf_token": web.csrf_token(), "job_id": job_id})
    assert refused.status == 403
    assert _job(engine, job_id) is not None


@pytest.mark.parametrize(
    ("token", "message"),
    [
        (None, "CSRF check failed: the form has no csrf_token field"),
        ("forged", "CSRF check failed: the form&#39;s csrf_token does not match the cookie"),
    ],
    ids=["missing", "forged"],
)
def test_csrf_refused(web: Web, engine: Engine, token: str | None, message: str) -> None:
    job_id = _enqueue(engine)
    web.allowed.add("delete")
    web.csrf_token()  # the browser has its cookie
    form = {"job_id": job_id} if token is None else {"job_id": job_id, "csrf_token": token}
    refused = web.post("/actions/delete", form)
    assert refused.status == 403
    assert message in refused.text
    assert _job(engine, job_id) is not None


def test_csrf_refused_without_the_cookie(make_web: object, engine: Engine) -> None:
    job_id = _enqueue(engine)
    web = make_web()  # type: ignore[operator]
    web.allowed.add("delete")
    refused = web.post("/actions/delete", {"job_id": job_id, "csrf_token": "guessed"})
    assert refused.status == 403
    assert "CSRF check failed: no CSRF cookie (load a dashboard page first)" in refused.text
    assert _job(engine, job_id) is not None


def test_read_only(make_web: object, engine: Engine) -> None:
    web = make_web(read_only=True)  # type: ignore[operator]
    web.allowed.update(ACTIONS)
    job_id = _enqueue(engine)
    page = web.get(f"/job?id={job_id}").text
    assert "/actions/" not in page
    assert '<span class="badge">read-only</span>' in page
    refused = web.post("/actions/delete", {"csrf_token": web.csrf_token(), "job_id": job_id})
    assert refused.status == 403
    assert "the dashboard is read-only" in refused.text
    assert _job(engine, job_id) is not None


def test_nothing_mutates_on_get(web: Web, engine: Engine) -> None:
    job_id = _enqueue(engine)
    web.allowed.update(ACTIONS)
    answer = web.get(f"/actions/delete?job_id={job_id}&csrf_token={web.csrf_token()}")
    assert answer.status == 405
    assert "an action is a POST of its form" in answer.text
    assert _job(engine, job_id) is not None


def test_an_unknown_action(web: Web) -> None:
    answer = web.post("/actions/explode", {"csrf_token": web.csrf_token()})
    assert answer.status == 404
    assert "no action &#39;explode&#39;" in answer.text


def test_the_csrf_cookie_is_strict_and_scoped_to_the_mount(web: Web) -> None:
    cookie = web.get("/").headers["set-cookie"]
    assert "programma_csrf=" in cookie
    assert "Path=/dash" in cookie
    assert "HttpOnly" in cookie
    assert "samesite=strict" in cookie.lower()


def test_poll_seconds_must_be_positive(engine: Engine) -> None:
    from programma_sa import ConfigurationError

    with pytest.raises(
        ConfigurationError, match=r"^poll_seconds must be a positive number of seconds, got 0$"
    ):
        Dashboard(queue, engine, poll_seconds=0)


def test_a_topic_action_goes_back_to_its_topic(
    web: Web, engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The shape pause/resume take (issue #15): one entry with target "topic"."""
    seen: list[str] = []

    def note(queue: JobQueue, session: object, topic: str, form: object) -> bool:
        seen.append(topic)
        return True

    monkeypatch.setitem(ACTIONS, "note", Action("note", "Note", "topic", note))  # type: ignore[index]
    web.allowed.add("note")
    assert 'action="/dash/actions/note"' in web.get("/topic?name=a+b").text
    assert '<input type="hidden" name="topic" value="a b">' in web.get("/topic?name=a+b").text
    with Session(engine) as session, session.begin():
        job_id = queue.add_job(session, "a b", {})
    assert 'action="/dash/actions/note"' not in web.get(f"/job?id={job_id}").text
    done = web.post("/actions/note", {"csrf_token": web.csrf_token(), "topic": "a b"})
    assert done.status == 303
    assert done.headers["location"] == "/dash/topic?name=a+b&notice=note-done"
    assert seen == ["a b"]
