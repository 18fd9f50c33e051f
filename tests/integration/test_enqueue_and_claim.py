"""Enqueue beside business rows, claims, FIFO, delays and the visibility timeout."""

from __future__ import annotations

import time
from datetime import datetime, timedelta, timezone

import pytest
from sqlalchemy import Engine, select, text
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from programma_sa import JobQueue, JobSpec, JobState

from ..app import Order
from ..backends import LOCK_TIMEOUT_1S
from ..helpers import job_count


def test_enqueue_rolled_back_with_business_row_leaves_nothing(
    queue: JobQueue, session_factory: sessionmaker[Session]
) -> None:
    with session_factory() as session:
        session.add(Order(id=1, note="rolled back"))
        queue.add_job(session, "receipts", {"order": 1})
        session.rollback()
    with session_factory() as session:
        assert session.get(Order, 1) is None
        assert job_count(session) == 0


def test_enqueue_committed_with_business_row_keeps_both(
    queue: JobQueue, session_factory: sessionmaker[Session]
) -> None:
    with session_factory.begin() as session:
        session.add(Order(id=2, note="kept"))
        job_id = queue.add_job(session, "receipts", {"order": 2}, attributes={"source": "web"})
    with session_factory() as session:
        assert session.get(Order, 2) is not None
        job = queue.get_job(session, job_id)
        assert job is not None
        assert job.topic == "receipts"
        assert job.data == {"order": 2}
        assert job.attributes == {"source": "web"}
        assert job.state is JobState.CREATED
        assert job.attempts == 0
        assert job.retry_after_seconds == 30


def test_a_claim_returns_each_job_s_attributes_empty_or_not(
    queue: JobQueue, session: Session
) -> None:
    plain = queue.add_job(session, "t", {"n": 1})
    tagged = queue.add_job(session, "t", {"n": 2}, attributes={"source": "web", "empty": {}})
    claimed = {job.id: job for job in queue.claim_jobs(session, "t", max_jobs=2)}
    # The claim sends {} as NULL (a JSON parse saved per job); it reads back as {}.
    assert claimed[plain].attributes == {}
    assert claimed[tagged].attributes == {"source": "web", "empty": {}}
    claimed[plain].attributes["mine"] = 1  # a dict of its own, not a shared one
    assert queue.claim_jobs(session, "t") == []
    assert queue.get_job(session, plain).attributes == {}  # type: ignore[union-attr]


def test_claim_marks_active_counts_attempt_and_sets_lease(
    queue: JobQueue, session: Session
) -> None:
    job_id = queue.add_job(session, "t", {"n": 1}, retry_after_seconds=60)
    [claimed] = queue.claim_jobs(session, "t")
    assert claimed.id == job_id
    assert claimed.state is JobState.ACTIVE
    assert claimed.attempts == 1
    assert claimed.started_at is not None and claimed.start_after is not None
    lease = claimed.start_after - claimed.started_at
    assert lease == timedelta(seconds=60)


def test_claim_only_takes_its_topic(queue: JobQueue, session: Session) -> None:
    queue.add_job(session, "a", 1)
    queue.add_job(session, "b", 2)
    assert [job.data for job in queue.claim_jobs(session, "b", max_jobs=10)] == [2]
    assert queue.claim_jobs(session, "nobody-enqueues-here") == []


def test_visibility_timeout_redelivers_only_after_it_expires(
    queue: JobQueue, session_factory: sessionmaker[Session]
) -> None:
    with session_factory.begin() as session:
        job_id = queue.add_job(session, "lease", {}, retry_after_seconds=2)
    with session_factory.begin() as session:
        assert [job.id for job in queue.claim_jobs(session, "lease")] == [job_id]
    # Leased: not claimable again while the timeout runs.
    with session_factory.begin() as session:
        assert queue.claim_jobs(session, "lease") == []
    time.sleep(2.2)
    with session_factory.begin() as session:
        [again] = queue.claim_jobs(session, "lease")
    assert again.id == job_id
    assert again.attempts == 2


