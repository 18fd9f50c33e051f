"""``programma_sa.testing.run_job``: a job's handler inside the test's own transaction."""

from __future__ import annotations

import pytest
from sqlalchemy import Engine, select
from sqlalchemy.ext.asyncio import AsyncSession, create_async_engine
from sqlalchemy.orm import Session

from programma_sa import (
    AsyncJobContext,
    AsyncJobQueue,
    JobContext,
    JobQueue,
    JobState,
    PassResult,
    RetryPolicy,
)
from programma_sa.testing import run_job, run_job_async

from ..app import Job, Order
from ..asyncio.urls import async_url
from ..backends import ASYNC_DRIVERS


def ship(ctx: JobContext) -> None:
    assert ctx.session is not None  # run_job runs it as transaction mode does
    ctx.session.add(Order(id=ctx.job.data["order"]))


def test_runs_the_next_due_job_in_the_sessions_transaction_without_committing(
    engine: Engine, queue: JobQueue
) -> None:
    with Session(engine) as session:
        first = queue.add_job(session, "ship", {"order": 1})
        queue.add_job(session, "ship", {"order": 2})

        run = run_job(session, queue, ship, "ship")

        assert run.error is None and run.result == PassResult(claimed=1, completed=1)
        assert run.job is not None and run.job.id == first  # FIFO, as the worker claims
        assert run.job.state is JobState.COMPLETED and run.job.attempts == 1
        assert session.scalars(select(Order.id)).all() == [1]
        assert session.in_transaction()
        session.rollback()
    # Nothing was committed: the rollback took the jobs and the order back.
    with Session(engine) as session:
        assert session.scalars(select(Order.id)).all() == []
        assert queue.get_job(session, first) is None


def test_a_failing_handler_is_recorded_as_the_worker_records_it(
    session: Session, queue: JobQueue
) -> None:
    job_id = queue.add_job(session, "ship", {"order": 3})

    def failing(ctx: JobContext) -> None:
        ship(ctx)
        raise RuntimeError("the carrier is down")

    run = run_job(session, queue, failing, "ship", retry=RetryPolicy(max_attempts=1))

    assert isinstance(run.error, RuntimeError) and str(run.error) == "the carrier is down"
    assert run.result == PassResult(claimed=1, failed=1)
    assert run.job is not None and run.job.id == job_id and run.job.state is JobState.FAILED
    assert run.job.attributes["last_error"]["message"] == "the carrier is down"
    assert session.scalars(select(Order.id)).all() == []  # its write rolled back


def test_no_due_job_fails_listing_the_jobs(session: Session, queue: JobQueue) -> None:
    job_id = queue.add_job(session, "ship", {"order": 4}, run_after_seconds=3600)

    with pytest.raises(AssertionError) as failed:
        run_job(session, queue, ship, "ship")

    first_line, listed = str(failed.value).splitlines()
    assert first_line == (
        "no job of topic 'ship' is due; the session sees these jobs (oldest first):"
    )
    assert listed.startswith(f"  {job_id} [ship] created, start_after ")
    job = queue.get_job(session, job_id)
    assert job is not None and job.state is JobState.CREATED and job.attempts == 0


@pytest.mark.asyncio
async def test_run_job_async(database_url: str, engine: Engine) -> None:
    async_engine = create_async_engine(async_url(database_url, ASYNC_DRIVERS[-1]))
    queue = AsyncJobQueue(Job)

    async def ship_async(ctx: AsyncJobContext) -> None:
        assert ctx.session is not None
        ctx.session.add(Order(id=ctx.job.data["order"]))

    try:
        async with AsyncSession(async_engine) as session:
            job_id = await queue.add_job(session, "ship", {"order": 5})
            run = await run_job_async(session, queue, ship_async, "ship")
            assert run.error is None and run.result == PassResult(claimed=1, completed=1)
            assert run.job is not None and run.job.id == job_id
            assert run.job.state is JobState.COMPLETED
            assert (await session.scalars(select(Order.id))).all() == [5]
            with pytest.raises(AssertionError) as failed:
                await run_job_async(session, queue, ship_async, "ship")
            assert str(failed.value).startswith("no job of topic 'ship' is due;")
            await session.rollback()
    finally:
        await async_engine.dispose()
    with Session(engine) as session:
        assert session.scalars(select(Order.id)).all() == []
