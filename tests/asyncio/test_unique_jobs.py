"""AsyncJobQueue: priorities and unique jobs, on both async drivers (psycopg, asyncpg).

Mirrors ``tests/integration/test_unique_jobs.py`` and ``test_priorities.py`` where the
driver matters: the statements' results, and the unique violation's constraint name
(each driver reports it its own way) mapped to DuplicateJob.
"""

from __future__ import annotations

import asyncio
import uuid

import pytest
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from programma_sa import AsyncJobQueue, DuplicateJob, JobSpec, JobState, jobs_table

from ..app import Job

TABLE = jobs_table(Job)

pytestmark = pytest.mark.asyncio(loop_scope="session")


async def test_claims_by_priority(aqueue: AsyncJobQueue, async_session: AsyncSession) -> None:
    await aqueue.add_job(async_session, "t", "low")
    await aqueue.add_jobs(
        async_session, "t", [JobSpec("high", priority=2), JobSpec("mid", priority=1)]
    )
    claimed = await aqueue.claim_jobs(async_session, "t", max_jobs=3)
    assert [job.data for job in claimed] == ["high", "mid", "low"]
    assert [job.priority for job in claimed] == [2, 1, 0]


async def test_keep_and_replace_return_the_holder(
    aqueue: AsyncJobQueue, async_session: AsyncSession
) -> None:
    first = await aqueue.add_job(async_session, "t", {"v": 1}, unique_key="k")
    assert await aqueue.add_job(async_session, "t", {"v": 2}, unique_key="k") == first
    assert (await aqueue.get_job(async_session, first)).data == {"v": 1}  # type: ignore[union-attr]
    replaced = await aqueue.add_job(
        async_session, "t", {"v": 3}, unique_key="k", on_conflict="replace"
    )
    assert replaced == first
    job = await aqueue.get_job(async_session, first)
    assert job is not None
    assert (job.data, job.unique_states) == (
        {"v": 3},
        (JobState.CREATED, JobState.ACTIVE, JobState.PROCESSING),
    )


async def test_a_batch_maps_specs_to_holders(
    aqueue: AsyncJobQueue, async_session: AsyncSession
) -> None:
    held = await aqueue.add_job(async_session, "t", "held", unique_key="k2")
    ids = await aqueue.add_jobs(
        async_session,
        "t",
        [
            JobSpec("a", unique_key="k1"),
            JobSpec("b", unique_key="k1"),
            JobSpec("c", unique_key="k2"),
        ],
    )
    assert ids[0] == ids[1] and ids[2] == held


@pytest.mark.databases(
    "postgresql",
    "mariadb",
    reason="PostgreSQL and MariaDB name the held key; SQLite does not (test_sqlite.py)",
)
async def test_raise_is_duplicate_job_on_either_driver(
    aqueue: AsyncJobQueue, async_session: AsyncSession
) -> None:
    await aqueue.add_job(async_session, "t", {}, unique_key="order-7")
    with pytest.raises(DuplicateJob) as raised:
        async with async_session.begin_nested():
            await aqueue.add_job(async_session, "t", {}, unique_key="order-7", on_conflict="raise")
    assert raised.value.unique_key == "order-7"


async def test_concurrent_enqueues_of_one_key_leave_one_job(
    aqueue: AsyncJobQueue, async_sessions: async_sessionmaker[AsyncSession]
) -> None:
    async def enqueue_many() -> set[uuid.UUID]:
        ids = set()
        for n in range(25):
            async with async_sessions() as session, session.begin():
                ids.add(await aqueue.add_job(session, "t", {"n": n}, unique_key="k"))
        return ids

    results = await asyncio.gather(*(enqueue_many() for _ in range(8)))
    async with async_sessions() as session:
        count = await session.scalar(
            select(func.count()).select_from(TABLE).where(TABLE.c.unique_key == "k")
        )
    assert count == 1
    assert len(set().union(*results)) == 1
