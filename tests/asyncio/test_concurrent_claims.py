"""Eight async claimers, each on its own AsyncSession and connection: every job exactly once.

Mirrors ``tests/integration/test_concurrent_claims.py`` (threads there, tasks here),
once per async driver. The claimers' transactions really overlap on the server:
each awaits the database while the others' claims hold their row locks.
"""

from __future__ import annotations

import asyncio
import uuid
from collections import Counter

import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from programma_sa import AsyncJobQueue, JobSpec, JobState

from ..app import Job

pytestmark = pytest.mark.asyncio(loop_scope="session")

JOBS = 2_000
CLAIMERS = 8


async def test_eight_claimers_deliver_each_of_2000_jobs_exactly_once(
    aqueue: AsyncJobQueue, async_sessions: async_sessionmaker[AsyncSession]
) -> None:
    async with async_sessions.begin() as session:
        expected = set(
            await aqueue.add_jobs(session, "race", [JobSpec(data=n) for n in range(JOBS)])
        )

    delivered: list[list[uuid.UUID]] = [[] for _ in range(CLAIMERS)]
    backends: set[int] = set()
    start = asyncio.Event()

    async def claimer(slot: int) -> None:
        await start.wait()
        while True:
            # Each claimer's transaction holds its own pooled connection; the rows it
            # claims stay locked until it commits the completions.
            async with async_sessions.begin() as session:
                jobs = await aqueue.claim_jobs(session, "race", max_jobs=7)
                if not jobs:
                    return
                connection = await session.connection()
                backends.add(id(await connection.get_raw_connection()))
                for job in jobs:
                    delivered[slot].append(job.id)
                    await aqueue.move_job_to_done(session, job.id)

    tasks = [asyncio.create_task(claimer(slot)) for slot in range(CLAIMERS)]
    start.set()
    await asyncio.wait_for(asyncio.gather(*tasks), timeout=120)

    counts = Counter(job_id for ids in delivered for job_id in ids)
    assert set(counts) == expected  # none lost
    assert max(counts.values()) == 1  # none twice
    assert sum(1 for ids in delivered if ids) > 1  # the work really was shared
    assert len(backends) > 1  # on separate database connections
    async with async_sessions() as session:
        states = Counter((await session.execute(select(Job.state))).scalars())
    assert states == {JobState.COMPLETED.value: JOBS}
