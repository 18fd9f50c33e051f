"""What the AsyncWorker writes after each handler outcome, in both modes (driven by run_once).

The mirror of ``tests/worker/test_outcomes.py``, on both asyncio drivers; the bad
settings are the sync test's own parameter table, so both workers refuse the same
settings with the same message.
"""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest
from sqlalchemy import Engine, event
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker
from sqlalchemy.orm import Session

from programma_sa import (
    AsyncJobContext,
    AsyncJobQueue,
    AsyncWorker,
    ConfigurationError,
    JobContext,
    JobQueue,
    JobState,
    PassResult,
    RetryPolicy,
    Worker,
)

from ..app import Job, Order
from ..worker import test_outcomes as sync_outcomes
from ..worker.support import get_job, seconds_from_now
from ..worker.test_outcomes import enqueue, order_ids
from .conftest import MakeAsyncWorker
from .support import parametrize_args

pytestmark = pytest.mark.asyncio

MODES = ["lease", "transaction"]


class Boom(RuntimeError):
    pass


# -- handler returns --------------------------------------------------------------------------


@pytest.mark.parametrize("mode", MODES)
async def test_success_completes_the_job(
    engine: Engine, queue: JobQueue, make_worker: MakeAsyncWorker, mode: str
) -> None:
    (job_id,) = enqueue(engine, queue)
    sessions: list[object] = []

    async def handler(ctx: AsyncJobContext) -> None:
        sessions.append(ctx.session)
        if ctx.session is not None:  # transaction mode: business write in the claim's tx
            ctx.session.add(Order(id=1, note=str(ctx.job.id)))
        await asyncio.sleep(0)

    result = await make_worker(handler, mode=mode).run_once()

    assert result == PassResult(claimed=1, completed=1)
    job = get_job(engine, queue, job_id)
    assert job.state is JobState.COMPLETED and job.finished_at is not None
    assert job.attempts == 1
    if mode == "lease":
        assert sessions == [None]
    else:
        assert isinstance(sessions[0], AsyncSession)
        assert order_ids(engine) == [1]


@pytest.mark.parametrize("mode", MODES)
async def test_untouched_job_without_auto_complete_comes_back_after_its_visibility_timeout(
    engine: Engine, queue: JobQueue, make_worker: MakeAsyncWorker, mode: str
) -> None:
    (job_id,) = enqueue(engine, queue, retry_after_seconds=0)  # lease runs out at once
    seen: list[int] = []

    async def handler(ctx: AsyncJobContext) -> None:
        seen.append(ctx.job.attempts)

    worker = make_worker(handler, mode=mode, auto_complete=False)
    assert await worker.run_once() == PassResult(claimed=1, left_untouched=1)
    job = get_job(engine, queue, job_id)
    assert job.state is JobState.ACTIVE and job.finished_at is None
    assert await worker.run_once() == PassResult(claimed=1, left_untouched=1)
    assert seen == [1, 2]


async def _processing(ctx: AsyncJobContext) -> None:
    await ctx.move_to_processing()


async def _failed(ctx: AsyncJobContext) -> None:
    await ctx.move_to_failed()


async def _deleted(ctx: AsyncJobContext) -> None:
    await ctx.move_to_done(delete=True)


async def _rescheduled(ctx: AsyncJobContext) -> None:
    await ctx.set_job_start_date(datetime.now(timezone.utc) + timedelta(hours=1))


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize(
    ("steer", "expected_state"),
    [
        (_processing, JobState.PROCESSING),
        (_failed, JobState.FAILED),
        (_deleted, None),
        (_rescheduled, JobState.ACTIVE),
    ],
    ids=["processing", "failed", "deleted", "rescheduled"],
)
async def test_auto_complete_respects_what_the_handler_did(
    engine: Engine,
    queue: JobQueue,
    make_worker: MakeAsyncWorker,
    mode: str,
    steer: Any,
    expected_state: JobState | None,
) -> None:
    (job_id,) = enqueue(engine, queue)
    assert await make_worker(steer, mode=mode).run_once() == PassResult(claimed=1, left_untouched=1)
    with Session(engine) as session:
        job = queue.get_job(session, job_id)
    assert (job.state if job is not None else None) is expected_state


