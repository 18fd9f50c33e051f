"""Transaction mode on asyncio: the pass's connection dies while a handler runs.

The mirror of ``tests/worker/test_connection_lost.py``, on both asyncio drivers: the
job comes back claimable at once with its attempt not counted, ``run_once()`` raises
:class:`~programma_sa.exceptions.TransactionLost`, and the log says so once.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator

import pytest
import pytest_asyncio
from sqlalchemy import Engine, text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from programma_sa import AsyncJobContext, DatabaseError, JobQueue, JobState, PassResult
from programma_sa.exceptions import TransactionLost

from ..asyncio.urls import async_url
from ..worker.support import get_job, seconds_from_now
from ..worker.test_connection_lost import LOGGER, assert_logged_once_as_lost, lost_warnings
from ..worker.test_outcomes import enqueue, order_ids
from .conftest import MakeAsyncWorker
from .support import wait_for

pytestmark = pytest.mark.asyncio

KILL = text("SELECT pg_terminate_backend(pg_backend_pid())")


@pytest_asyncio.fixture
async def worker_engine(database_url: str, driver: str) -> AsyncIterator[AsyncEngine]:
    """The worker's own engine: the killed connection invalidates only this pool."""
    worker_engine = create_async_engine(async_url(database_url, driver))
    yield worker_engine
    await worker_engine.dispose()


class KillsOnce:
    """:class:`tests.worker.test_connection_lost.KillsOnce`, as an ``async def`` handler."""

    def __init__(self, kill_n: int = 0, *, swallow: bool = False) -> None:
        self.kill_n = kill_n
        self.swallow = swallow
        self.calls: list[int] = []
        self.killed = False

    async def __call__(self, ctx: AsyncJobContext) -> None:
        from ..app import Order

        assert ctx.session is not None
        n = ctx.job.data["n"]
        self.calls.append(n)
        ctx.session.add(Order(id=100 * len(self.calls) + n))
        await ctx.session.flush()
        if n == self.kill_n and not self.killed:
            self.killed = True
            try:
                await ctx.session.execute(KILL)
            except DBAPIError:
                if not self.swallow:
                    raise


@pytest.mark.parametrize("swallow", [False, True], ids=["raises", "swallows"])
async def test_a_killed_connection_rolls_the_pass_back_and_raises_transaction_lost(
    engine: Engine,
    worker_engine: AsyncEngine,
    queue: JobQueue,
    make_worker: MakeAsyncWorker,
    caplog: pytest.LogCaptureFixture,
    swallow: bool,
) -> None:
    (job_id,) = enqueue(engine, queue)
    handler = KillsOnce(swallow=swallow)
    worker = make_worker(handler, bind=worker_engine, mode="transaction")

    with caplog.at_level(logging.DEBUG, logger=LOGGER), pytest.raises(TransactionLost) as raised:
        await worker.run_once()

    assert isinstance(raised.value, DatabaseError)
    message = str(raised.value)
    assert str(job_id) in message and "claimable again at once" in message
    if swallow:
        assert "the handler caught the database's error and carried on" in message
    else:
        assert isinstance(raised.value.__cause__, DBAPIError)
    assert_logged_once_as_lost(caplog, job_id, claimed=1)
    assert worker.totals == PassResult()
    job = get_job(engine, queue, job_id)
    assert job.state is JobState.CREATED
    assert job.attempts == 0 and job.started_at is None
    assert seconds_from_now(engine, job.start_after) <= 0
    assert order_ids(engine) == []

    assert await worker.run_once() == PassResult(claimed=1, completed=1)
    job = get_job(engine, queue, job_id)
    assert job.state is JobState.COMPLETED and job.attempts == 1
    assert order_ids(engine) == [200]
    assert handler.calls == [0, 0]


async def test_the_whole_batch_rolls_back_and_its_remaining_handlers_do_not_run(
    engine: Engine,
    worker_engine: AsyncEngine,
    queue: JobQueue,
    make_worker: MakeAsyncWorker,
    caplog: pytest.LogCaptureFixture,
) -> None:
    job_ids = enqueue(engine, queue, n=3)
    handler = KillsOnce(kill_n=1)
    worker = make_worker(handler, bind=worker_engine, mode="transaction", max_jobs=3)

    with (
        caplog.at_level(logging.DEBUG, logger=LOGGER),
        pytest.raises(TransactionLost, match="its 3 claimed jobs are claimable"),
    ):
        await worker.run_once()

    assert handler.calls == [0, 1]
    assert_logged_once_as_lost(caplog, job_ids[1], claimed=3)
    for job_id in job_ids:
        job = get_job(engine, queue, job_id)
        assert job.state is JobState.CREATED and job.attempts == 0
    assert order_ids(engine) == []

    assert await worker.run_once() == PassResult(claimed=3, completed=3)
    assert all(get_job(engine, queue, job_id).attempts == 1 for job_id in job_ids)


async def test_a_handler_losing_a_connection_of_its_own_is_an_ordinary_failure(
    database_url: str,
    driver: str,
    engine: Engine,
    worker_engine: AsyncEngine,
    queue: JobQueue,
    make_worker: MakeAsyncWorker,
    caplog: pytest.LogCaptureFixture,
) -> None:
    (job_id,) = enqueue(engine, queue)
    other = create_async_engine(async_url(database_url, driver))

    async def handler(ctx: AsyncJobContext) -> None:
        async with other.connect() as connection:
            await connection.execute(KILL)

    worker = make_worker(handler, bind=worker_engine, mode="transaction")
    try:
        with caplog.at_level(logging.WARNING, logger=LOGGER):
            assert await worker.run_once() == PassResult(claimed=1, retried=1)
    finally:
        await other.dispose()

    assert lost_warnings(caplog) == []
    assert any("retrying in" in record.getMessage() for record in caplog.records)
    job = get_job(engine, queue, job_id)
    assert job.state is JobState.ACTIVE and job.attempts == 1


@pytest.mark.parametrize("concurrency", [1, 2])
async def test_the_loop_logs_the_lost_pass_once_and_runs_the_job_again(
    engine: Engine,
    worker_engine: AsyncEngine,
    queue: JobQueue,
    make_worker: MakeAsyncWorker,
    caplog: pytest.LogCaptureFixture,
    concurrency: int,
) -> None:
    handler = KillsOnce()
    worker = make_worker(
        handler, bind=worker_engine, mode="transaction", heartbeat=0.1, concurrency=concurrency
    )
    with caplog.at_level(logging.DEBUG, logger=LOGGER):
        worker.start()
        (job_id,) = enqueue(engine, queue)
        await wait_for(lambda: get_job(engine, queue, job_id).state is JobState.COMPLETED)
        worker.stop()
        assert await worker.join(10)

    assert get_job(engine, queue, job_id).attempts == 1
    assert handler.calls == [0, 0]
    assert worker.totals == PassResult(claimed=1, completed=1)
    assert_logged_once_as_lost(caplog, job_id, claimed=1)
