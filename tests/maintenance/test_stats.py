"""maintenance.stats against hand-built tables: every field of every topic checked."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from datetime import datetime, timedelta

import pytest
from sqlalchemy import Engine
from sqlalchemy.ext.asyncio import AsyncSession, create_async_engine
from sqlalchemy.orm import Session

from programma_sa import (
    AsyncJobQueue,
    InvalidJobInput,
    JobQueue,
    JobState,
    QueueStats,
    TopicStats,
    jobs_table,
)
from programma_sa.maintenance import stats, stats_async

from ..app import Job
from ..asyncio.urls import DRIVERS, async_url
from .jobs import db_now, finished, put

SECOND = timedelta(seconds=1)


def _mail_and_sms(session: Session, queue: JobQueue) -> datetime:
    """The fixture every stats test reads; returns the database time it was built at."""
    now = db_now(session)
    # mail: CREATED — two due (10 s and 60 s ago), one not yet (in an hour).
    put(session, queue, "mail", JobState.CREATED, start_after=now - 10 * SECOND)
    put(session, queue, "mail", JobState.CREATED, start_after=now - 60 * SECOND)
    put(session, queue, "mail", JobState.CREATED, start_after=now + 3600 * SECOND)
    # mail: ACTIVE — a lease running (30 s left), one expired 5 s ago, one without
    # a visibility timeout (start_after NULL: never redelivered).
    put(session, queue, "mail", JobState.ACTIVE, start_after=now + 30 * SECOND, started_at=now)
    put(
        session,
        queue,
        "mail",
        JobState.ACTIVE,
        start_after=now - 5 * SECOND,
        started_at=now - 35 * SECOND,
    )
    put(session, queue, "mail", JobState.ACTIVE, started_at=now - 999 * SECOND)
    # mail: PROCESSING since claims 100 s and 20 s ago.
    put(session, queue, "mail", JobState.PROCESSING, started_at=now - 100 * SECOND)
    put(session, queue, "mail", JobState.PROCESSING, started_at=now - 20 * SECOND)
    # mail: COMPLETED — three within the 5-minute window, two hours ago; FAILED —
    # one in the window, two a day ago.
    for ago in (10, 20, 30):
        finished(session, queue, "mail", JobState.COMPLETED, 1, ago * SECOND)
    finished(session, queue, "mail", JobState.COMPLETED, 2, timedelta(hours=2))
    finished(session, queue, "mail", JobState.FAILED, 1, 60 * SECOND)
    finished(session, queue, "mail", JobState.FAILED, 2, timedelta(days=1))
    # sms: one CREATED job not yet due, one old COMPLETED job.
    put(session, queue, "sms", JobState.CREATED, start_after=now + 60 * SECOND)
    finished(session, queue, "sms", JobState.COMPLETED, 1, timedelta(days=3))
    return now


def _expected_mail(result: QueueStats, built_at: datetime) -> TopicStats:
    # Ages are measured at the stats statement's own clock reading, a moment after
    # the fixture's: add that gap to the fixture's ages.
    gap = (result.measured_at - built_at).total_seconds()
    assert 0 <= gap < 60
    return TopicStats(
        topic="mail",
        created=3,
        active=3,
        processing=2,
        completed=5,
        failed=3,
        due=3,  # two CREATED + the expired lease
        lag_seconds=pytest.approx(60 + gap),  # type: ignore[arg-type]
        expired_leases=1,
        oldest_processing_seconds=pytest.approx(100 + gap),  # type: ignore[arg-type]
        completed_recently=3,
        failed_recently=1,
    )


SMS = TopicStats(topic="sms", created=1, completed=1)


def test_every_field_of_every_topic(queue: JobQueue, session: Session) -> None:
    built_at = _mail_and_sms(session, queue)
    result = stats(session, queue)
    assert result.table == "programma_jobs"
    assert result.window_seconds == 300.0
    assert result.topics == (_expected_mail(result, built_at), SMS)
    assert result.topic("mail").counts == {
        JobState.CREATED: 3,
        JobState.ACTIVE: 3,
        JobState.PROCESSING: 2,
        JobState.COMPLETED: 5,
        JobState.FAILED: 3,
        JobState.CANCELLED: 0,
    }


def test_one_topic(queue: JobQueue, session: Session) -> None:
    built_at = _mail_and_sms(session, queue)
    result = stats(session, queue, "mail")
    assert result.topics == (_expected_mail(result, built_at),)
    assert stats(session, queue, "sms").topics == (SMS,)


def test_the_window_decides_what_is_recent(queue: JobQueue, session: Session) -> None:
    _mail_and_sms(session, queue)
    mail = stats(session, queue, "mail", window_seconds=15).topic("mail")
    assert (mail.completed_recently, mail.failed_recently) == (1, 0)
    mail = stats(session, queue, "mail", window_seconds=3 * 3600).topic("mail")
    assert (mail.completed_recently, mail.failed_recently) == (5, 1)
    mail = stats(session, queue, "mail", window_seconds=0).topic("mail")
    assert (mail.completed_recently, mail.failed_recently) == (0, 0)


def test_an_unknown_topic_reads_as_zeros(queue: JobQueue, session: Session) -> None:
    _mail_and_sms(session, queue)
    result = stats(session, queue, "no-such-topic")
    assert result.topics == (TopicStats("no-such-topic"),)
    assert result.topic("no-such-topic").counts == dict.fromkeys(JobState, 0)
    assert stats(session, queue).topic("no-such-topic") == TopicStats("no-such-topic")


def test_an_empty_table(queue: JobQueue, session: Session) -> None:
    result = stats(session, queue)
    assert result.topics == ()
    assert abs((result.measured_at - db_now(session)).total_seconds()) < 60


def test_the_queue_the_model_or_the_table(queue: JobQueue, session: Session) -> None:
    _mail_and_sms(session, queue)
    by_queue = stats(session, queue).topic("sms")
    assert stats(session, Job).topic("sms") == by_queue
    assert stats(session, jobs_table(Job)).topic("sms") == by_queue
    assert stats(session, AsyncJobQueue(Job)).topic("sms") == by_queue


def test_stats_neither_commits_nor_ends_the_transaction(queue: JobQueue, session: Session) -> None:
    put(session, queue, "mail", JobState.CREATED)
    stats(session, queue)
    assert session.in_transaction()
    assert stats(session, queue).topic("mail").created == 1  # same transaction, still there


@pytest.mark.parametrize(
    ("call", "message"),
    [
        ({"topic": ""}, "topic must not be empty"),
        ({"topic": 7}, "topic must be a string, got int"),
        ({"window_seconds": -1}, "window_seconds must not be negative, got -1"),
        ({"window_seconds": float("nan")}, "window_seconds must be finite, got nan"),
        ({"window_seconds": "5m"}, "window_seconds must be a number of seconds, got '5m'"),
        ({"window_seconds": None}, "window_seconds must be a number of seconds, got None"),
    ],
)
def test_bad_arguments_are_refused(
    queue: JobQueue, session: Session, call: dict[str, object], message: str
) -> None:
    with pytest.raises(InvalidJobInput, match=message):
        stats(session, queue, **call)  # type: ignore[arg-type]


@pytest.mark.parametrize("driver", DRIVERS)
def test_stats_async_reads_what_stats_reads(
    queue: JobQueue, engine: Engine, database_url: str, driver: str
) -> None:
    with Session(engine) as session, session.begin():
        _mail_and_sms(session, queue)
    with Session(engine) as session:
        expected = stats(session, queue)

    async def read() -> QueueStats:
        async_engine = create_async_engine(async_url(database_url, driver))
        try:
            async with AsyncSession(async_engine) as session:
                return await stats_async(session, AsyncJobQueue(Job))
        finally:
            await async_engine.dispose()

    result = asyncio.run(read())
    # Everything is equal, but the ages: they grew by the time between the reads.
    gap = (result.measured_at - expected.measured_at).total_seconds()
    assert [_without_ages(t) for t in result.topics] == [_without_ages(t) for t in expected.topics]
    for got, then in zip(result.topics, expected.topics, strict=True):
        for age in ("lag_seconds", "oldest_processing_seconds"):
            before = getattr(then, age)
            assert getattr(got, age) == (pytest.approx(before + gap) if before else 0.0)


def _without_ages(topic: TopicStats) -> TopicStats:
    return replace(topic, lag_seconds=0.0, oldest_processing_seconds=0.0)