async def test_lease_batch_is_completed_in_one_statement(
    engine: Engine, queue: JobQueue, async_engine: AsyncEngine, make_worker: MakeAsyncWorker
) -> None:
    job_ids = enqueue(engine, queue, n=5)
    statements: list[str] = []

    def count(conn, cursor, statement, parameters, context, executemany) -> None:  # type: ignore[no-untyped-def]
        statements.append(statement)

    async def handler(ctx: AsyncJobContext) -> None:
        if ctx.job.data["n"] == 2:
            await ctx.move_to_processing()

    event.listen(async_engine.sync_engine, "before_cursor_execute", count)
    try:
        result = await make_worker(handler, max_jobs=5, concurrency=3).run_once()
    finally:
        event.remove(async_engine.sync_engine, "before_cursor_execute", count)

    assert result == PassResult(claimed=5, completed=4, left_untouched=1)
    completions = [s for s in statements if "SET state='completed'" in s.replace(" = ", "=")]
    assert len(completions) == 1, statements
    states = [get_job(engine, queue, job_id).state for job_id in job_ids]
    assert states == [JobState.COMPLETED] * 2 + [JobState.PROCESSING] + [JobState.COMPLETED] * 2


# -- handler raises ---------------------------------------------------------------------------


@pytest.mark.parametrize("mode", MODES)
async def test_exception_records_the_error_and_retries_after_the_backoff(
    engine: Engine, queue: JobQueue, make_worker: MakeAsyncWorker, mode: str
) -> None:
    (job_id,) = enqueue(engine, queue)

    async def handler(ctx: AsyncJobContext) -> None:
        if ctx.session is not None:
            ctx.session.add(Order(id=7))  # rolled back with the handler's savepoint
            await ctx.session.flush()
        raise Boom("payment API said no")

    worker = make_worker(handler, mode=mode, retry=RetryPolicy.constant(60.0, max_attempts=3))
    assert await worker.run_once() == PassResult(claimed=1, retried=1)

    job = get_job(engine, queue, job_id)
    assert job.state is JobState.ACTIVE and job.finished_at is None
    assert 58 < seconds_from_now(engine, job.start_after) <= 60
    error = job.attributes["last_error"]
    assert error["type"] == f"{__name__}.Boom" and error["message"] == "payment API said no"
    assert error["attempt"] == 1 and "in handler" in error["traceback"]
    assert order_ids(engine) == []
    assert await worker.run_once() == PassResult()  # not due before its backoff


@pytest.mark.parametrize("mode", MODES)
async def test_exception_then_exhaustion_moves_the_job_to_failed(
    engine: Engine, queue: JobQueue, make_worker: MakeAsyncWorker, mode: str
) -> None:
    (job_id,) = enqueue(engine, queue, attributes={"keep": "me"})

    async def handler(ctx: AsyncJobContext) -> None:
        raise Boom(f"attempt {ctx.job.attempts}")

    worker = make_worker(handler, mode=mode, retry=RetryPolicy.constant(0.0, max_attempts=2))
    assert await worker.run_once() == PassResult(claimed=1, retried=1)
    assert await worker.run_once() == PassResult(claimed=1, failed=1)
    job = get_job(engine, queue, job_id)
    assert job.state is JobState.FAILED and job.finished_at is not None and job.attempts == 2
    assert job.attributes["keep"] == "me"
    assert job.attributes["last_error"]["message"] == "attempt 2"
    assert await worker.run_once() == PassResult()
    assert worker.totals == PassResult(claimed=2, retried=1, failed=1)


@pytest.mark.parametrize("mode", MODES)
async def test_exception_without_retry_policy_leaves_the_job_to_its_visibility_timeout(
    engine: Engine, queue: JobQueue, make_worker: MakeAsyncWorker, mode: str
) -> None:
    (job_id,) = enqueue(engine, queue, retry_after_seconds=45)

    async def handler(ctx: AsyncJobContext) -> None:
        raise Boom("no policy")

    result = await make_worker(handler, mode=mode, retry=None).run_once()
    assert result == PassResult(claimed=1, retried=1)
    job = get_job(engine, queue, job_id)
    assert job.state is JobState.ACTIVE and job.attributes["last_error"]["message"] == "no policy"
    assert job.started_at is not None
    assert job.start_after == job.started_at + timedelta(seconds=45)


