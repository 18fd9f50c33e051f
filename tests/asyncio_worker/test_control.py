"""The AsyncWorker and the control of jobs in flight (issue #15), once per async driver:
renewed leases, a cancelled handler's task cancelled after the grace period, results,
release at shutdown."""

from __future__ import annotations

import asyncio
import time

import pytest
from sqlalchemy import Engine
from sqlalchemy.orm import Session

from programma_sa import (
    AsyncJobContext,
    AsyncJobQueue,
    CancelOutcome,
    JobQueue,
    JobState,
    PassResult,
)

from ..app import Job
from .conftest import MakeAsyncWorker
from .support import wait_for

pytestmark = pytest.mark.asyncio

MODES = ["lease", "transaction"]


def enqueue(engine: Engine, n: int = 1, **options: object) -> list:
    with Session(engine) as session, session.begin():
        return [JobQueue(Job).add_job(session, "t", {"n": i}, **options) for i in range(n)]  # type: ignore[arg-type]


def state(engine: Engine, job_id: object) -> JobState:
    with Session(engine) as session:
        job = JobQueue(Job).get_job(session, job_id)  # type: ignore[arg-type]
    assert job is not None
    return job.state


def cancel(engine: Engine, job_id: object) -> CancelOutcome:
    with Session(engine) as session, session.begin():
        return JobQueue(Job).cancel_job(session, job_id)  # type: ignore[arg-type]


async def test_a_handler_may_run_past_its_lease(
    engine: Engine, make_worker: MakeAsyncWorker, aqueue: AsyncJobQueue
) -> None:
    (job_id,) = enqueue(engine, retry_after_seconds=1)
    runs: list[int] = []

    async def handler(ctx: AsyncJobContext) -> str:
        runs.append(ctx.job.attempts)
        await asyncio.sleep(3)
        return "slow but once"

    worker = make_worker(handler)
    worker.start()
    await wait_for(lambda: runs)
    rival: list[object] = []
    while state(engine, job_id) is JobState.ACTIVE:
        with Session(engine) as session, session.begin():
            rival += [job.id for job in JobQueue(Job).claim_jobs(session, "t")]
        await asyncio.sleep(0.2)
    assert rival == [] and runs == [1]
    with Session(engine) as session:
        job = JobQueue(Job).get_job(session, job_id)
    assert job is not None and (job.state, job.attempts, job.result) == (
        JobState.COMPLETED,
        1,
        "slow but once",
    )


@pytest.mark.parametrize("mode", MODES)
async def test_a_handler_that_ignores_its_cancellation_has_its_task_cancelled(
    engine: Engine, make_worker: MakeAsyncWorker, mode: str
) -> None:
    (job_id,) = enqueue(engine)
    running = asyncio.Event()
    ended_by: list[str] = []

    async def handler(ctx: AsyncJobContext) -> None:
        running.set()
        try:
            await asyncio.sleep(30)  # looks at nothing
        except asyncio.CancelledError:
            ended_by.append("task cancelled" if ctx.cancelled else "shutdown")
            raise

    worker = make_worker(handler, mode=mode, listen=True, heartbeat=10.0, cancel_grace_period=0.3)
    worker.start()
    await asyncio.wait_for(running.wait(), 10)
    await asyncio.sleep(0.3)  # the listener is up
    asked = time.monotonic()
    outcome = cancel(engine, job_id)
    assert outcome is (CancelOutcome.CANCELLED if mode == "lease" else CancelOutcome.REQUESTED)
    await wait_for(lambda: ended_by, timeout=5)
    assert ended_by == ["task cancelled"]
    assert time.monotonic() - asked < 3  # the grace period, not the handler's 30 s
    await wait_for(lambda: worker.totals.cancelled == 1)
    assert state(engine, job_id) is JobState.CANCELLED
    worker.stop()
    assert await worker.join(10)
    assert worker.totals == PassResult(claimed=1, cancelled=1)


async def test_a_handler_that_looks_ends_within_the_grace_period(
    engine: Engine, make_worker: MakeAsyncWorker
) -> None:
    (job_id,) = enqueue(engine)
    running = asyncio.Event()
    saw: list[bool] = []

    async def handler(ctx: AsyncJobContext) -> None:
        running.set()
        saw.append(await ctx.wait_cancelled(20))
        ctx.raise_if_cancelled()

    worker = make_worker(handler, heartbeat=0.5, cancel_grace_period=30)
    worker.start()
    await asyncio.wait_for(running.wait(), 10)
    assert cancel(engine, job_id) is CancelOutcome.CANCELLED
    # No listener: the lease pass (every heartbeat) tells the handler.
    await wait_for(lambda: saw == [True], timeout=5)
    await wait_for(lambda: worker.totals.cancelled == 1)


@pytest.mark.parametrize("mode", MODES)
async def test_results_are_stored(engine: Engine, make_worker: MakeAsyncWorker, mode: str) -> None:
    (job_id,) = enqueue(engine)

    async def handler(ctx: AsyncJobContext) -> dict[str, int]:
        return {"n": ctx.job.data["n"] + 1}

    assert await make_worker(handler, mode=mode).run_once() == PassResult(claimed=1, completed=1)
    with Session(engine) as session:
        job = JobQueue(Job).get_job(session, job_id)
    assert job is not None and job.result == {"n": 1}


async def test_stopping_releases_the_claimed_jobs_that_have_not_started(
    engine: Engine, make_worker: MakeAsyncWorker
) -> None:
    first, *waiting = enqueue(engine, n=3)
    running, release = asyncio.Event(), asyncio.Event()

    async def handler(ctx: AsyncJobContext) -> None:
        running.set()
        await asyncio.wait_for(release.wait(), 20)

    worker = make_worker(handler, max_jobs=3)
    worker.start()
    await asyncio.wait_for(running.wait(), 10)
    worker.stop()
    for job_id in waiting:
        await wait_for(lambda job_id=job_id: state(engine, job_id) is JobState.CREATED)
    release.set()
    assert await worker.join(10)
    assert state(engine, first) is JobState.COMPLETED
    assert worker.totals == PassResult(claimed=3, completed=1, released=2)
