"""Control of jobs from the caller's session: cancel, re-run, list, pause, results, wait.

Everything runs on the real PostgreSQL of the suite; a job "held by a
transaction-mode pass" is a claim inside a transaction left open on another
connection, and notifications are heard on a LISTEN connection of the test's own.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone

import psycopg
import pytest
from sqlalchemy import Engine, select, update
from sqlalchemy.orm import Session

from programma_sa import (
    CancelOutcome,
    DuplicateJob,
    InvalidJobInput,
    JobNotFound,
    JobQueue,
    JobState,
    WaitTimeout,
)
from programma_sa._drivers.postgresql import control_channel, finished_channel, notify_channel
from programma_sa._execute import execute
from programma_sa._listening import conninfo_from_url, listen_command

from .jobs import TABLE, db_now, finished, put


@pytest.fixture
def hear(engine: Engine) -> Iterator[psycopg.Connection[tuple[object, ...]]]:
    """A LISTEN connection on the queue's three channels."""
    with psycopg.connect(conninfo_from_url(engine.url), autocommit=True) as connection:
        for channel in (notify_channel(TABLE), control_channel(TABLE), finished_channel(TABLE)):
            connection.execute(listen_command(channel))
        yield connection


def heard(connection: psycopg.Connection[tuple[object, ...]]) -> list[tuple[str, str]]:
    """The notifications received so far: ``(channel, payload)``."""
    return [(n.channel, n.payload) for n in connection.notifies(timeout=0.3)]


def enqueue(engine: Engine, queue: JobQueue, topic: str = "t", **options: object) -> uuid.UUID:
    with Session(engine) as session, session.begin():
        return queue.add_job(session, topic, {"topic": topic}, **options)  # type: ignore[arg-type]


def state_of(engine: Engine, queue: JobQueue, job_id: uuid.UUID) -> JobState:
    with Session(engine) as session:
        job = queue.get_job(session, job_id)
    assert job is not None
    return job.state


# -- cancel ------------------------------------------------------------------------------


@pytest.mark.postgresql_only(
    "checks the NOTIFY announcements; SQLite's cancel: tests/integration/test_sqlite_control.py"
)
def test_a_queued_job_is_cancelled_at_once_and_never_claimed(
    engine: Engine, queue: JobQueue, hear: psycopg.Connection[tuple[object, ...]]
) -> None:
    job_id = enqueue(engine, queue)
    heard(hear)
    with Session(engine) as session, session.begin():
        assert queue.cancel_job(session, job_id) is CancelOutcome.CANCELLED
    with Session(engine) as session, session.begin():
        job = queue.get_job(session, job_id)
        assert job is not None and job.state is JobState.CANCELLED
        assert job.finished_at is not None and job.attempts == 0
        assert queue.claim_jobs(session, "t", max_jobs=10) == []
    # Waiting callers hear it; no worker holds a created job, so none is told.
    assert heard(hear) == [(finished_channel(TABLE), "t")]


@pytest.mark.postgresql_only(
    "its worker is told by NOTIFY; on SQLite by its lease renewal (test_sqlite_control.py)"
)
def test_a_leased_job_is_cancelled_and_its_worker_told(
    engine: Engine, queue: JobQueue, hear: psycopg.Connection[tuple[object, ...]]
) -> None:
    job_id = enqueue(engine, queue)
    with Session(engine) as session, session.begin():
        assert [job.id for job in queue.claim_jobs(session, "t")] == [job_id]
    heard(hear)
    with Session(engine) as session, session.begin():
        assert queue.cancel_job(session, str(job_id)) is CancelOutcome.CANCELLED
    assert state_of(engine, queue, job_id) is JobState.CANCELLED
    assert sorted(heard(hear)) == sorted(
        [(control_channel(TABLE), f"cancel:{job_id}"), (finished_channel(TABLE), "t")]
    )


