"""Steering one job: moves, deletes, attributes, retry timeout, start date, get_job."""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta, timezone

import pytest
from sqlalchemy.orm import Session

from programma_sa import JobQueue, JobState

from ..helpers import job_count


@pytest.mark.parametrize(
    ("move", "state"),
    [
        ("move_job_to_processing", JobState.PROCESSING),
        ("move_job_to_done", JobState.COMPLETED),
        ("move_job_to_failed", JobState.FAILED),
    ],
)
def test_moves_set_the_state(queue: JobQueue, session: Session, move: str, state: JobState) -> None:
    job_id = queue.add_job(session, "t", {})
    assert getattr(queue, move)(session, job_id) is True
    job = queue.get_job(session, job_id)
    assert job is not None and job.state is state
    finished = state in (JobState.COMPLETED, JobState.FAILED)
    assert (job.finished_at is not None) is finished


@pytest.mark.parametrize("move", ["move_job_to_done", "move_job_to_failed"])
def test_finishing_with_delete_removes_the_row(
    queue: JobQueue, session: Session, move: str
) -> None:
    job_id = queue.add_job(session, "t", {})
    assert getattr(queue, move)(session, job_id, delete=True) is True
    assert queue.get_job(session, job_id) is None
    assert job_count(session) == 0


def test_delete_job(queue: JobQueue, session: Session) -> None:
    job_id = queue.add_job(session, "t", {})
    assert queue.delete_job(session, str(job_id)) is True
    assert queue.delete_job(session, job_id) is False


@pytest.mark.parametrize(
    "call",
    [
        lambda q, s, i: q.move_job_to_processing(s, i),
        lambda q, s, i: q.move_job_to_done(s, i),
        lambda q, s, i: q.move_job_to_failed(s, i, delete=True),
        lambda q, s, i: q.delete_job(s, i),
        lambda q, s, i: q.set_attributes(s, i, {"a": 1}),
        lambda q, s, i: q.set_retry_after_seconds(s, i, 5),
        lambda q, s, i: q.set_job_start_date(s, i, datetime.now(timezone.utc)),
    ],
)
def test_unknown_id_changes_nothing_and_returns_false(
    queue: JobQueue, session: Session, call
) -> None:  # type: ignore[no-untyped-def]
    queue.add_job(session, "t", {})
    assert call(queue, session, uuid.uuid4()) is False
    assert queue.get_job(session, uuid.uuid4()) is None
    assert job_count(session) == 1


def test_set_attributes_merges_top_level_keys(queue: JobQueue, session: Session) -> None:
    job_id = queue.add_job(session, "t", {}, attributes={"attempts": 1, "keep": "me"})
    assert queue.set_attributes(session, job_id, {"attempts": 2, "error": "boom"})
    job = queue.get_job(session, job_id)
    assert job is not None
    assert job.attributes == {"attempts": 2, "keep": "me", "error": "boom"}


def test_set_attributes_replaces_a_nested_object_and_keeps_nulls(
    queue: JobQueue, session: Session
) -> None:
    """PostgreSQL's ``||`` on every database: a key's new value replaces the old one
    whole (no deep merge), and a key set to null stays, null (SQLite's ``json_patch``
    and MariaDB's ``JSON_MERGE_PATCH`` would do neither: their drivers merge otherwise)."""
    job_id = queue.add_job(
        session, "t", 1, attributes={"keep": True, "nested": {"a": 1}, "gone": "x"}
    )
    queue.set_attributes(session, job_id, {"nested": {"b": None}, "gone": None, "n": 1.5})
    job = queue.get_job(session, job_id)
    assert job is not None
    assert job.attributes == {"keep": True, "nested": {"b": None}, "gone": None, "n": 1.5}


def test_set_retry_after_seconds_re_measures_an_active_lease(
    queue: JobQueue, session: Session
) -> None:
    job_id = queue.add_job(session, "t", {}, retry_after_seconds=30)
    [claimed] = queue.claim_jobs(session, "t")
    assert queue.set_retry_after_seconds(session, job_id, 300)
    job = queue.get_job(session, job_id)
    assert job is not None and job.started_at is not None and job.start_after is not None
    assert job.retry_after_seconds == 300
    assert job.start_after - job.started_at == timedelta(seconds=300)
    # Shortened to zero, the lease has run out: the job is claimable again.
    assert queue.set_retry_after_seconds(session, job_id, 0)
    [again] = queue.claim_jobs(session, "t")
    assert again.id == claimed.id and again.attempts == 2


def test_set_retry_after_seconds_on_a_waiting_job_keeps_its_start(
    queue: JobQueue, session: Session
) -> None:
    when = datetime(2030, 1, 1, tzinfo=timezone.utc)
    job_id = queue.add_job(session, "t", {}, run_after_date=when)
    assert queue.set_retry_after_seconds(session, job_id, None)
    job = queue.get_job(session, job_id)
    assert job is not None and job.start_after == when and job.retry_after_seconds is None


def test_set_job_start_date_delays_and_releases(queue: JobQueue, session: Session) -> None:
    job_id = queue.add_job(session, "t", {})
    assert queue.set_job_start_date(
        session, job_id, datetime.now(timezone.utc) + timedelta(hours=1)
    )
    assert queue.claim_jobs(session, "t") == []
    assert queue.set_job_start_date(session, job_id, "2001-01-01T00:00:00+00:00")
    assert [job.id for job in queue.claim_jobs(session, "t")] == [job_id]


def test_get_job_returns_every_column(queue: JobQueue, session: Session) -> None:
    job_id = queue.add_job(
        session, "detail", [1, "two"], attributes={"k": "v"}, retry_after_seconds=7
    )
    job = queue.get_job(session, job_id)
    assert job is not None
    assert (job.id, job.topic, job.data, job.attributes) == (
        job_id,
        "detail",
        [1, "two"],
        {"k": "v"},
    )
    assert job.state is JobState.CREATED
    assert job.retry_after_seconds == 7 and job.attempts == 0
    assert job.created_at is not None and job.start_after is not None
    assert job.started_at is None and job.finished_at is None
