"""Actions: each one, and each refusal (read-only, CSRF, the host's hook, bad input),
through both frameworks' test clients. A refused action changes nothing."""

from __future__ import annotations

import pytest
from sqlalchemy import Engine
from sqlalchemy.orm import Session

from programma_sa import JobQueue, JobState
from programma_sa.dashboard import ACTIONS, Action, Dashboard

from ..app import Job
from ..backends import ON_SQLITE
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


def _form(web: Web, **fields: str) -> dict[str, str]:
    return {"csrf_token": web.csrf_token(), **fields}


def test_cancel(web: Web, engine: Engine) -> None:
    job_id = _enqueue(engine)
    web.allowed.add("cancel")
    assert 'action="/dash/actions/cancel"' in web.get(f"/job?id={job_id}").text
    done = web.post("/actions/cancel", _form(web, job_id=job_id))
    assert done.headers["location"] == f"/dash/job?id={job_id}&notice=cancel-done"
    job = _job(engine, job_id)
    assert job is not None and job.state is JobState.CANCELLED  # type: ignore[attr-defined]
    page = web.get(f"/job?id={job_id}&notice=cancel-done").text
    assert "Cancel: done." in page
    assert 'action="/dash/actions/cancel"' not in page  # finished: not offered again
    again = web.post("/actions/cancel", _form(web, job_id=job_id))
    assert again.headers["location"] == f"/dash/job?id={job_id}&notice=cancel-unchanged"


def test_retry(web: Web, engine: Engine) -> None:
    job_id = _enqueue(engine)
    web.allowed.add("retry")
    assert 'action="/dash/actions/retry"' not in web.get(f"/job?id={job_id}").text
    with Session(engine) as session, session.begin():
        queue.move_job_to_failed(session, job_id)
    assert 'action="/dash/actions/retry"' in web.get(f"/job?id={job_id}").text
    done = web.post("/actions/retry", _form(web, job_id=job_id))
    assert done.headers["location"] == f"/dash/job?id={job_id}&notice=retry-done"
    job = _job(engine, job_id)
    assert job is not None and job.state is JobState.CREATED  # type: ignore[attr-defined]
    refused = web.post("/actions/retry", _form(web, job_id=job_id))
    assert refused.status == 400
    assert (
        f"Retry refused: job {job_id} is created; only failed or cancelled jobs can be re-run"
        in refused.text
    )


@pytest.mark.parametrize("name", ["cancel", "retry"])
def test_a_job_that_is_gone(web: Web, name: str) -> None:
    web.allowed.add(name)
    missing = "0190a0b2-0000-7000-8000-000000000000"
    refused = web.post(f"/actions/{name}", _form(web, job_id=missing))
    assert refused.status == 404
    assert f"{name.title()} refused: no job with id {missing}" in refused.text


def test_pause_and_resume(web: Web, engine: Engine) -> None:
    web.allowed.update({"pause", "resume"})
    page = web.get("/topic?name=emails").text
    assert 'action="/dash/actions/pause"' in page
    assert 'action="/dash/actions/resume"' not in page
    done = web.post("/actions/pause", _form(web, topic="emails"))
    assert done.headers["location"] == "/dash/topic?name=emails&notice=pause-done"
    with Session(engine) as session:
        assert [p.topic for p in queue.paused_topics(session)] == ["emails"]
    page = web.get("/topic?name=emails").text
    assert 'id="topic-paused">Paused since' in page
    assert 'action="/dash/actions/pause"' not in page
    assert 'action="/dash/actions/resume"' in page
    again = web.post("/actions/pause", _form(web, topic="emails"))
    assert again.headers["location"] == "/dash/topic?name=emails&notice=pause-unchanged"
    resumed = web.post("/actions/resume", _form(web, topic="emails"))
    assert resumed.headers["location"] == "/dash/topic?name=emails&notice=resume-done"
    with Session(engine) as session:
        assert queue.paused_topics(session) == []
    refused = web.post("/actions/pause", _form(web, topic=""))
    assert refused.status == 400
    assert "Pause refused: the form&#39;s &#39;topic&#39; field is missing or empty" in refused.text