@pytest.mark.parametrize("mode", MODES)
async def test_a_handler_that_moved_its_job_then_raised(
    engine: Engine, queue: JobQueue, make_worker: MakeAsyncWorker, mode: str
) -> None:
    (job_id,) = enqueue(engine, queue)

    async def handler(ctx: AsyncJobContext) -> None:
        await ctx.move_to_processing()
        raise Boom("after the move")

    result = await make_worker(handler, mode=mode, retry=RetryPolicy.constant(60.0)).run_once()

    job = get_job(engine, queue, job_id)
    if mode == "lease":  # the move committed on its own: it stands, nothing is recorded
        assert result == PassResult(claimed=1, left_untouched=1)
        assert job.state is JobState.PROCESSING and "last_error" not in job.attributes
    else:  # the move rolled back with the savepoint: retried like any failure
        assert result == PassResult(claimed=1, retried=1)
        assert job.state is JobState.ACTIVE and job.attributes["last_error"]["attempt"] == 1


async def test_transaction_mode_a_failing_job_does_not_undo_its_batch_neighbours(
    engine: Engine, queue: JobQueue, make_worker: MakeAsyncWorker
) -> None:
    job_ids = enqueue(engine, queue, n=3)

    async def handler(ctx: AsyncJobContext) -> None:
        assert ctx.session is not None
        ctx.session.add(Order(id=ctx.job.data["n"]))
        await ctx.session.flush()
        if ctx.job.data["n"] == 1:
            raise Boom("middle one")

    worker = make_worker(handler, mode="transaction", retry=RetryPolicy.constant(30))
    assert await worker.run_once() == PassResult(claimed=3, completed=2, retried=1)
    assert order_ids(engine) == [0, 2]
    states = [get_job(engine, queue, job_id).state for job_id in job_ids]
    assert states == [JobState.COMPLETED, JobState.ACTIVE, JobState.COMPLETED]


# -- passes, topics, concurrency --------------------------------------------------------------


async def test_several_topics_are_claimed_in_one_pass(
    engine: Engine, queue: JobQueue, make_worker: MakeAsyncWorker
) -> None:
    enqueue(engine, queue, "a", n=2)
    enqueue(engine, queue, "b", n=2)
    enqueue(engine, queue, "other")
    seen: list[str] = []

    async def handler(ctx: AsyncJobContext) -> None:
        seen.append(ctx.job.topic)

    assert await make_worker(handler, ["a", "b"]).run_once() == PassResult(claimed=4, completed=4)
    assert sorted(seen) == ["a", "a", "b", "b"]


@pytest.mark.parametrize("concurrency", [1, 3])
async def test_lease_concurrency_bounds_the_handlers_running_at_once(
    engine: Engine, queue: JobQueue, make_worker: MakeAsyncWorker, concurrency: int
) -> None:
    enqueue(engine, queue, n=6)
    running: list[int] = []
    peak = 0
    full = asyncio.Event()

    async def handler(ctx: AsyncJobContext) -> None:
        nonlocal peak
        running.append(1)
        peak = max(peak, len(running))
        if len(running) == concurrency:
            full.set()
        # Each handler waits until `concurrency` of them run at once: proof that
        # they do run concurrently (a serial run would time out here).
        await asyncio.wait_for(full.wait(), 10)
        await asyncio.sleep(0.01)
        running.pop()

    worker = make_worker(handler, max_jobs=6, concurrency=concurrency)
    assert await worker.run_once() == PassResult(claimed=6, completed=6)
    assert peak == concurrency


