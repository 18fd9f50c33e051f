"""AsyncJobQueue's control of jobs: the same outcomes and messages as JobQueue's
(``tests/maintenance/test_control.py``), once per async driver."""

from __future__ import annotations

import asyncio
import time
import uuid

import pytest
from sqlalchemy import update
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from programma_sa import (
    AsyncJobQueue,
    CancelOutcome,
    InvalidJobInput,
    JobNotFound,
    JobState,
    WaitTimeout,
)
from programma_sa._execute import execute_async

from ..app import Job

pytestmark = pytest.mark.asyncio(loop_scope="session")
TABLE = Job.__table__


async def test_cancel_rerun_and_list(aqueue: AsyncJobQueue, async_session: AsyncSession) -> None:
    first = await aqueue.add_job(async_session, "t", {"n": 1})
    second = await aqueue.add_job(async_session, "t", {"n": 2}, attributes={"tenant": "a"})
    assert await aqueue.cancel_job(async_session, first) is CancelOutcome.CANCELLED
    assert await aqueue.cancel_job(async_session, first) is CancelOutcome.ALREADY_FINISHED
    page = await aqueue.list_jobs(async_session, topic="t", limit=1)
    assert [job.id for job in page.jobs] == [second] and page.next_cursor == second
    rest = await aqueue.list_jobs(async_session, topic="t", cursor=page.next_cursor)
    assert [(job.id, job.state) for job in rest.jobs] == [(first, JobState.CANCELLED)]
    assert rest.next_cursor is None
    assert [
        j.id for j in (await aqueue.list_jobs(async_session, attributes={"tenant": "a"})).jobs
    ] == [second]
    assert await aqueue.count_jobs(async_session, topic="t") == 2
    assert await aqueue.count_jobs(async_session, state=["cancelled", "failed"]) == 1
    assert await aqueue.retry_job(async_session, first) is None
    job = await aqueue.get_job(async_session, first)
    assert job is not None and (job.state, job.attempts) == (JobState.CREATED, 0)
    await async_session.execute(update(TABLE).where(TABLE.c.id == second).values(state="failed"))
    assert await aqueue.retry_jobs(async_session, topic="t") == [second]


async def test_bad_input_gets_the_sync_messages(
    aqueue: AsyncJobQueue, async_session: AsyncSession
) -> None:
    missing = uuid.uuid4()
    with pytest.raises(JobNotFound, match=f"^no job with id {missing}$"):
        await aqueue.cancel_job(async_session, missing)
    with pytest.raises(
        InvalidJobInput,
        match=r"^state must be one of created, active, processing, completed, failed, "
        r"cancelled; got 'bogus'$",
    ):
        await aqueue.list_jobs(async_session, state="bogus")
    with pytest.raises(InvalidJobInput, match=r"^error_type must be a non-empty string; got ''$"):
        await aqueue.count_jobs(async_session, error_type="")
    with pytest.raises(InvalidJobInput, match=r"^limit must be an int from 1 to 10000; got 0$"):
        await aqueue.retry_jobs(async_session, limit=0)


async def test_pause_and_resume(aqueue: AsyncJobQueue, async_session: AsyncSession) -> None:
    job_id = await aqueue.add_job(async_session, "t", {})
    assert await aqueue.pause_topic(async_session, "t") is True
    assert [paused.topic for paused in await aqueue.paused_topics(async_session)] == ["t"]
    assert await aqueue.claim_jobs(async_session, "t") == []
    assert await aqueue.resume_topic(async_session, "t") is True
    assert [job.id for job in await aqueue.claim_jobs(async_session, "t")] == [job_id]


@pytest.mark.postgresql_only("woken by NOTIFY; SQLite waits by polling")
async def test_waiting_on_an_async_engine(
    aqueue: AsyncJobQueue,
    async_engine: AsyncEngine,
    async_sessions: async_sessionmaker[AsyncSession],
) -> None:
    async with async_sessions() as session, session.begin():
        job_id = await aqueue.add_job(session, "t", {})

    async def complete_later() -> None:
        await asyncio.sleep(0.3)
        async with async_sessions() as session, session.begin():
            (job,) = await aqueue.claim_jobs(session, "t")
        async with async_engine.begin() as connection:
            await execute_async(connection, aqueue.operations.complete_unchanged([job], ["[1]"]))

    started = time.monotonic()
    completer = asyncio.create_task(complete_later())
    job = await aqueue.wait_for_job(async_engine, job_id, timeout=20, poll_interval=10)
    await completer
    assert time.monotonic() - started < 5  # the announcement, not the 10 s poll
    assert job.state is JobState.COMPLETED and job.result == [1]
    async with async_sessions() as session, session.begin():
        other = await aqueue.add_job(session, "t", {})
    with pytest.raises(WaitTimeout, match=f"^job {other} did not finish within 0.2 s"):
        await aqueue.wait_for_job(async_engine, other, timeout=0.2, poll_interval=0.1)
