"""What only the AsyncWorker has (on both drivers): async handlers told from sync ones,
handler tasks cancelled after ``shutdown_timeout``, ``async with`` running the loop.

Everything the two workers share is in ``tests/workers/``.
"""

from __future__ import annotations

import asyncio

import pytest
from sqlalchemy import Engine

from programma_sa import (
    AsyncJobContext,
    AsyncWorker,
    ConfigurationError,
    JobContext,
    JobQueue,
    JobState,
    PassResult,
    Worker,
)

from ..workers.harness import Harness, noop
from ..workers.support import enqueue, get_job, wait_for

pytestmark = pytest.mark.asyncio


async def test_sync_queues_and_handlers_and_async_handlers_are_kept_to_their_worker(
    engine: Engine, queue: JobQueue, harness: Harness
) -> None:
    """A JobQueue or a plain function is refused by AsyncWorker, an async def by Worker."""
    with pytest.raises(ConfigurationError, match="queue must be a AsyncJobQueue"):
        AsyncWorker(queue, harness.bind, "t", noop)  # type: ignore[arg-type]

    def sync_handler(ctx: JobContext) -> None:
        pass

    with pytest.raises(ConfigurationError, match="handler must be an async function"):
        AsyncWorker(harness.queue, harness.bind, "t", sync_handler, listen=False)  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError, match="is an async function: run it with AsyncWorker"):
        Worker(queue, engine, "t", noop, listen=False)


async def test_a_callable_object_with_an_async_call_is_an_async_handler(
    engine: Engine, queue: JobQueue, harness: Harness
) -> None:
    (job_id,) = enqueue(engine, queue)

    class Handler:
        async def __call__(self, ctx: AsyncJobContext) -> None:
            await ctx.set_attributes({"by": "object"})
            await ctx.move_to_done()

    result = await harness.run_once(harness.worker(Handler()))
    assert result == PassResult(claimed=1, left_untouched=1)
    job = get_job(engine, queue, job_id)
    assert job.state is JobState.COMPLETED and job.attributes == {"by": "object"}


@pytest.mark.parametrize("mode", ["lease", "transaction"])
async def test_shutdown_timeout_cancels_a_stuck_handler(
    engine: Engine, queue: JobQueue, harness: Harness, mode: str
) -> None:
    """Lease mode leaves the job to its lease; transaction mode rolls its claim back."""
    running = asyncio.Event()
    cancelled: list[bool] = []

    async def handler(ctx: AsyncJobContext) -> None:
        running.set()
        try:
            await asyncio.sleep(60)
        except asyncio.CancelledError:
            cancelled.append(True)
            raise

    worker = harness.worker(handler, heartbeat=0.1, shutdown_timeout=0.2, mode=mode)
    worker.start()
    (job_id,) = enqueue(engine, queue)
    await asyncio.wait_for(running.wait(), 10)
    worker.stop()
    assert await harness.join(worker, 5)  # gave up waiting after 0.2 s
    assert cancelled == [True]
    job = get_job(engine, queue, job_id)
    if mode == "lease":  # left to its lease
        assert job.state is JobState.ACTIVE and job.attempts == 1
    else:  # the claim's transaction rolled back: claimable again at once
        assert job.state is JobState.CREATED and job.attempts == 0


async def test_the_worker_as_an_async_context_manager(
    engine: Engine, queue: JobQueue, harness: Harness
) -> None:
    """``async with`` starts the loop, and stops and joins it on the way out."""
    async with harness.worker(noop, heartbeat=0.1) as worker:
        (job_id,) = enqueue(engine, queue)
        await wait_for(lambda: get_job(engine, queue, job_id).state is JobState.COMPLETED)
    assert await worker.join(0)
    assert worker.totals == PassResult(claimed=1, completed=1)