def test_null_retry_after_seconds_is_never_redelivered(queue: JobQueue, session: Session) -> None:
    job_id = queue.add_job(session, "once", {}, retry_after_seconds=None)
    assert [job.id for job in queue.claim_jobs(session, "once")] == [job_id]
    job = queue.get_job(session, job_id)
    assert job is not None and job.state is JobState.ACTIVE and job.start_after is None
    # Even far in the future it is not due: the database's clock cannot reach NULL.
    assert queue.claim_jobs(session, "once") == []


def test_moving_out_of_active_stops_redelivery(queue: JobQueue, session: Session) -> None:
    job_id = queue.add_job(session, "t", {}, retry_after_seconds=0)
    queue.claim_jobs(session, "t")
    assert queue.move_job_to_processing(session, job_id) is True
    assert queue.claim_jobs(session, "t") == []  # 0 s lease, yet PROCESSING is never claimed


def test_delayed_job_is_not_claimable_until_due(
    queue: JobQueue, session_factory: sessionmaker[Session]
) -> None:
    with session_factory.begin() as session:
        job_id = queue.add_job(session, "later", {}, run_after_seconds=1.5)
    with session_factory.begin() as session:
        assert queue.claim_jobs(session, "later") == []
    time.sleep(1.7)
    with session_factory.begin() as session:
        assert [job.id for job in queue.claim_jobs(session, "later")] == [job_id]


def test_run_after_date_wins_over_seconds(queue: JobQueue, session: Session) -> None:
    past = datetime.now(timezone.utc) - timedelta(minutes=5)
    due = queue.add_job(session, "t", "due", run_after_seconds=3600, run_after_date=past)
    queue.add_job(
        session, "t", "not due", run_after_date=past + timedelta(days=1), run_after_seconds=0
    )
    assert [job.id for job in queue.claim_jobs(session, "t", max_jobs=5)] == [due]


def test_run_after_date_accepts_iso_strings(queue: JobQueue, session: Session) -> None:
    job_id = queue.add_job(session, "t", {}, run_after_date="2020-08-27T20:02:18.255Z")
    job = queue.get_job(session, job_id)
    assert job is not None
    assert job.start_after == datetime(2020, 8, 27, 20, 2, 18, 255000, tzinfo=timezone.utc)


def test_claims_are_fifo_by_start_after_then_id(queue: JobQueue, session: Session) -> None:
    base = datetime(2024, 1, 1, tzinfo=timezone.utc)
    third = queue.add_job(session, "fifo", 3, run_after_date=base + timedelta(seconds=3))
    first = queue.add_job(session, "fifo", 1, run_after_date=base + timedelta(seconds=1))
    second = queue.add_job(session, "fifo", 2, run_after_date=base + timedelta(seconds=2))
    bulk = queue.add_jobs(session, "fifo", [JobSpec(data=n) for n in range(4, 9)])
    claimed = queue.claim_jobs(session, "fifo", max_jobs=3)
    assert [job.id for job in claimed] == [first, second, third]
    # A bulk enqueue shares one start_after: the ids keep the order they were given in.
    claimed = queue.claim_jobs(session, "fifo", max_jobs=10)
    assert [job.id for job in claimed] == bulk
    assert [job.data for job in claimed] == [4, 5, 6, 7, 8]


def test_add_jobs_in_one_statement_with_per_job_settings(queue: JobQueue, session: Session) -> None:
    past = datetime(2024, 1, 1, tzinfo=timezone.utc)
    ids = queue.add_jobs(
        session,
        "bulk",
        [
            {"data": {"n": 1}},
            JobSpec(data={"n": 2}, attributes={"a": 1}, retry_after_seconds=None),
            {"data": {"n": 3}, "run_after_seconds": 3600},
            {"data": {"n": 4}, "run_after_date": past},
        ],
    )
    assert len(ids) == 4 and len(set(ids)) == 4
    jobs = [queue.get_job(session, job_id) for job_id in ids]
    assert [job.data for job in jobs if job] == [{"n": 1}, {"n": 2}, {"n": 3}, {"n": 4}]
    assert jobs[1] is not None and jobs[1].attributes == {"a": 1}
    assert jobs[1].retry_after_seconds is None
    assert jobs[3] is not None and jobs[3].start_after == past
    claimable = {job.id for job in queue.claim_jobs(session, "bulk", max_jobs=10)}
    assert claimable == {ids[0], ids[1], ids[3]}