@pytest.mark.postgresql_only(
    "row locks (SKIP LOCKED); SQLite's single writer never finds a job held"
)
def test_a_job_locked_by_a_running_pass_is_requested_without_waiting(
    engine: Engine, queue: JobQueue, hear: psycopg.Connection[tuple[object, ...]]
) -> None:
    """A transaction-mode pass holds its job's row lock while the handler runs: the
    cancel neither waits for it (no deadlock) nor changes the row."""
    job_id = enqueue(engine, queue)
    heard(hear)
    with Session(engine) as running, running.begin():
        assert [job.id for job in queue.claim_jobs(running, "t")] == [job_id]
        started = time.monotonic()
        with Session(engine) as session, session.begin():
            assert queue.cancel_job(session, job_id) is CancelOutcome.REQUESTED
        assert time.monotonic() - started < 5  # the row lock was not waited for
        # The notification goes out when the cancelling transaction commits.
        assert heard(hear) == [(control_channel(TABLE), f"cancel:{job_id}")]
    assert state_of(engine, queue, job_id) is JobState.ACTIVE  # the pass committed its claim


@pytest.mark.parametrize("state", [JobState.COMPLETED, JobState.FAILED, JobState.CANCELLED])
def test_a_finished_job_is_left_as_it_is(
    session: Session, queue: JobQueue, state: JobState
) -> None:
    (job_id,) = finished(session, queue, "t", state, 1, timedelta(minutes=1))
    assert queue.cancel_job(session, job_id) is CancelOutcome.ALREADY_FINISHED
    job = queue.get_job(session, job_id)
    assert job is not None and job.state is state


def test_cancelling_an_unknown_or_malformed_id_is_refused(
    session: Session, queue: JobQueue
) -> None:
    missing = uuid.uuid4()
    with pytest.raises(JobNotFound) as refused:
        queue.cancel_job(session, missing)
    assert str(refused.value) == f"no job with id {missing}"
    with pytest.raises(InvalidJobInput) as malformed:
        queue.cancel_job(session, "not-a-uuid")
    assert str(malformed.value) == "job id is not a UUID: 'not-a-uuid'"


# -- re-run ------------------------------------------------------------------------------


def _fail(session: Session, job_id: uuid.UUID, error_type: str, ago: timedelta) -> None:
    session.execute(
        update(TABLE)
        .where(TABLE.c.id == job_id)
        .values(
            state="failed",
            attempts=5,
            finished_at=db_now(session) - ago,
            attributes={"last_error": {"type": error_type, "message": "no"}},
        )
    )


@pytest.mark.postgresql_only(
    "checks the NOTIFY wake-up; SQLite's re-run: tests/integration/test_sqlite_control.py"
)
def test_a_failed_job_is_rerun_with_a_fresh_budget(
    engine: Engine, queue: JobQueue, hear: psycopg.Connection[tuple[object, ...]]
) -> None:
    job_id = enqueue(engine, queue)
    with Session(engine) as session, session.begin():
        _fail(session, job_id, "app.Boom", timedelta(minutes=1))
    heard(hear)
    with Session(engine) as session, session.begin():
        assert queue.retry_job(session, job_id) is None
        now = db_now(session)
    with Session(engine) as session, session.begin():
        job = queue.get_job(session, job_id)
        assert job is not None
        assert (job.state, job.attempts, job.finished_at) == (JobState.CREATED, 0, None)
        assert job.start_after is not None and job.start_after <= now
        assert job.attributes["last_error"]["type"] == "app.Boom"  # kept, for the record
        assert [claimed.id for claimed in queue.claim_jobs(session, "t")] == [job_id]
    # Idle workers of the topic are woken, as by an enqueue.
    assert heard(hear) == [(notify_channel(TABLE), "t")]


def test_rerunning_a_job_that_did_not_fail_is_refused(session: Session, queue: JobQueue) -> None:
    (done,) = finished(session, queue, "t", JobState.COMPLETED, 1, timedelta(minutes=1))
    with pytest.raises(InvalidJobInput) as refused:
        queue.retry_job(session, done)
    assert str(refused.value) == (
        f"job {done} is completed; only failed or cancelled jobs can be re-run"
    )
    job = queue.get_job(session, done)
    assert job is not None and job.state is JobState.COMPLETED
    missing = uuid.uuid4()
    with pytest.raises(JobNotFound, match=f"^no job with id {missing}$"):
        queue.retry_job(session, missing)