async def test_lease_context_methods_commit_on_their_own(
    engine: Engine, queue: JobQueue, make_worker: MakeAsyncWorker
) -> None:
    (job_id,) = enqueue(engine, queue)

    async def handler(ctx: AsyncJobContext) -> None:
        assert await ctx.set_attributes({"progress": 50})
        assert await ctx.set_retry_after_seconds(120)
        assert get_job(engine, queue, ctx.job.id).attributes == {"progress": 50}
        assert not ctx.stopping

    assert await make_worker(handler).run_once() == PassResult(claimed=1, left_untouched=1)
    job = get_job(engine, queue, job_id)
    assert job.state is JobState.ACTIVE and job.retry_after_seconds == 120


# -- settings: the sync worker's table, and what is particular to async -----------------------


async def _noop(ctx: AsyncJobContext) -> None:
    pass


@pytest.mark.parametrize(
    *parametrize_args(sync_outcomes.test_bad_settings_are_refused_with_the_setting_named)
)
async def test_bad_settings_are_refused_like_the_sync_worker_does(
    async_engine: AsyncEngine, aqueue: AsyncJobQueue, settings: dict[str, object], message: str
) -> None:
    arguments: dict[str, object] = {"topics": "t", "handler": _noop, **settings}
    topics, handler = arguments.pop("topics"), arguments.pop("handler")
    arguments.setdefault("listen", False)
    with pytest.raises(ConfigurationError, match=message):
        AsyncWorker(aqueue, async_engine, topics, handler, **arguments)  # type: ignore[arg-type]


async def test_listening_needs_a_url_when_given_a_bare_session_factory(
    async_engine: AsyncEngine, aqueue: AsyncJobQueue
) -> None:
    with pytest.raises(ConfigurationError, match="listen=True needs the database to LISTEN on"):
        AsyncWorker(aqueue, lambda: AsyncSession(async_engine), "t", _noop)
    AsyncWorker(aqueue, async_sessionmaker(async_engine), "t", _noop)  # the URL of its bind


async def test_bad_queue_bind_and_handler_kind_are_refused(
    engine: Engine, queue: JobQueue, async_engine: AsyncEngine, aqueue: AsyncJobQueue
) -> None:
    with pytest.raises(ConfigurationError, match="queue must be a AsyncJobQueue"):
        AsyncWorker(queue, async_engine, "t", _noop)  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError, match="expected an AsyncEngine or an async session"):
        AsyncWorker(aqueue, 42, "t", _noop, listen=False)  # type: ignore[arg-type]

    def sync_handler(ctx: JobContext) -> None:
        pass

    with pytest.raises(ConfigurationError, match="handler must be an async function"):
        AsyncWorker(aqueue, async_engine, "t", sync_handler, listen=False)  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError, match="is an async function: run it with AsyncWorker"):
        Worker(queue, engine, "t", _noop, listen=False)  # type: ignore[arg-type]


async def test_a_callable_object_with_an_async_call_is_an_async_handler(
    engine: Engine, queue: JobQueue, make_worker: MakeAsyncWorker
) -> None:
    (job_id,) = enqueue(engine, queue)

    class Handler:
        async def __call__(self, ctx: AsyncJobContext) -> None:
            await ctx.set_attributes({"by": "object"})
            await ctx.move_to_done()

    assert await make_worker(Handler()).run_once() == PassResult(claimed=1, left_untouched=1)
    job = get_job(engine, queue, job_id)
    assert job.state is JobState.COMPLETED and job.attributes == {"by": "object"}


async def test_an_error_too_large_for_the_payload_limit_is_recorded_in_short(
    engine: Engine, async_engine: AsyncEngine
) -> None:
    (job_id,) = enqueue(engine, JobQueue(Job, max_payload_bytes=400))

    async def handler(ctx: AsyncJobContext) -> None:
        raise Boom("x" * 5000)

    small = AsyncJobQueue(Job, max_payload_bytes=400)
    worker = AsyncWorker(small, async_engine, "t", handler, mode="transaction", listen=False)
    assert await worker.run_once() == PassResult(claimed=1, retried=1)
    error = get_job(engine, JobQueue(Job), job_id).attributes["last_error"]
    assert error["message"] == "x" * 200 and "traceback" not in error
