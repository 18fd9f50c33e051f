"""Transaction mode on asyncio: the pass's COMMIT fails.

The mirror of ``tests/worker/test_commit_failure.py``, on both asyncio drivers: a
COMMIT refused by a deferred foreign key rolls the pass back, the worker records
the failed attempt of every job of the batch through its retry policy in a
transaction of its own (a poison job backs off and ends FAILED; a job claimed
elsewhere meanwhile is left alone), and :class:`~programma_sa.CommitFailed` is
raised; a connection that dies at COMMIT raises it with ``outcome_unknown`` and
writes nothing; either is logged once, and the ``run()`` loop processes the job
afterwards.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Iterator
from datetime import timedelta

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
    RetryPolicy,
)

from ..asyncio.urls import async_url
from ..worker.support import get_job, seconds_from_now
from ..worker.test_commit_failure import (
    LOGGER,
    ORPHAN,
    AtNextBegin,
    BreaksCommit,
    ClaimElsewhere,
    FailsAtCommit,
    KillAtCommit,
    assert_attempt_recorded,
    assert_claimable_again,
    assert_left_alone,
    assert_logged_once,
    claim_statements,
    commit_records,
    deferred_constraint,
    make_due,
    recorded_attempt_records,
    terminate,
    with_lock_timeout,
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


class AsyncBreaksCommit(BreaksCommit):
    """:class:`tests.worker.test_commit_failure.BreaksCommit`, as an ``async def`` handler."""

    def __init__(self, culprits: tuple[int, ...] = (0,), arm: AtNextBegin | None = None) -> None:
        super().__init__(culprits)
        self.arm = arm

    async def __call__(self, ctx: AsyncJobContext) -> None:  # type: ignore[override]
        assert ctx.session is not None
        if self.arm is not None:
            self.arm.armed = True
        order, breaks = self.writes(ctx)
        ctx.session.add(order)
        if breaks:
            await ctx.session.execute(ORPHAN, {"id": len(self.calls)})


# -- refused ----------------------------------------------------------------------------------


async def test_a_refused_commit_records_the_failed_attempt_and_raises_commit_failed(
    engine: Engine,
    queue: JobQueue,
    make_worker: MakeAsyncWorker,
    caplog: pytest.LogCaptureFixture,
) -> None:
    (job_id,) = enqueue(engine, queue)
    handler = AsyncFailsAtCommit("refused")
    worker = make_worker(handler, mode="transaction", retry=RetryPolicy.constant(60))

    with caplog.at_level(logging.DEBUG, logger=LOGGER), pytest.raises(CommitFailed) as raised:
        await worker.run_once()

    error = raised.value
    assert isinstance(error, DatabaseError)
    assert error.outcome_unknown is False
    assert isinstance(error.__cause__, IntegrityError)
    message = str(error)
    assert "the database refused the COMMIT of a transaction-mode pass" in message
    assert "violates foreign key constraint" in message
    assert (
        "the failed attempt of its 1 claimed job was then recorded in a transaction of its "
        "own (1 to retry, 0 failed, 0 left alone: claimed again meanwhile)"
    ) in message
    assert f"jobs: {job_id} [t]" in message
    record = assert_logged_once(caplog, logging.ERROR, attempts_recorded=1)
    assert record.getMessage() == f"commit failed: {message}"
    (retry_line,) = recorded_attempt_records(caplog)
    assert retry_line.getMessage().startswith(
        f"job {job_id} [t] attempt 1 failed: commit refused: IntegrityError: "
    )
    assert retry_line.getMessage().endswith("; retrying in 60.00 s")
    assert worker.totals == PassResult()
    job = assert_attempt_recorded(engine, queue, job_id, attempts=1)
    assert 50 < seconds_from_now(engine, job.start_after) <= 60
    assert await worker.run_once() == PassResult()

    make_due(engine, queue, [job_id])
    assert await worker.run_once() == PassResult(claimed=1, completed=1)
    job = get_job(engine, queue, job_id)
    assert job.state is JobState.COMPLETED and job.attempts == 2
    assert order_ids(engine) == [200]
    assert handler.calls == [0, 0]


async def test_a_job_whose_commit_is_always_refused_ends_failed_after_max_attempts(
    engine: Engine,
    queue: JobQueue,
    make_worker: MakeAsyncWorker,
    caplog: pytest.LogCaptureFixture,
) -> None:
    (job_id,) = enqueue(engine, queue)
    handler = AsyncBreaksCommit()
    worker = make_worker(handler, mode="transaction", retry=RetryPolicy.constant(0, max_attempts=3))

    with caplog.at_level(logging.INFO, logger=LOGGER):
        for attempt in (1, 2, 3):
            with pytest.raises(CommitFailed) as raised:
                await worker.run_once()
            counts = "1 to retry, 0 failed" if attempt < 3 else "0 to retry, 1 failed"
            assert f"({counts}, 0 left alone" in str(raised.value)
            state = JobState.ACTIVE if attempt < 3 else JobState.FAILED
            assert_attempt_recorded(engine, queue, job_id, attempt, state)

    assert await worker.run_once() == PassResult()
    assert handler.calls == [(0, 1), (0, 2), (0, 3)]
    assert [record.levelno for record in commit_records(caplog)] == [logging.ERROR] * 3
    lines = [record.getMessage() for record in recorded_attempt_records(caplog)]
    assert lines[-1].endswith("; moving it to FAILED (attempts exhausted)")


async def test_a_refused_commit_records_an_attempt_for_every_job_of_the_batch(
    engine: Engine,
    queue: JobQueue,
    make_worker: MakeAsyncWorker,
    caplog: pytest.LogCaptureFixture,
) -> None:
    job_ids = enqueue(engine, queue, n=3)
    handler = AsyncBreaksCommit(culprits=(1,))
    worker = make_worker(handler, mode="transaction", max_jobs=3, retry=RetryPolicy.constant(60))

    with caplog.at_level(logging.INFO, logger=LOGGER), pytest.raises(CommitFailed) as raised:
        await worker.run_once()

    assert "(3 to retry, 0 failed, 0 left alone: claimed again meanwhile)" in str(raised.value)
    assert_logged_once(caplog, logging.ERROR, attempts_recorded=3)
    for job_id in job_ids:
        job = assert_attempt_recorded(engine, queue, job_id, attempts=1)
        assert seconds_from_now(engine, job.start_after) > 50
    assert await worker.run_once() == PassResult()

    innocent = [job_ids[0], job_ids[2]]
    make_due(engine, queue, innocent)
    assert await worker.run_once() == PassResult(claimed=2, completed=2)
    for job_id in innocent:
        job = get_job(engine, queue, job_id)
        assert job.state is JobState.COMPLETED and job.attempts == 2
    assert_attempt_recorded(engine, queue, job_ids[1], attempts=1)
    assert order_ids(engine) == [400, 502]


@pytest.mark.parametrize("other", ["committed", "in progress"])
async def test_a_job_claimed_by_another_worker_meanwhile_is_left_alone(
    engine: Engine,
    worker_engine: AsyncEngine,
    queue: JobQueue,
    make_worker: MakeAsyncWorker,
    caplog: pytest.LogCaptureFixture,
    other: str,
) -> None:
    job_ids = enqueue(engine, queue, n=2)
    with_lock_timeout(worker_engine.sync_engine)
    elsewhere = ClaimElsewhere(
        engine, queue, worker_engine.sync_engine, commit=other == "committed"
    )
    worker = make_worker(
        AsyncBreaksCommit(arm=elsewhere),
        bind=worker_engine,
        mode="transaction",
        max_jobs=2,
        retry=RetryPolicy.constant(60),
    )
    with (
        caplog.at_level(logging.INFO, logger=LOGGER),
        elsewhere,
        pytest.raises(CommitFailed) as raised,
    ):
        await worker.run_once()

    assert_left_alone(engine, queue, job_ids, elsewhere, str(raised.value), caplog)


async def test_without_a_retry_policy_the_error_is_recorded_and_the_lease_stands(
    engine: Engine,
    queue: JobQueue,
    make_worker: MakeAsyncWorker,
    caplog: pytest.LogCaptureFixture,
) -> None:
    (job_id,) = enqueue(engine, queue, retry_after_seconds=45)
    worker = make_worker(AsyncBreaksCommit(), mode="transaction", retry=None)

    with caplog.at_level(logging.INFO, logger=LOGGER), pytest.raises(CommitFailed):
        await worker.run_once()

    (line,) = recorded_attempt_records(caplog)
    assert line.getMessage().endswith("; leaving it to its visibility timeout")
    job = assert_attempt_recorded(engine, queue, job_id, attempts=1)
    assert job.start_after == job.started_at + timedelta(seconds=45)
    assert await worker.run_once() == PassResult()


async def test_a_recording_that_fails_is_logged_and_leaves_the_jobs_claimable(
    engine: Engine,
    worker_engine: AsyncEngine,
    queue: JobQueue,
    make_worker: MakeAsyncWorker,
    caplog: pytest.LogCaptureFixture,
) -> None:
    (job_id,) = enqueue(engine, queue)
    hook = AtNextBegin(worker_engine.sync_engine, lambda connection: terminate(engine, connection))
    breaks = AsyncFailsAtCommit("refused")

    async def handler(ctx: AsyncJobContext) -> None:
        hook.armed = not breaks.calls  # the first pass's, refused
        await breaks(ctx)

    worker = make_worker(handler, bind=worker_engine, mode="transaction")

    with caplog.at_level(logging.DEBUG, logger=LOGGER), pytest.raises(CommitFailed) as raised:
        await worker.run_once()

    assert hook.runs == 1
    message = str(raised.value)
    assert "and recording the failed attempts failed too (DatabaseError: " in message
    assert "its 1 claimed job is claimable again at once (attempt not counted)" in message
    assert_logged_once(caplog, logging.ERROR)
    assert_claimable_again(engine, queue, [job_id])

    assert await worker.run_once() == PassResult(claimed=1, completed=1)
    assert get_job(engine, queue, job_id).attempts == 1
    assert order_ids(engine) == [200]


# -- lost -------------------------------------------------------------------------------------


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
        handler,
        bind=worker_engine,
        mode="transaction",
        heartbeat=0.1,
        concurrency=concurrency,
        retry=RetryPolicy.constant(0.1),
    )
    with caplog.at_level(logging.DEBUG, logger=LOGGER):
        worker.start()
        (job_id,) = enqueue(engine, queue)
        await wait_for(lambda: get_job(engine, queue, job_id).state is JobState.COMPLETED)
        worker.stop()
        assert await worker.join(10)

    refused = how == "refused"
    assert get_job(engine, queue, job_id).attempts == (2 if refused else 1)
    assert handler.calls == [0, 0]
    assert order_ids(engine) == [200]
    assert worker.totals == PassResult(claimed=1, completed=1)
    record = assert_logged_once(
        caplog, logging.ERROR if refused else logging.WARNING, attempts_recorded=int(refused)
    )
    assert ("is unknown" in record.getMessage()) is not refused


@pytest.mark.parametrize("concurrency", [1, 2])
async def test_the_loop_backs_a_poison_job_off_instead_of_claiming_it_again_at_once(
    engine: Engine,
    worker_engine: AsyncEngine,
    queue: JobQueue,
    make_worker: MakeAsyncWorker,
    caplog: pytest.LogCaptureFixture,
    concurrency: int,
) -> None:
    """See the sync test: claims of the poison job an order of magnitude fewer than
    the loop's passes (each pass, were it left due at once), then FAILED."""
    (job_id,) = enqueue(engine, queue)
    handler = AsyncBreaksCommit()
    claims = claim_statements(worker_engine.sync_engine)
    worker = make_worker(
        handler,
        bind=worker_engine,
        mode="transaction",
        heartbeat=0.01,
        concurrency=concurrency,
        retry=RetryPolicy.constant(1.0, max_attempts=3),
    )
    with caplog.at_level(logging.INFO, logger=LOGGER):
        worker.start()
        await wait_for(lambda: get_job(engine, queue, job_id).state is JobState.FAILED)
        worker.stop()
        assert await worker.join(10)

    assert_attempt_recorded(engine, queue, job_id, attempts=3, state=JobState.FAILED)
    assert handler.calls == [(0, 1), (0, 2), (0, 3)]
    assert len(handler.calls) * 10 <= len(claims), (len(handler.calls), len(claims))
    assert len(commit_records(caplog)) == 3
    assert len(recorded_attempt_records(caplog)) == 3