def test_rerun_by_filter_takes_what_matches_every_criterion(
    session: Session, queue: JobQueue
) -> None:
    def failed_job(topic: str, error_type: str, ago: timedelta) -> uuid.UUID:
        job_id = queue.add_job(session, topic, {})
        _fail(session, job_id, error_type, ago)
        return job_id

    hour = timedelta(hours=1)
    boom_recent = failed_job("mail", "app.Boom", hour)
    boom_old = failed_job("mail", "app.Boom", 30 * hour)
    timeout_recent = failed_job("mail", "app.Timeout", hour)
    other_topic = failed_job("sms", "app.Boom", hour)
    (cancelled,) = finished(session, queue, "mail", JobState.CANCELLED, 1, hour)
    (completed,) = finished(session, queue, "mail", JobState.COMPLETED, 1, hour)
    now = db_now(session)

    rerun = queue.retry_jobs(
        session, topic="mail", error_type="app.Boom", finished_after=now - 2 * hour
    )
    assert rerun == [boom_recent]
    # Oldest finished first, within the limit; CANCELLED only when asked for.
    assert queue.retry_jobs(session, topic="mail", limit=1) == [boom_old]
    assert queue.retry_jobs(session, topic="mail", state="cancelled") == [cancelled]
    assert sorted(queue.retry_jobs(session, state=["failed", JobState.CANCELLED])) == sorted(
        [timeout_recent, other_topic]
    )
    assert queue.retry_jobs(session) == []
    states = dict(session.execute(select(TABLE.c.id, TABLE.c.state)).all())
    assert states[completed] == "completed"
    assert {states[job] for job in (boom_recent, boom_old, timeout_recent, cancelled)} == {
        "created"
    }


@pytest.mark.parametrize(
    ("criteria", "message"),
    [
        (
            {"state": "completed"},
            "state must be one of failed, cancelled; got 'completed'",
        ),
        ({"state": []}, "state must be a state or a non-empty list of states; got []"),
        ({"limit": 0}, "limit must be an int from 1 to 10000; got 0"),
        ({"limit": 10_001}, "limit must be an int from 1 to 10000; got 10001"),
        ({"error_type": ""}, "error_type must be a non-empty string; got ''"),
        (
            {"finished_after": "2026-01-02T00:00:00Z", "finished_before": "2026-01-01T00:00:00Z"},
            "finished_after (2026-01-02T00:00:00+00:00) must be earlier than "
            "finished_before (2026-01-01T00:00:00+00:00)",
        ),
        (
            {"finished_after": datetime(2026, 1, 1)},
            "finished_after must carry a time zone (an aware datetime, or a string with an "
            "offset such as 'Z' or '+00:00'), got '2026-01-01T00:00:00'",
        ),
        ({"topic": ""}, "topic must not be empty"),
    ],
)
def test_a_bad_rerun_filter_is_refused_before_anything_is_written(
    session: Session, queue: JobQueue, criteria: dict[str, object], message: str
) -> None:
    job_id = queue.add_job(session, "t", {})
    _fail(session, job_id, "app.Boom", timedelta(minutes=1))
    with pytest.raises(InvalidJobInput) as refused:
        queue.retry_jobs(session, **criteria)  # type: ignore[arg-type]
    assert str(refused.value) == message
    job = queue.get_job(session, job_id)
    assert job is not None and job.state is JobState.FAILED


# -- list --------------------------------------------------------------------------------


def test_pages_are_newest_first_and_chained_by_their_cursor(
    session: Session, queue: JobQueue
) -> None:
    ids = queue.add_jobs(session, "t", [{"data": n} for n in range(7)])
    pages, cursor = [], None
    while True:
        page = queue.list_jobs(session, topic="t", cursor=cursor, limit=3)
        pages.append([job.id for job in page.jobs])
        cursor = page.next_cursor
        if cursor is None:
            break
    newest_first = ids[::-1]
    assert pages == [newest_first[0:3], newest_first[3:6], newest_first[6:]]
    # Exactly full last page: no further (empty) page is announced.
    assert queue.list_jobs(session, topic="t", limit=7).next_cursor is None


