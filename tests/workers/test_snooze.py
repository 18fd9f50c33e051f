"""Snooze: a handler puts its job off without spending an attempt, in both modes.

Each test runs on the sync Worker and on the AsyncWorker over both asyncio drivers.
"""

from __future__ import annotations

import asyncio

import pytest
from sqlalchemy import Engine

from programma_sa import InvalidJobInput, JobQueue, JobState, PassResult

from ..app import Order
from .harness import Context, Harness, awaited
from .support import enqueue, get_job, order_ids, seconds_from_now

pytestmark = pytest.mark.asyncio

MODES = ["lease", "transaction"]


@pytest.mark.parametrize("mode", MODES)
async def test_snooze_leaves_attempts_unchanged_and_the_job_runs_after_the_delay(
    engine: Engine, queue: JobQueue, harness: Harness, mode: str
) -> None:
    (job_id,) = enqueue(engine, queue)
    deliveries: list[int] = []

    async def handler(ctx: Context) -> None:
        deliveries.append(ctx.job.attempts)
        if ctx.session is not None:
            ctx.session.add(Order(id=len(deliveries)))  # rolled back by the snooze
        if len(deliveries) == 1:
            ctx.snooze(1.5)  # a plain method in both flavours
            raise AssertionError("snooze returned")  # pragma: no cover

    worker = harness.worker(handler, mode=mode)
    assert await harness.run_once(worker) == PassResult(claimed=1, snoozed=1)
    job = get_job(engine, queue, job_id)
    assert (job.state, job.attempts, job.attributes) == (JobState.ACTIVE, 0, {})
    assert 1.0 < seconds_from_now(engine, job.start_after) <= 1.5
    assert await harness.run_once(worker) == PassResult()  # not due yet

    await asyncio.sleep(1.5)
    assert await harness.run_once(worker) == PassResult(claimed=1, completed=1)
    job = get_job(engine, queue, job_id)
    assert (job.state, job.attempts) == (JobState.COMPLETED, 1)
    assert deliveries == [1, 1]  # both deliveries were the first attempt
    assert order_ids(engine) == ([2] if mode == "transaction" else [])


@pytest.mark.parametrize("mode", MODES)
async def test_a_snooze_after_the_handler_moved_its_job_writes_nothing(
    engine: Engine, queue: JobQueue, harness: Harness, mode: str
) -> None:
    (job_id,) = enqueue(engine, queue)

    async def handler(ctx: Context) -> None:
        await awaited(ctx.move_to_processing())
        ctx.snooze(60)

    result = await harness.run_once(harness.worker(handler, mode=mode))
    job = get_job(engine, queue, job_id)
    if mode == "lease":  # the move committed on its own: it stands
        assert result == PassResult(claimed=1, left_untouched=1)
        assert job.state is JobState.PROCESSING
    else:  # the move rolled back with the handler's savepoint; the snooze is written
        assert result == PassResult(claimed=1, snoozed=1)
        assert (job.state, job.attempts) == (JobState.ACTIVE, 0)


async def test_a_bad_delay_is_refused_in_the_handler(
    engine: Engine, queue: JobQueue, harness: Harness
) -> None:
    enqueue(engine, queue)
    raised: list[BaseException] = []

    async def handler(ctx: Context) -> None:
        for delay in (-1, float("nan"), "5"):
            try:
                ctx.snooze(delay)  # type: ignore[arg-type]
            except InvalidJobInput as error:
                raised.append(error)

    assert await harness.run_once(harness.worker(handler)) == PassResult(claimed=1, completed=1)
    assert [str(error) for error in raised] == [
        "snooze seconds must not be negative, got -1",
        "snooze seconds must be finite, got nan",
        "snooze seconds must be a number of seconds, got '5'",
    ]
