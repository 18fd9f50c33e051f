"""JobQueue.throughput: jobs completed and failed per part of the last hour, on
the database's clock, from both faces; its plan reads the window's index entries."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import pytest
from sqlalchemy import Engine
from sqlalchemy.ext.asyncio import AsyncSession, create_async_engine
from sqlalchemy.orm import Session

from programma_sa import AsyncJobQueue, InvalidJobInput, JobQueue, JobState, Throughput
from programma_sa._drivers import statements_for

from ..app import Job
from ..asyncio.urls import DRIVERS, async_url
from .jobs import db_now, put
from .test_plans import TABLE, _assert_reads, _fill, _plan

queue = JobQueue(Job)


def _finish(engine: Engine, topic: str, state: str, minutes_ago: float) -> None:
    with Session(engine) as session, session.begin():
        when = db_now(session) - timedelta(minutes=minutes_ago)
        put(session, queue, topic, JobState(state), finished_at=when)


def _jobs(engine: Engine) -> None:
    _finish(engine, "emails", "completed", 1)
    _finish(engine, "emails", "completed", 2)
    _finish(engine, "sms", "failed", 3)
    _finish(engine, "sms", "completed", 32)  # 12 buckets of 5 minutes: the 7th from the end
    _finish(engine, "emails", "completed", 90)  # before the window
    _finish(engine, "emails", "cancelled", 1)  # cancelled: not throughput
    with Session(engine) as session, session.begin():
        queue.add_job(session, "emails", {})  # waiting


def test_each_part_counts_what_finished_in_it(engine: Engine) -> None:
    _jobs(engine)
    with Session(engine) as session:
        measured = queue.throughput(session)
    assert measured.window_seconds == 3600.0 and measured.bucket_seconds == 300.0
    assert measured.completed == (0,) * 5 + (1,) + (0,) * 5 + (2,)
    assert measured.failed == (0,) * 11 + (1,)
    with Session(engine) as session:
        coarse = queue.throughput(session, window_seconds=600, buckets=1)
    assert (coarse.completed, coarse.failed) == ((2,), (1,))


def test_an_empty_table(engine: Engine) -> None:
    with Session(engine) as session:
        assert queue.throughput(session, buckets=3) == Throughput(3600.0, (0, 0, 0), (0, 0, 0))


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"window_seconds": 0}, "window_seconds must be positive, got 0"),
        ({"window_seconds": -1}, "window_seconds must not be negative, got -1"),
        ({"buckets": 0}, "buckets must be an int from 1 to 240, got 0"),
        ({"buckets": 2.0}, "buckets must be an int from 1 to 240, got 2.0"),
    ],
)
def test_bad_arguments(engine: Engine, options: dict[str, object], message: str) -> None:
    with Session(engine) as session, pytest.raises(InvalidJobInput) as refused:
        queue.throughput(session, **options)  # type: ignore[arg-type]
    assert str(refused.value) == message


@pytest.mark.parametrize("driver", DRIVERS)
def test_the_async_face_reads_the_same(engine: Engine, database_url: str, driver: str) -> None:
    _jobs(engine)
    with Session(engine) as session:
        expected = queue.throughput(session)

    async def read() -> Throughput:
        async_engine = create_async_engine(async_url(database_url, driver))
        try:
            async with AsyncSession(async_engine) as session:
                return await AsyncJobQueue(Job).throughput(session)
        finally:
            await async_engine.dispose()

    assert asyncio.run(read()) == expected


@pytest.mark.postgresql_only("PostgreSQL's planner (EXPLAIN FORMAT JSON)")
@pytest.mark.parametrize("vacuum", [False, True], ids=["analyzed", "vacuumed"])
def test_its_plan_reads_the_finished_indexes_only(engine: Engine, vacuum: bool) -> None:
    _fill(engine, vacuum)
    statement = statements_for("postgresql", TABLE).throughput
    nodes = _plan(engine, statement, {"p_window_seconds": 3600.0, "p_buckets": 12})
    _assert_reads(nodes, {"finished", "failed"}, "finished")
