"""Every ``AsyncJobQueue`` method on a Core ``AsyncConnection``, once per async driver.

Mirrors ``tests/integration/test_core_connection.py``: each method works on the
caller's connection, its writes commit or roll back with the caller's transaction,
and nothing in the library ends that transaction.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest
from sqlalchemy import Engine, func, insert, select
from sqlalchemy.ext.asyncio import AsyncEngine

from programma_sa import TTL, AsyncJobQueue, InvalidJobInput, JobState, Retention

from ..app import Job, Order

pytestmark = pytest.mark.asyncio(loop_scope="session")

JOBS = Job.__table__
ORDERS = Order.__table__


def committed(engine: Engine, table: object) -> int:
    with engine.connect() as other:
        return other.scalar(select(func.count()).select_from(table)) or 0  # type: ignore[arg-type]


async def test_an_enqueue_commits_or_rolls_back_with_the_callers_transaction(
    engine: Engine, async_engine: AsyncEngine, aqueue: AsyncJobQueue
) -> None:
    async with async_engine.connect() as connection:
        transaction = await connection.begin()
        await connection.execute(insert(ORDERS).values(id=1))
        await aqueue.add_job(connection, "t", {"order": 1})
        await transaction.rollback()
        assert (committed(engine, JOBS), committed(engine, ORDERS)) == (0, 0)

        async with connection.begin():
            await connection.execute(insert(ORDERS).values(id=2))
            job_id = await aqueue.add_job(connection, "t", {"order": 2})
            assert connection.in_transaction()
            assert committed(engine, JOBS) == 0
        assert (committed(engine, JOBS), committed(engine, ORDERS)) == (1, 1)
        job = await aqueue.get_job(connection, job_id)
        assert job is not None and job.data == {"order": 2}


async def test_every_method_on_an_async_connection(
    engine: Engine, async_engine: AsyncEngine, aqueue: AsyncJobQueue
) -> None:
    async with async_engine.connect() as connection, connection.begin():
        first, second, third = await aqueue.add_jobs(
            connection, "t", [{"data": 1}, {"data": 2, "priority": 5}, {"data": 3}]
        )
        (claimed,) = await aqueue.claim_jobs(connection, "t", max_jobs=1)
        assert claimed.id == second
        assert await aqueue.move_job_to_processing(connection, second) is True
        assert await aqueue.move_job_to_done(connection, second) is True
        assert await aqueue.move_job_to_failed(connection, first) is True
        assert await aqueue.set_attributes(connection, third, {"step": "x"}) is True
        assert await aqueue.set_retry_after_seconds(connection, third, 7) is True
        # To the millisecond: SQLite keeps no finer time (docs/sqlite.md).
        later = (datetime.now(timezone.utc) + timedelta(hours=1)).replace(microsecond=1000)
        assert await aqueue.set_job_start_date(connection, third, later) is True
        job = await aqueue.get_job(connection, third)
        assert job is not None and job.state is JobState.CREATED
        assert (job.attributes, job.retry_after_seconds, job.start_after) == (
            {"step": "x"},
            7,
            later,
        )
        listed = await aqueue.list_jobs(connection, topic="t")
        assert [job.id for job in listed.jobs] == [third, second, first]  # newest first
        counts = (await aqueue.stats(connection, "t")).topic("t")
        assert (counts.created, counts.completed, counts.failed) == (1, 1, 1)
        assert await aqueue.prune(connection, Retention(TTL(completed=0, failed=0))) == 2
        with pytest.raises(InvalidJobInput, match=r"^topic must not be empty$"):
            await aqueue.add_job(connection, "", {})
        assert await aqueue.delete_job(connection, third) is True
        assert (await aqueue.list_jobs(connection)).jobs == []
    assert committed(engine, JOBS) == 0