def test_add_jobs_with_no_specs_writes_nothing(queue: JobQueue, session: Session) -> None:
    assert queue.add_jobs(session, "bulk", []) == []
    assert job_count(session) == 0


def test_transactional_claim_rolled_back_is_claimable_at_once(
    queue: JobQueue, session_factory: sessionmaker[Session]
) -> None:
    with session_factory.begin() as session:
        job_id = queue.add_job(session, "tx", {"order": 7}, retry_after_seconds=3600)
    with session_factory() as session:
        [job] = queue.claim_jobs(session, "tx")
        session.add(Order(id=7, note="written by the handler"))
        assert queue.move_job_to_done(session, job.id)
        session.rollback()  # the handler failed, or the process died
    with session_factory.begin() as session:
        assert session.get(Order, 7) is None
        [again] = queue.claim_jobs(session, "tx")
        assert again.id == job_id
        assert again.attempts == 1  # the rolled-back delivery left no trace


def test_transactional_claim_committed_completes_with_the_business_write(
    queue: JobQueue, session_factory: sessionmaker[Session]
) -> None:
    with session_factory.begin() as session:
        job_id = queue.add_job(session, "tx", {"order": 8})
    with session_factory.begin() as session:
        [job] = queue.claim_jobs(session, "tx")
        session.add(Order(id=8))
        queue.move_job_to_done(session, job.id)
    with session_factory() as session:
        assert session.get(Order, 8) is not None
        done = queue.get_job(session, job_id)
        assert done is not None and done.state is JobState.COMPLETED
        assert done.finished_at is not None


@pytest.mark.databases(
    "postgresql", "mariadb", reason="row locks (SELECT … FOR UPDATE SKIP LOCKED)"
)
def test_claimed_rows_stay_locked_until_the_claiming_transaction_ends(
    queue: JobQueue, engine: Engine
) -> None:
    factory = sessionmaker(engine)
    with factory.begin() as session:
        queue.add_job(session, "locked", {}, retry_after_seconds=0)
    holder = factory()
    try:
        [job] = queue.claim_jobs(holder, "locked")
        with factory.begin() as other:
            # The holder's lock hides the row even though a 0 s lease would expire.
            other.execute(text(LOCK_TIMEOUT_1S))
            assert queue.claim_jobs(other, "locked") == []
    finally:
        holder.rollback()
        holder.close()
    with factory.begin() as session:
        assert [again.id for again in queue.claim_jobs(session, "locked")] == [job.id]


def test_enqueue_never_commits_the_callers_session(queue: JobQueue, engine: Engine) -> None:
    with Session(engine) as session:
        queue.add_job(session, "t", {})
        queue.claim_jobs(session, "t")
        assert session.in_transaction()
        session.rollback()
    with Session(engine) as session:
        assert session.execute(select(Order)).first() is None
        assert job_count(session) == 0


def test_the_callers_own_flush_errors_stay_theirs(
    queue: JobQueue, session_factory: sessionmaker[Session]
) -> None:
    """A pending duplicate row fails as SQLAlchemy's IntegrityError, not as our error."""
    with session_factory.begin() as session:
        session.add(Order(id=3))
    with session_factory() as session:
        session.add(Order(id=3, note="duplicate"))
        with pytest.raises(IntegrityError):
            queue.add_job(session, "t", {})
        session.rollback()
        assert job_count(session) == 0