def test_pages_stay_stable_while_jobs_are_added(engine: Engine, queue: JobQueue) -> None:
    """Another connection keeps enqueueing while the pages are read: every job that
    existed when the listing began is listed exactly once, in order."""
    with Session(engine) as session, session.begin():
        before = queue.add_jobs(session, "t", [{"data": n} for n in range(50)])
    stop = threading.Event()
    added: list[uuid.UUID] = []

    def enqueue_meanwhile() -> None:
        while not stop.is_set():
            with Session(engine) as session, session.begin():
                added.append(queue.add_job(session, "t", {"late": True}))

    writer = threading.Thread(target=enqueue_meanwhile)
    writer.start()
    listed: list[uuid.UUID] = []
    try:
        with Session(engine) as session:
            first = queue.list_jobs(session, topic="t", limit=10)
            listed += [job.id for job in first.jobs if job.id in before]
            cursor = first.next_cursor
            while cursor is not None:
                time.sleep(0.01)  # let the writer add jobs between the pages
                page = queue.list_jobs(session, topic="t", cursor=cursor, limit=10)
                listed += [job.id for job in page.jobs]
                cursor = page.next_cursor
    finally:
        stop.set()
        writer.join()
    assert len(added) > 0
    assert listed == before[::-1]


def test_filters_narrow_the_listing(session: Session, queue: JobQueue) -> None:
    now = db_now(session)
    hour = timedelta(hours=1)
    mail_created = put(session, queue, "mail", JobState.CREATED)
    mail_processing = put(session, queue, "mail", JobState.PROCESSING, started_at=now)
    (mail_done,) = finished(session, queue, "mail", JobState.COMPLETED, 1, hour)
    mail_failed = queue.add_job(session, "mail", {}, attributes={"customer": 7})
    _fail(session, mail_failed, "app.Boom", 3 * hour)
    session.execute(
        update(TABLE)
        .where(TABLE.c.id == mail_failed)
        .values(attributes={"customer": 7, "last_error": {"type": "app.Boom"}})
    )
    sms = put(session, queue, "sms", JobState.CREATED)

    def ids(**criteria: object) -> list[uuid.UUID]:
        listed = [job.id for job in queue.list_jobs(session, **criteria).jobs]  # type: ignore[arg-type]
        if "limit" not in criteria:  # the count of the same criteria agrees
            assert queue.count_jobs(session, **criteria) == len(listed)  # type: ignore[arg-type]
        return listed

    assert ids(topic="mail") == [mail_failed, mail_done, mail_processing, mail_created]
    assert ids() == [sms, mail_failed, mail_done, mail_processing, mail_created]
    assert ids(topic="mail", state="created") == [mail_created]
    assert ids(topic="mail", state=["processing", JobState.FAILED]) == [
        mail_failed,
        mail_processing,
    ]
    assert ids(state=JobState.CREATED) == [sms, mail_created]
    assert ids(topic="mail", finished_after=now - 2 * hour) == [mail_done]
    assert ids(finished_before=now - 2 * hour) == [mail_failed]
    assert ids(error_type="app.Boom") == [mail_failed]
    assert ids(attributes={"customer": 7}) == [mail_failed]
    assert ids(created_after=now + hour) == []
    assert ids(topic="mail", created_before=now + hour, limit=1) == [mail_failed]