@pytest.mark.parametrize(
    ("name", "field", "label"),
    [
        ("cancel", "job_id", "Cancel"),
        ("delete", "job_id", "Delete"),
        ("pause", "topic", "Pause"),
        ("resume", "topic", "Resume"),
    ],
)
@pytest.mark.parametrize("given", [{}, {"job_id": " ", "topic": " "}], ids=["missing", "blank"])
def test_an_action_without_its_target_names_the_missing_field(
    web: Web, engine: Engine, name: str, field: str, label: str, given: dict[str, str]
) -> None:
    job_id = _enqueue(engine)
    web.allowed.add(name)
    refused = web.post(f"/actions/{name}", _form(web, **given))
    assert refused.status == 400
    assert f"{label} refused: the form&#39;s &#39;{field}&#39; field is missing or empty" in (
        refused.text
    )
    assert _job(engine, job_id) is not None
    with Session(engine) as session:
        assert queue.paused_topics(session) == []


@pytest.mark.parametrize("name", ["cancel", "retry", "pause", "resume"])
def test_each_new_action_is_refused_like_the_others(
    make_web: object, engine: Engine, name: str
) -> None:
    """Without the host's permission, without CSRF, read-only: nothing changes."""
    job_id = _enqueue(engine)
    with Session(engine) as session, session.begin():
        queue.move_job_to_failed(session, job_id)  # retry would take it
        if name == "resume":
            queue.pause_topic(session, "emails")
    target = {"job_id": job_id} if name in ("cancel", "retry") else {"topic": "emails"}

    def unchanged() -> None:
        job = _job(engine, job_id)
        assert job is not None and job.state is JobState.FAILED  # type: ignore[attr-defined]
        with Session(engine) as session:
            paused = [p.topic for p in queue.paused_topics(session)]
        assert paused == (["emails"] if name == "resume" else [])

    web = make_web()  # type: ignore[operator]
    refused = web.post(f"/actions/{name}", _form(web, **target))
    assert refused.status == 403 and f"you may not {name} here" in refused.text
    unchanged()
    web.allowed.add(name)
    forged = web.post(f"/actions/{name}", {**target, "csrf_token": "forged"})
    assert forged.status == 403 and "CSRF check failed" in forged.text
    unchanged()
    read_only = make_web(read_only=True)  # type: ignore[operator]
    read_only.allowed.add(name)
    refused = read_only.post(f"/actions/{name}", _form(read_only, **target))
    assert refused.status == 403 and "the dashboard is read-only" in refused.text
    unchanged()


def test_a_retry_whose_unique_key_another_job_took_is_refused(web: Web, engine: Engine) -> None:
    with Session(engine) as session, session.begin():
        first = queue.add_job(session, "emails", {}, unique_key="ann")
        queue.move_job_to_failed(session, first)
        queue.add_job(session, "emails", {}, unique_key="ann")  # the key is free again
    web.allowed.update({"retry", "bulk-retry"})
    refused = web.post("/actions/retry", _form(web, job_id=str(first)))
    assert refused.status == 409
    key = "None" if ON_SQLITE else "&#39;ann&#39;"  # SQLite does not say which key is held
    held = (
        f"a job with unique key {key} is already enqueued in programma_jobs"
        " (unique_key held by a job in one of its unique_states)"
    )
    assert f"Retry refused: {held}" in refused.text
    by_filter = web.post("/bulk", _form(web, action="retry", topic="emails"))
    assert by_filter.status == 409
    assert f"Retry by filter refused: {held}" in by_filter.text
    job = _job(engine, str(first))
    assert job is not None and job.state is JobState.FAILED  # type: ignore[attr-defined]
