"""AsyncJobQueue in the caller's AsyncSession: enqueue beside business rows, claims, leases.

Mirrors ``tests/integration/test_enqueue_and_claim.py``; every test runs once per
async driver (psycopg, asyncpg).
"""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta, timezone

import pytest
from psycopg import sql
from sqlalchemy import create_engine, select, text
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from sqlalchemy.pool import NullPool

from programma_sa import AsyncJobQueue, JobSpec, JobState, jobs_table
from programma_sa._drivers.postgresql import notify_channel

from ..app import Job, Order
from ..backends import LOCK_TIMEOUT_1S
from ..helpers import job_count

pytestmark = pytest.mark.asyncio(loop_scope="session")


async def test_enqueue_rolled_back_with_business_row_leaves_nothing(
    aqueue: AsyncJobQueue, async_sessions: async_sessionmaker[AsyncSession]
) -> None:
    async with async_sessions() as session:
        session.add(Order(id=1, note="rolled back"))
        await session.flush()
        await aqueue.add_job(session, "receipts", {"order": 1})
        assert await session.run_sync(job_count) == 1  # both rows reached the server
        await session.rollback()
    async with async_sessions() as session:
        assert await session.get(Order, 1) is None
        assert await session.run_sync(job_count) == 0


async def test_enqueue_committed_with_business_row_keeps_both(
    aqueue: AsyncJobQueue, async_sessions: async_sessionmaker[AsyncSession]
) -> None:
    async with async_sessions.begin() as session:
        session.add(Order(id=2, note="kept"))
        job_id = await aqueue.add_job(
            session, "receipts", {"order": 2}, attributes={"source": "web"}
        )
    async with async_sessions() as session:
        assert await session.get(Order, 2) is not None
        job = await aqueue.get_job(session, job_id)
    assert job is not None
    assert (job.topic, job.data, job.attributes) == ("receipts", {"order": 2}, {"source": "web"})
    assert job.state is JobState.CREATED
    assert job.attempts == 0 and job.retry_after_seconds == 30


async def test_a_claim_returns_each_job_s_attributes_empty_or_not(
    aqueue: AsyncJobQueue, async_session: AsyncSession
) -> None:
    plain = await aqueue.add_job(async_session, "t", {"n": 1})
    tagged = await aqueue.add_job(async_session, "t", {"n": 2}, attributes={"source": "web"})
    claimed = {job.id: job for job in await aqueue.claim_jobs(async_session, "t", max_jobs=2)}
    # Both drivers: {} comes back from the claim as NULL and is read as {}; other
    # attributes are decoded (asyncpg hands back JSON text that SQLAlchemy decodes).
    assert claimed[plain].attributes == {}
    assert claimed[tagged].attributes == {"source": "web"}


async def test_claim_marks_active_counts_attempt_and_sets_lease(
    aqueue: AsyncJobQueue, async_session: AsyncSession
) -> None:
    job_id = await aqueue.add_job(async_session, "t", {"n": 1}, retry_after_seconds=60)
    [claimed] = await aqueue.claim_jobs(async_session, "t")
    assert claimed.id == job_id
    assert claimed.state is JobState.ACTIVE and claimed.attempts == 1
    assert claimed.started_at is not None and claimed.start_after is not None
    assert claimed.start_after - claimed.started_at == timedelta(seconds=60)


async def test_claims_are_fifo_and_bulk_enqueue_keeps_its_order(
    aqueue: AsyncJobQueue, async_session: AsyncSession
) -> None:
    base = datetime(2024, 1, 1, tzinfo=timezone.utc)
    second = await aqueue.add_job(async_session, "fifo", 2, run_after_date=base.replace(second=2))
    first = await aqueue.add_job(async_session, "fifo", 1, run_after_date=base.replace(second=1))
    bulk = await aqueue.add_jobs(
        async_session,
        "fifo",
        [JobSpec(data=3), {"data": 4, "retry_after_seconds": None}, {"data": 5}],
    )
    assert await aqueue.add_jobs(async_session, "fifo", []) == []
    await aqueue.add_job(async_session, "fifo", "later", run_after_seconds=3600)
    await aqueue.add_job(async_session, "other-topic", "not mine")
    claimed = await aqueue.claim_jobs(async_session, "fifo", max_jobs=10)
    assert [job.id for job in claimed] == [first, second, *bulk]
    assert [job.data for job in claimed] == [1, 2, 3, 4, 5]
    assert claimed[3].retry_after_seconds is None and claimed[3].start_after is None


async def test_visibility_timeout_redelivers_only_after_it_expires(
    aqueue: AsyncJobQueue, async_sessions: async_sessionmaker[AsyncSession]
) -> None:
    async with async_sessions.begin() as session:
        job_id = await aqueue.add_job(session, "lease", {}, retry_after_seconds=2)
    async with async_sessions.begin() as session:
        assert [job.id for job in await aqueue.claim_jobs(session, "lease")] == [job_id]
    # Leased: not claimable again while the timeout runs.
    async with async_sessions.begin() as session:
        assert await aqueue.claim_jobs(session, "lease") == []
    await asyncio.sleep(2.2)
    async with async_sessions.begin() as session:
        [again] = await aqueue.claim_jobs(session, "lease")
    assert again.id == job_id and again.attempts == 2


