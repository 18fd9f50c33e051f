"""Control of jobs in flight (issue #15) on SQLite (docs/sqlite.md), each test on a
SQLite database file of its own, in every pass of the suite.

What differs from PostgreSQL: nothing is announced (no NOTIFY), so a running job's
worker learns of its cancellation from its next lease renewal; a cancel is one write
under the single writer, so it never finds a job "held by another transaction"; the
held unique key of a refused re-run is not named; attributes are matched on their
top-level members.
"""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import Engine, create_engine
from sqlalchemy.orm import Session

from programma_sa import (
    CancelOutcome,
    DuplicateJob,
    InvalidJobInput,
    JobNotFound,
    JobQueue,
    JobState,
    migrations,
)
from programma_sa._execute import execute

from ..app import Job
from ..maintenance.test_control import enqueue, state_of
from .test_sqlite import _transactions


@pytest.fixture
def sqlite_engine(tmp_path: Path) -> Iterator[Engine]:
    url = f"sqlite:///{tmp_path / 'jobs.db'}"
    migrations.upgrade(url)
    engine = _transactions(create_engine(url), "BEGIN IMMEDIATE")
    yield engine
    engine.dispose()


@pytest.fixture
def queue() -> JobQueue:
    return JobQueue(Job)


def test_a_queued_job_is_cancelled_at_once_and_never_claimed(
    sqlite_engine: Engine, queue: JobQueue
) -> None:
    job_id = enqueue(sqlite_engine, queue)
    with Session(sqlite_engine) as session, session.begin():
        assert queue.cancel_job(session, job_id) is CancelOutcome.CANCELLED
    with Session(sqlite_engine) as session, session.begin():
        job = queue.get_job(session, job_id)
        assert job is not None and job.state is JobState.CANCELLED
        assert job.finished_at is not None and job.finished_at.tzinfo is not None
        assert queue.claim_jobs(session, "t", max_jobs=10) == []
        assert queue.cancel_job(session, job_id) is CancelOutcome.ALREADY_FINISHED
        missing = uuid.uuid4()
        with pytest.raises(JobNotFound) as not_found:
            queue.cancel_job(session, missing)
    assert str(not_found.value) == f"no job with id {missing}"


def test_a_leased_job_is_cancelled_at_once_and_its_lease_renewal_finds_it(
    sqlite_engine: Engine, queue: JobQueue
) -> None:
    """No NOTIFY: the worker's lease renewal no longer matches the job, and reading it
    back (what the worker does then) shows it CANCELLED."""
    job_id = enqueue(sqlite_engine, queue)
    with Session(sqlite_engine) as session, session.begin():
        (held,) = queue.claim_jobs(session, "t")
    with Session(sqlite_engine) as session, session.begin():
        # The single writer: never "requested" (held by another transaction).
        assert queue.cancel_job(session, job_id) is CancelOutcome.CANCELLED
    with sqlite_engine.begin() as connection:
        assert execute(connection, queue.operations.renew_leases([held])) == {}
        states = execute(connection, queue.operations.lease_states([job_id]))
    assert states[job_id].state is JobState.CANCELLED


def test_a_held_job_renews_its_lease_and_is_released_uncounted(
    sqlite_engine: Engine, queue: JobQueue
) -> None:
    job_id = enqueue(sqlite_engine, queue, retry_after_seconds=60)
    with Session(sqlite_engine) as session, session.begin():
        (held,) = queue.claim_jobs(session, "t")
    with sqlite_engine.begin() as connection:
        leases = execute(connection, queue.operations.renew_leases([held]))
    assert set(leases) == {job_id}
    assert leases[job_id].tzinfo is not None and held.start_after is not None
    assert leases[job_id] >= held.start_after
    renewed = dataclasses.replace(held, start_after=leases[job_id])
    with sqlite_engine.begin() as connection:
        assert execute(connection, queue.operations.release_unstarted([renewed])) == [job_id]
    with Session(sqlite_engine) as session:
        job = queue.get_job(session, job_id)
    assert job is not None and (job.state, job.attempts) == (JobState.CREATED, 0)


def test_the_result_is_stored_with_the_completion(sqlite_engine: Engine, queue: JobQueue) -> None:
    ids = [enqueue(sqlite_engine, queue) for _ in range(3)]
    with Session(sqlite_engine) as session, session.begin():
        claimed = queue.claim_jobs(session, "t", max_jobs=3)
    results = ['{"answer": 42, "ok": true}', '"text"', None]
    by_id = {job.id: job for job in claimed}
    with sqlite_engine.begin() as connection:
        done = execute(
            connection,
            queue.operations.complete_unchanged([by_id[i] for i in ids], results),
        )
    assert sorted(done) == sorted(ids)
    with Session(sqlite_engine) as session:
        stored = [queue.get_job(session, i) for i in ids]
    assert [job.result for job in stored if job is not None] == [
        {"answer": 42, "ok": True},
        "text",
        None,
    ]


