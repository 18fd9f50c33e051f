"""Transaction mode on asyncio: the pass's COMMIT fails.

The mirror of ``tests/worker/test_commit_failure.py``, on both asyncio drivers: a
COMMIT refused by a deferred foreign key rolls the pass back (jobs claimable again
at once, attempt not counted) and raises :class:`~programma_sa.CommitFailed`; a
connection that dies at COMMIT raises it with ``outcome_unknown``; either is logged
once, and the ``run()`` loop processes the job afterwards.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Iterator

import pytest
import pytest_asyncio
from sqlalchemy import Engine
from sqlalchemy.exc import DBAPIError, IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from programma_sa import (
    AsyncJobContext,
    CommitFailed,
    DatabaseError,
    JobQueue,
    JobState,
    PassResult,
)

from ..asyncio.urls import async_url
from ..worker.support import get_job
from ..worker.test_commit_failure import (
    LOGGER,
    ORPHAN,
    FailsAtCommit,
    KillAtCommit,
    assert_claimable_again,
    assert_logged_once,
    deferred_constraint,
)
from ..worker.test_outcomes import enqueue, order_ids
from .conftest import MakeAsyncWorker
from .support import wait_for

pytestmark = pytest.mark.asyncio


@pytest.fixture(autouse=True)
def _deferred_constraint(engine: Engine) -> Iterator[None]:
    with deferred_constraint(engine):
        yield


@pytest_asyncio.fixture
async def worker_engine(database_url: str, driver: str) -> AsyncIterator[AsyncEngine]:
    """The worker's own engine: the killed connection invalidates only this pool."""
    worker_engine = create_async_engine(async_url(database_url, driver))
    yield worker_engine
    await worker_engine.dispose()


class AsyncFailsAtCommit(FailsAtCommit):
    """:class:`tests.worker.test_commit_failure.FailsAtCommit`, as an ``async def`` handler."""

    async def __call__(self, ctx: AsyncJobContext) -> None:  # type: ignore[override]
        from ..app import Order

        assert ctx.session is not None
        n = ctx.job.data["n"]
        self.calls.append(n)
        ctx.session.add(Order(id=100 * len(self.calls) + n))
        if len(self.calls) > self.times:
            return
        if self.how == "refused":
            await ctx.session.execute(ORPHAN, {"id": len(self.calls)})
        else:
            assert self.kill is not None
            self.kill.armed = True


async def test_a_refused_commit_rolls_the_pass_back_and_raises_commit_failed(
    engine: Engine,
    queue: JobQueue,
    make_worker: MakeAsyncWorker,
    caplog: pytest.LogCaptureFixture,
) -> None:
    (job_id,) = enqueue(engine, queue)
    handler = AsyncFailsAtCommit("refused")
    worker = make_worker(handler, mode="transaction")

    with caplog.at_level(logging.DEBUG, logger=LOGGER), pytest.raises(CommitFailed) as raised:
        await worker.run_once()

    error = raised.value
    assert isinstance(error, DatabaseError)
    assert error.outcome_unknown is False
    assert isinstance(error.__cause__, IntegrityError)
    message = str(error)
    assert "the database refused the COMMIT of a transaction-mode pass" in message
    assert "violates foreign key constraint" in message
    assert "its 1 claimed job is claimable again at once (attempt not counted)" in message
    assert f"jobs: {job_id} [t]" in message
    record = assert_logged_once(caplog, logging.ERROR)
    assert record.getMessage() == f"commit failed: {message}"
    assert worker.totals == PassResult()
    assert_claimable_again(engine, queue, [job_id])

    assert await worker.run_once() == PassResult(claimed=1, completed=1)
    job = get_job(engine, queue, job_id)
    assert job.state is JobState.COMPLETED and job.attempts == 1
    assert order_ids(engine) == [200]
    assert handler.calls == [0, 0]


async def test_a_connection_lost_at_commit_raises_commit_failed_with_the_outcome_unknown(
    engine: Engine,
    worker_engine: AsyncEngine,
    queue: JobQueue,
    make_worker: MakeAsyncWorker,
    caplog: pytest.LogCaptureFixture,
) -> None:
    (job_id,) = enqueue(engine, queue)
    kill = KillAtCommit(worker_engine.sync_engine, engine)
    handler = AsyncFailsAtCommit("lost", kill)
    worker = make_worker(handler, bind=worker_engine, mode="transaction")

    with caplog.at_level(logging.DEBUG, logger=LOGGER), pytest.raises(CommitFailed) as raised:
        await worker.run_once()

    assert kill.kills == 1
    error = raised.value
    assert error.outcome_unknown is True
    assert isinstance(error.__cause__, DBAPIError)
    assert error.__cause__.connection_invalidated
    message = str(error)
    assert "the database connection of a transaction-mode pass died during its COMMIT" in message
    assert "whether it committed is unknown: either all of the pass did" in message
    assert "or none of it did and its 1 claimed job is claimable again at once" in message
    assert f"jobs: {job_id} [t]" in message
    record = assert_logged_once(caplog, logging.WARNING)
    assert "rolled back" not in record.getMessage()
    assert worker.totals == PassResult()

    job = get_job(engine, queue, job_id)
    if job.state is JobState.COMPLETED:
        assert job.attempts == 1 and order_ids(engine) == [100]
    else:
        assert_claimable_again(engine, queue, [job_id])

    assert await worker.run_once() == PassResult(claimed=1, completed=1)
    assert get_job(engine, queue, job_id).attempts == 1
    assert order_ids(engine) == [200]


@pytest.mark.parametrize("concurrency", [1, 2])
@pytest.mark.parametrize("how", ["refused", "lost"])
async def test_the_loop_logs_a_failed_commit_once_and_runs_the_job_again(
    engine: Engine,
    worker_engine: AsyncEngine,
    queue: JobQueue,
    make_worker: MakeAsyncWorker,
    caplog: pytest.LogCaptureFixture,
    how: str,
    concurrency: int,
) -> None:
    kill = KillAtCommit(worker_engine.sync_engine, engine) if how == "lost" else None
    handler = AsyncFailsAtCommit(how, kill)
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
    assert order_ids(engine) == [200]
    assert worker.totals == PassResult(claimed=1, completed=1)
    record = assert_logged_once(caplog, logging.WARNING if how == "lost" else logging.ERROR)
    assert ("is unknown" in record.getMessage()) is (how == "lost")