@pytest.mark.parametrize(
    ("criteria", "message"),
    [
        (
            {"state": "bogus"},
            "state must be one of created, active, processing, completed, failed, cancelled; "
            "got 'bogus'",
        ),
        ({"limit": 0}, "limit must be an int from 1 to 1000; got 0"),
        ({"limit": True}, "limit must be an int from 1 to 1000; got True"),
        ({"cursor": "page-2"}, "cursor must be a job id; got 'page-2'"),
        ({"cursor": 7}, "cursor must be a job id; got 7"),
        (
            {"created_after": "2026-01-01T00:00:00Z", "created_before": "2026-01-01T00:00:00Z"},
            "created_after (2026-01-01T00:00:00+00:00) must be earlier than "
            "created_before (2026-01-01T00:00:00+00:00)",
        ),
        ({"created_before": "yesterday"}, "created_before is not an ISO-8601 date: 'yesterday'"),
        ({"attributes": ["customer"]}, "attributes must be a mapping, got list"),
        ({"topic": 5}, "topic must be a string, got int"),
    ],
)
def test_a_bad_listing_is_refused(
    session: Session, queue: JobQueue, criteria: dict[str, object], message: str
) -> None:
    with pytest.raises(InvalidJobInput) as refused:
        queue.list_jobs(session, **criteria)  # type: ignore[arg-type]
    assert str(refused.value) == message
    if not {"limit", "cursor"} & set(criteria):  # a count checks the criteria alike
        with pytest.raises(InvalidJobInput) as refused:
            queue.count_jobs(session, **criteria)  # type: ignore[arg-type]
        assert str(refused.value) == message


# -- pause and resume --------------------------------------------------------------------


@pytest.mark.postgresql_only(
    "checks the NOTIFY on resume; SQLite's pause: tests/integration/test_sqlite_control.py"
)
def test_a_paused_topic_is_not_claimed_but_still_takes_jobs(
    engine: Engine, queue: JobQueue, hear: psycopg.Connection[tuple[object, ...]]
) -> None:
    with Session(engine) as session, session.begin():
        assert queue.pause_topic(session, "t") is True
        assert queue.pause_topic(session, "t") is False  # already
        paused_at = db_now(session)
    job_id = enqueue(engine, queue)
    other = enqueue(engine, queue, topic="other")
    with Session(engine) as session, session.begin():
        assert [(p.topic, p.paused_at <= paused_at) for p in queue.paused_topics(session)] == [
            ("t", True)
        ]
        assert queue.claim_jobs(session, "t") == []
        assert [job.id for job in queue.claim_jobs(session, "other")] == [other]
    heard(hear)
    with Session(engine) as session, session.begin():
        assert queue.resume_topic(session, "t") is True
        assert queue.resume_topic(session, "t") is False
    # Idle workers of the topic are woken at once.
    assert heard(hear) == [(notify_channel(TABLE), "t")]
    with Session(engine) as session, session.begin():
        assert queue.paused_topics(session) == []
        assert [job.id for job in queue.claim_jobs(session, "t")] == [job_id]


def test_pausing_a_bad_topic_is_refused(session: Session, queue: JobQueue) -> None:
    with pytest.raises(InvalidJobInput, match=r"^topic must not contain NUL characters$"):
        queue.pause_topic(session, "a\x00b")
    with pytest.raises(InvalidJobInput, match=r"^topic must not be empty$"):
        queue.resume_topic(session, "")


# -- wait --------------------------------------------------------------------------------


@pytest.mark.postgresql_only(
    "woken by NOTIFY; SQLite waits by polling (the polling test runs there)"
)
def test_waiting_returns_the_job_once_the_worker_announces_it(
    engine: Engine, queue: JobQueue
) -> None:
    job_id = enqueue(engine, queue)

    def complete_later() -> None:
        time.sleep(0.5)
        with Session(engine) as session, session.begin():
            (job,) = queue.claim_jobs(session, "t")
        # The worker's own completion (with its announcement), as a worker writes it.
        with engine.begin() as connection:
            execute(connection, queue.operations.complete_unchanged([job], ['{"answer": 42}']))

    completer = threading.Thread(target=complete_later)
    completer.start()
    started = time.monotonic()
    try:
        job = queue.wait_for_job(engine, job_id, timeout=20, poll_interval=10)
    finally:
        completer.join()
    # Woken by the announcement, not by the 10 s poll.
    assert time.monotonic() - started < 5
    assert job.state is JobState.COMPLETED and job.result == {"answer": 42}