def test_failed_jobs_are_rerun_by_id_and_by_filter(sqlite_engine: Engine, queue: JobQueue) -> None:
    first, second, done = (enqueue(sqlite_engine, queue) for _ in range(3))
    with Session(sqlite_engine) as session, session.begin():
        queue.set_attributes(session, first, {"last_error": {"type": "KeyError"}, "team": "a"})
        queue.set_attributes(session, second, {"last_error": {"type": "OSError"}, "team": "b"})
        queue.move_job_to_failed(session, first)
        queue.move_job_to_failed(session, second)
        queue.move_job_to_done(session, done)
    with Session(sqlite_engine) as session, session.begin():
        with pytest.raises(InvalidJobInput) as refused:
            queue.retry_job(session, done)
        assert queue.retry_jobs(session, error_type="KeyError") == [first]
        assert queue.retry_jobs(session, attributes={"team": "b"}) == [second]
        assert queue.retry_jobs(session, topic="t") == []
    assert str(refused.value) == (
        f"job {done} is completed; only failed or cancelled jobs can be re-run"
    )
    for job_id in (first, second):
        assert state_of(sqlite_engine, queue, job_id) is JobState.CREATED
    with Session(sqlite_engine) as session, session.begin():
        queue.cancel_job(session, first)
        queue.retry_job(session, first)
        job = queue.get_job(session, first)
    assert job is not None and (job.state, job.attempts, job.finished_at) == (
        JobState.CREATED,
        0,
        None,
    )


def test_a_rerun_whose_key_another_job_holds_is_refused_as_a_duplicate(
    sqlite_engine: Engine, queue: JobQueue
) -> None:
    first = enqueue(sqlite_engine, queue, unique_key="report-7")
    with Session(sqlite_engine) as session, session.begin():
        queue.move_job_to_failed(session, first)
    enqueue(sqlite_engine, queue, unique_key="report-7")
    with pytest.raises(DuplicateJob) as refused, Session(sqlite_engine) as session, session.begin():
        queue.retry_job(session, first)
    assert str(refused.value) == (
        "a job with unique key None is already enqueued in programma_jobs (unique_key held by "
        "a job in one of its unique_states): UNIQUE constraint failed: programma_jobs.unique_key"
    )
    assert state_of(sqlite_engine, queue, first) is JobState.FAILED


def test_a_paused_topic_is_not_claimed_until_resumed(
    sqlite_engine: Engine, queue: JobQueue
) -> None:
    job_id = enqueue(sqlite_engine, queue)
    with Session(sqlite_engine) as session, session.begin():
        assert queue.pause_topic(session, "t") is True
        assert queue.pause_topic(session, "t") is False
        (paused,) = queue.paused_topics(session)
        assert paused.topic == "t" and paused.paused_at.tzinfo is not None
        assert queue.claim_jobs(session, "t") == []
        assert execute(session, queue.operations.seconds_until_due("t")) is None
        assert queue.resume_topic(session, "t") is True
        assert queue.resume_topic(session, "t") is False
        assert execute(session, queue.operations.seconds_until_due("t")) is not None
        assert [job.id for job in queue.claim_jobs(session, "t")] == [job_id]


def test_listing_pages_newest_first_with_each_criterion(
    sqlite_engine: Engine, queue: JobQueue
) -> None:
    ids = [enqueue(sqlite_engine, queue, topic) for topic in ("a", "b", "a", "a")]
    with Session(sqlite_engine) as session, session.begin():
        queue.move_job_to_failed(session, ids[0])
        queue.set_attributes(session, ids[0], {"last_error": {"type": "KeyError"}})
    with Session(sqlite_engine) as session:
        page = queue.list_jobs(session, topic="a", limit=2)
        assert [job.id for job in page.jobs] == [ids[3], ids[2]]
        assert page.next_cursor == ids[2]
        rest = queue.list_jobs(session, topic="a", limit=2, cursor=page.next_cursor)
        assert [job.id for job in rest.jobs] == [ids[0]] and rest.next_cursor is None
        assert [j.id for j in queue.list_jobs(session, state="failed").jobs] == [ids[0]]
        assert [j.id for j in queue.list_jobs(session, error_type="KeyError").jobs] == [ids[0]]
        newest = queue.get_job(session, ids[3])
        assert newest is not None
        later = newest.created_at + timedelta(seconds=1)
        assert len(queue.list_jobs(session, created_before=later).jobs) == 4
        assert queue.list_jobs(session, created_after=later).jobs == []


@pytest.mark.parametrize("framework", ["asgi", "flask"])
def test_the_dashboards_event_stream_says_no_content_and_pages_poll(
    sqlite_engine: Engine, queue: JobQueue, framework: str
) -> None:
    """No LISTEN on SQLite: with live updates asked for, the event stream answers 204
    (the browser's EventSource stops) and the pages refresh by polling."""
    import flask
    from starlette.applications import Starlette
    from starlette.routing import Mount
    from starlette.testclient import TestClient

    from programma_sa.dashboard import Dashboard
    from programma_sa.dashboard.asgi import asgi_app
    from programma_sa.dashboard.blueprint import blueprint

    dashboard = Dashboard(queue, sqlite_engine, live=True)
    if framework == "asgi":
        client = TestClient(Starlette(routes=[Mount("/dash", asgi_app(dashboard))]))
        assert client.get("/dash/events").status_code == 204
        page = client.get("/dash/").content
    else:
        app = flask.Flask(__name__)
        app.register_blueprint(blueprint(dashboard), url_prefix="/dash")
        assert app.test_client().get("/dash/events").status_code == 204
        page = app.test_client().get("/dash/").data
    assert dashboard.feed() is None
    assert b'hx-trigger="programma-changed from:body, every 10.0s"' in page
