"""AsyncWorker: ``ctx.snooze`` in both modes, on both drivers (see tests/worker/test_snooze.py)."""

from __future__ import annotations

import asyncio

import pytest
from sqlalchemy import Engine
from sqlalchemy.orm import Session

from programma_sa import AsyncJobContext, JobQueue, JobState, PassResult

from ..worker.support import get_job, seconds_from_now
from .conftest import MakeAsyncWorker

pytestmark = pytest.mark.asyncio


@pytest.mark.parametrize("mode", ["lease", "transaction"])
async def test_snooze_leaves_attempts_unchanged_and_the_job_runs_after_the_delay(
    engine: Engine, queue: JobQueue, make_worker: MakeAsyncWorker, mode: str
) -> None:
    with Session(engine) as session, session.begin():
        job_id = queue.add_job(session, "t", {})
    deliveries: list[int] = []

    async def handler(ctx: AsyncJobContext) -> None:
        deliveries.append(ctx.job.attempts)
        if len(deliveries) == 1:
            ctx.snooze(1.0)

    worker = make_worker(handler, mode=mode)
    assert await worker.run_once() == PassResult(claimed=1, snoozed=1)
    job = get_job(engine, queue, job_id)
    assert (job.state, job.attempts) == (JobState.ACTIVE, 0)
    assert 0.5 < seconds_from_now(engine, job.start_after) <= 1.0
    await asyncio.sleep(1.0)
    assert await worker.run_once() == PassResult(claimed=1, completed=1)
    assert get_job(engine, queue, job_id).attempts == 1
    assert deliveries == [1, 1]
