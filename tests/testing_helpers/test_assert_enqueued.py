"""``programma_sa.testing.assert_enqueued``: what a test's session enqueued."""

from __future__ import annotations

import re

import pytest
from sqlalchemy.ext.asyncio import AsyncSession, create_async_engine
from sqlalchemy.orm import Session

from programma_sa import AsyncJobQueue, ConfigurationError, JobQueue, JobState
from programma_sa.testing import assert_enqueued, assert_enqueued_async

from ..app import Job
from ..asyncio.urls import async_url
from ..backends import ASYNC_DRIVERS


def test_returns_the_jobs_as_described(session: Session, queue: JobQueue) -> None:
    first = queue.add_job(session, "welcome", {"user": 7}, attributes={"tenant": "acme", "n": 1})
    queue.add_job(session, "welcome", {"user": 8})
    queue.add_job(session, "invoice", {"user": 7})

    assert [job.id for job in assert_enqueued(session, queue, "welcome", data={"user": 7})] == [
        first
    ]
    assert len(assert_enqueued(session, queue, "welcome")) == 2
    assert len(assert_enqueued(session, queue, "welcome", count=2, state="created")) == 2
    # attributes: the keys given, whatever else the job carries.
    [job] = assert_enqueued(session, queue, "welcome", attributes={"tenant": "acme"})
    assert job.id == first and job.state is JobState.CREATED
    assert assert_enqueued(session, queue, "welcome", data={"user": 9}, count=0) == []


def test_a_failure_lists_what_was_enqueued(session: Session, queue: JobQueue) -> None:
    job_id = queue.add_job(session, "welcome", {"user": 7})
    queue.add_job(session, "invoice", {"user": 7}, attributes={"tenant": "acme"})

    with pytest.raises(AssertionError) as failed:
        assert_enqueued(session, queue, "welcome", data={"user": 8}, state=JobState.CREATED)

    message = str(failed.value)
    first_line, *jobs = message.splitlines()
    assert first_line == (
        "expected at least 1 job of topic 'welcome' with data {'user': 8} in state created, "
        "found 0; the session sees these jobs (oldest first):"
    )
    line = rf"  {job_id} \[welcome\] created, start_after \S+, "
    assert re.fullmatch(line + r"data=\{'user': 7\}, attributes=\{\}", jobs[0]), jobs[0]
    assert "[invoice] created" in jobs[1] and "attributes={'tenant': 'acme'}" in jobs[1]
    assert len(jobs) == 2


def test_count_is_exact(session: Session, queue: JobQueue) -> None:
    queue.add_job(session, "welcome", {"user": 7})
    assert assert_enqueued(session, queue, "welcome", attributes={"tenant": "acme"}, count=0) == []
    with pytest.raises(AssertionError) as failed:
        assert_enqueued(session, queue, "welcome", count=0)
    assert str(failed.value).startswith("expected 0 job(s) of topic 'welcome', found 1;")
    with pytest.raises(AssertionError) as failed:
        assert_enqueued(session, queue, "welcome", count=2)
    assert str(failed.value).startswith("expected 2 job(s) of topic 'welcome', found 1;")


def test_no_job_at_all_says_so(session: Session, queue: JobQueue) -> None:
    with pytest.raises(AssertionError) as failed:
        assert_enqueued(session, queue, "welcome")
    assert str(failed.value) == (
        "expected at least 1 job of topic 'welcome', found 0; the session sees no job at all"
    )


def test_a_bad_count_is_refused(session: Session, queue: JobQueue) -> None:
    with pytest.raises(ConfigurationError) as refused:
        assert_enqueued(session, queue, "welcome", count=-1)
    assert str(refused.value) == "count must be an int >= 0 or None, got -1"


@pytest.mark.asyncio
async def test_assert_enqueued_async(database_url: str) -> None:
    async_engine = create_async_engine(async_url(database_url, ASYNC_DRIVERS[0]))
    queue = AsyncJobQueue(Job)
    try:
        async with AsyncSession(async_engine) as session:
            job_id = await queue.add_job(session, "welcome", {"user": 7})
            [job] = await assert_enqueued_async(session, queue, "welcome", data={"user": 7})
            assert job.id == job_id
            with pytest.raises(AssertionError) as failed:
                await assert_enqueued_async(session, queue, "welcome", data={"user": 8})
            assert str(failed.value).startswith(
                "expected at least 1 job of topic 'welcome' with data {'user': 8}, found 0; "
                f"the session sees these jobs (oldest first):\n  {job_id} [welcome] created"
            )
            await session.rollback()
    finally:
        await async_engine.dispose()
