"""The AsyncWorker's own part of the control of jobs in flight (issue #15), once per
asyncio driver: a cancelled handler's task is cancelled after the grace period, and a
handler that looks at its cancellation ends within it. What both workers do is in
tests/workers/test_control.py."""

from __future__ import annotations

import asyncio
import time

import pytest
from sqlalchemy import Engine
from sqlalchemy.orm import Session

from programma_sa import AsyncJobContext, CancelOutcome, JobQueue, JobState, PassResult

from ..workers.harness import Harness
from ..workers.support import enqueue, get_job, wait_for

pytestmark = pytest.mark.asyncio

MODES = ["lease", "transaction"]


def cancel(engine: Engine, queue: JobQueue, job_id: object) -> CancelOutcome:
    with Session(engine) as session, session.begin():
        return queue.cancel_job(session, job_id)  # type: ignore[arg-type]


@pytest.mark.postgresql_only("NOTIFY tells the worker within the test's 3 s; row locks")
@pytest.mark.parametrize("mode", MODES)
async def test_a_handler_that_ignores_its_cancellation_has_its_task_cancelled(
    engine: Engine, queue: JobQueue, harness: Harness, mode: str
) -> None:
    (job_id,) = enqueue(engine, queue)
    running = asyncio.Event()
    ended_by: list[str] = []

    async def handler(ctx: AsyncJobContext) -> None:
        running.set()
        try:
            await asyncio.sleep(30)  # looks at nothing
        except asyncio.CancelledError:
            ended_by.append("task cancelled" if ctx.cancelled else "shutdown")
            raise

    worker = harness.worker(
        handler, mode=mode, listen=True, heartbeat=10.0, cancel_grace_period=0.3
    )
    worker.start()
    await asyncio.wait_for(running.wait(), 10)
    await asyncio.sleep(0.3)  # the listener is up
    asked = time.monotonic()
    outcome = cancel(engine, queue, job_id)
    assert outcome is (CancelOutcome.CANCELLED if mode == "lease" else CancelOutcome.REQUESTED)
    await wait_for(lambda: ended_by, timeout=5)
    assert ended_by == ["task cancelled"]
    assert time.monotonic() - asked < 3  # the grace period, not the handler's 30 s
    await wait_for(lambda: worker.totals.cancelled == 1)
    assert get_job(engine, queue, job_id).state is JobState.CANCELLED
    worker.stop()
    assert await harness.join(worker, 10)
    assert worker.totals == PassResult(claimed=1, cancelled=1)


async def test_a_handler_that_looks_ends_within_the_grace_period(
    engine: Engine, queue: JobQueue, harness: Harness
) -> None:
    (job_id,) = enqueue(engine, queue)
    running = asyncio.Event()
    saw: list[bool] = []

    async def handler(ctx: AsyncJobContext) -> None:
        running.set()
        saw.append(await ctx.wait_cancelled(20))
        ctx.raise_if_cancelled()

    worker = harness.worker(handler, heartbeat=0.5, cancel_grace_period=30)
    worker.start()
    await asyncio.wait_for(running.wait(), 10)
    assert cancel(engine, queue, job_id) is CancelOutcome.CANCELLED
    # No listener: the lease pass (every heartbeat) tells the handler.
    await wait_for(lambda: saw == [True], timeout=5)
    await wait_for(lambda: worker.totals.cancelled == 1)