def test_waiting_polls_for_a_job_finished_without_an_announcement(
    engine: Engine, queue: JobQueue
) -> None:
    job_id = enqueue(engine, queue)

    def done_later() -> None:
        time.sleep(0.3)
        with Session(engine) as session, session.begin():
            queue.move_job_to_failed(session, job_id)  # the seed's setter announces nothing

    finisher = threading.Thread(target=done_later)
    finisher.start()
    try:
        job = queue.wait_for_job(engine, job_id, timeout=20, poll_interval=0.2)
    finally:
        finisher.join()
    assert job.state is JobState.FAILED and job.result is None


def test_waiting_gives_up_after_its_timeout(engine: Engine, queue: JobQueue) -> None:
    job_id = enqueue(engine, queue)
    with pytest.raises(WaitTimeout) as timed_out:
        queue.wait_for_job(engine, job_id, timeout=0.3, poll_interval=0.1)
    assert str(timed_out.value) == f"job {job_id} did not finish within 0.3 s (it is created)"
    assert isinstance(timed_out.value, TimeoutError)


def test_waiting_for_nothing_is_refused(engine: Engine, queue: JobQueue) -> None:
    missing = uuid.uuid4()
    with pytest.raises(JobNotFound, match=f"^no job with id {missing}$"):
        queue.wait_for_job(engine, missing, timeout=1)
    with pytest.raises(InvalidJobInput, match=r"^timeout must not be negative, got -1$"):
        queue.wait_for_job(engine, missing, timeout=-1)
    with pytest.raises(
        InvalidJobInput, match=r"^poll_interval must be more than 0 seconds, got 0$"
    ):
        queue.wait_for_job(engine, missing, timeout=1, poll_interval=0)


def test_results_are_stored_with_the_completion(engine: Engine, queue: JobQueue) -> None:
    first, second = enqueue(engine, queue), enqueue(engine, queue)
    with Session(engine) as session, session.begin():
        jobs = queue.claim_jobs(session, "t", max_jobs=2)
    results = {first: '{"rows": [1, 2]}', second: None}
    with engine.begin() as connection:
        done = execute(
            connection,
            queue.operations.complete_unchanged(jobs, [results[job.id] for job in jobs]),
        )
    assert sorted(done) == sorted([first, second])
    with Session(engine) as session:
        assert queue.get_job(session, first).result == {"rows": [1, 2]}  # type: ignore[union-attr]
        assert queue.get_job(session, second).result is None  # type: ignore[union-attr]


def test_an_aware_datetime_bound_is_accepted(session: Session, queue: JobQueue) -> None:
    job_id = queue.add_job(session, "t", {})
    later = datetime.now(timezone.utc) + timedelta(days=1)
    assert [job.id for job in queue.list_jobs(session, created_before=later).jobs] == [job_id]


# -- unique keys (issue #14) meet cancel and re-run ------------------------------------


def test_a_cancelled_job_gives_its_unique_key_back(engine: Engine, queue: JobQueue) -> None:
    """CANCELLED is not among the default unique_states: the key is free again."""
    first = enqueue(engine, queue, unique_key="report-7")
    with Session(engine) as session, session.begin():
        assert queue.cancel_job(session, first) is CancelOutcome.CANCELLED
    second = enqueue(engine, queue, unique_key="report-7")
    assert second != first


@pytest.mark.databases(
    "postgresql",
    "mariadb",
    reason="PostgreSQL and MariaDB name the held key; SQLite does not (test_sqlite_control.py)",
)
def test_a_rerun_whose_key_another_job_holds_is_refused_as_a_duplicate(
    engine: Engine, queue: JobQueue
) -> None:
    """A re-run makes the job CREATED again, a state it holds its key in: when another
    job took the key meanwhile, the database refuses it (DuplicateJob) and nothing of
    the call is written."""
    first = enqueue(engine, queue, unique_key="report-7")
    with Session(engine) as session, session.begin():
        queue.move_job_to_failed(session, first)
    enqueue(engine, queue, unique_key="report-7")
    for rerun in (
        lambda session: queue.retry_job(session, first),
        lambda session: queue.retry_jobs(session, topic="t"),
    ):
        with (
            pytest.raises(DuplicateJob, match="unique key 'report-7'"),
            Session(engine) as session,
            session.begin(),
        ):
            rerun(session)
        assert state_of(engine, queue, first) is JobState.FAILED