async def test_transactional_claim_rolled_back_is_claimable_at_once(
    aqueue: AsyncJobQueue, async_sessions: async_sessionmaker[AsyncSession]
) -> None:
    async with async_sessions.begin() as session:
        job_id = await aqueue.add_job(session, "tx", {"order": 7}, retry_after_seconds=3600)
    async with async_sessions() as session:
        [job] = await aqueue.claim_jobs(session, "tx")
        session.add(Order(id=7, note="written by the handler"))
        await session.flush()
        assert await aqueue.move_job_to_done(session, job.id)
        await session.rollback()  # the handler failed, or the task was cancelled
    async with async_sessions.begin() as session:
        assert await session.get(Order, 7) is None
        [again] = await aqueue.claim_jobs(session, "tx")
    assert again.id == job_id
    assert again.attempts == 1  # the rolled-back delivery left no trace


async def test_transactional_claim_committed_completes_with_the_business_write(
    aqueue: AsyncJobQueue, async_sessions: async_sessionmaker[AsyncSession]
) -> None:
    async with async_sessions.begin() as session:
        job_id = await aqueue.add_job(session, "tx", {"order": 8})
    async with async_sessions.begin() as session:
        [job] = await aqueue.claim_jobs(session, "tx")
        session.add(Order(id=8))
        await aqueue.move_job_to_done(session, job.id)
    async with async_sessions() as session:
        assert await session.get(Order, 8) is not None
        done = await aqueue.get_job(session, job_id)
    assert done is not None and done.state is JobState.COMPLETED
    assert done.finished_at is not None


@pytest.mark.databases(
    "postgresql", "mariadb", reason="row locks (SELECT … FOR UPDATE SKIP LOCKED)"
)
async def test_claimed_rows_stay_locked_until_the_claiming_transaction_ends(
    aqueue: AsyncJobQueue, async_sessions: async_sessionmaker[AsyncSession]
) -> None:
    async with async_sessions.begin() as session:
        await aqueue.add_job(session, "locked", {}, retry_after_seconds=0)
    async with async_sessions() as holder:
        [job] = await aqueue.claim_jobs(holder, "locked")
        async with async_sessions.begin() as other:
            # The holder's lock hides the row even though a 0 s lease has run out.
            await other.execute(text(LOCK_TIMEOUT_1S))
            assert await aqueue.claim_jobs(other, "locked") == []
        await holder.rollback()
    async with async_sessions.begin() as session:
        assert [again.id for again in await aqueue.claim_jobs(session, "locked")] == [job.id]


async def test_the_queue_never_commits_the_callers_session(
    aqueue: AsyncJobQueue, async_sessions: async_sessionmaker[AsyncSession]
) -> None:
    async with async_sessions() as session:
        job_id = await aqueue.add_job(session, "t", {})
        await aqueue.add_jobs(session, "t", [JobSpec(data=1)])
        await aqueue.claim_jobs(session, "t")
        await aqueue.set_attributes(session, job_id, {"k": 1})
        await aqueue.move_job_to_done(session, job_id)
        assert session.in_transaction()
        await session.rollback()
    async with async_sessions() as session:
        assert (await session.execute(select(Order))).first() is None
        assert await session.run_sync(job_count) == 0


@pytest.mark.postgresql_only("LISTEN/NOTIFY")
async def test_enqueue_notifies_on_commit_only(
    aqueue: AsyncJobQueue, async_sessions: async_sessionmaker[AsyncSession], database_url: str
) -> None:
    """``pg_notify`` inside the enqueue runs on both async drivers and obeys the transaction."""
    # A connection of its own (no pool), so its LISTEN dies with it.
    listen_engine = create_engine(database_url, poolclass=NullPool)
    try:
        with listen_engine.connect().execution_options(isolation_level="AUTOCOMMIT") as listener:
            channel = sql.Identifier(notify_channel(jobs_table(Job)))
            listening = listener.connection.driver_connection
            assert listening is not None
            listening.execute(sql.SQL("LISTEN {}").format(channel))
            async with async_sessions() as session:
                await aqueue.add_job(session, "rolled-back-topic", {})
                await session.rollback()
            async with async_sessions.begin() as session:
                await aqueue.add_jobs(
                    session, "committed-topic", [JobSpec(data=1), JobSpec(data=2)]
                )
            # The rolled-back enqueue was never announced: the first notification is the
            # committed one, once per topic however many jobs.
            received = list(listening.notifies(timeout=5, stop_after=1))
            assert [note.payload for note in received] == ["committed-topic"]
            assert list(listening.notifies(timeout=0.2)) == []
    finally:
        listen_engine.dispose()


async def test_the_callers_own_flush_errors_stay_theirs(
    aqueue: AsyncJobQueue, async_sessions: async_sessionmaker[AsyncSession]
) -> None:
    """A pending duplicate row fails as SQLAlchemy's IntegrityError, not as our error."""
    async with async_sessions.begin() as session:
        session.add(Order(id=3))
    async with async_sessions() as session:
        session.add(Order(id=3, note="duplicate"))
        with pytest.raises(IntegrityError):
            await aqueue.add_job(session, "t", {})
        await session.rollback()
        assert await session.run_sync(job_count) == 0
