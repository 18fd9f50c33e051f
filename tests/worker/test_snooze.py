"""Snooze: a handler puts its job off without spending an attempt, in both modes."""

from __future__ import annotations

import time

import pytest
from sqlalchemy import Engine, select
from sqlalchemy.orm import Session

from programma_sa import InvalidJobInput, JobContext, JobQueue, JobState, PassResult

from ..app import Order
from .conftest import MakeWorker
from .support import get_job, seconds_from_now

MODES = ["lease", "transaction"]


def enqueue(engine: Engine, queue: JobQueue) -> object:
    with Session(engine) as session, session.begin():
        return queue.add_job(session, "t", {})


@pytest.mark.parametrize("mode", MODES)
def test_snooze_leaves_attempts_unchanged_and_the_job_runs_after_the_delay(
    engine: Engine, queue: JobQueue, make_worker: MakeWorker, mode: str
) -> None:
    job_id = enqueue(engine, queue)
    deliveries: list[int] = []

    def handler(ctx: JobContext) -> None:
        deliveries.append(ctx.job.attempts)
        if ctx.session is not None:
            ctx.session.add(Order(id=len(deliveries)))  # rolled back by the snooze
        if len(deliveries) == 1:
            ctx.snooze(1.5)
            raise AssertionError("snooze returned")  # pragma: no cover

    worker = make_worker(handler, mode=mode)
    assert worker.run_once() == PassResult(claimed=1, snoozed=1)
    job = get_job(engine, queue, job_id)
    assert (job.state, job.attempts, job.attributes) == (JobState.ACTIVE, 0, {})
    assert 1.0 < seconds_from_now(engine, job.start_after) <= 1.5
    assert worker.run_once() == PassResult()  # not due yet

    time.sleep(1.5)
    assert worker.run_once() == PassResult(claimed=1, completed=1)
    job = get_job(engine, queue, job_id)
    assert (job.state, job.attempts) == (JobState.COMPLETED, 1)
    assert deliveries == [1, 1]  # both deliveries were the first attempt
    with Session(engine) as session:
        expected = [2] if mode == "transaction" else []
        assert list(session.scalars(select(Order.id))) == expected


@pytest.mark.parametrize("mode", MODES)
def test_a_snooze_after_the_handler_moved_its_job_writes_nothing(
    engine: Engine, queue: JobQueue, make_worker: MakeWorker, mode: str
) -> None:
    job_id = enqueue(engine, queue)

    def handler(ctx: JobContext) -> None:
        ctx.move_to_processing()
        ctx.snooze(60)

    result = make_worker(handler, mode=mode).run_once()
    job = get_job(engine, queue, job_id)
    if mode == "lease":  # the move committed on its own: it stands
        assert result == PassResult(claimed=1, left_untouched=1)
        assert job.state is JobState.PROCESSING
    else:  # the move rolled back with the handler's savepoint; the snooze is written
        assert result == PassResult(claimed=1, snoozed=1)
        assert (job.state, job.attempts) == (JobState.ACTIVE, 0)


def test_a_bad_delay_is_refused_in_the_handler(
    engine: Engine, queue: JobQueue, make_worker: MakeWorker
) -> None:
    enqueue(engine, queue)
    raised: list[BaseException] = []

    def handler(ctx: JobContext) -> None:
        for delay in (-1, float("nan"), "5"):
            try:
                ctx.snooze(delay)  # type: ignore[arg-type]
            except InvalidJobInput as error:
                raised.append(error)

    assert make_worker(handler).run_once() == PassResult(claimed=1, completed=1)
    assert [str(error) for error in raised] == [
        "snooze seconds must not be negative, got -1",
        "snooze seconds must be finite, got nan",
        "snooze seconds must be a number of seconds, got '5'",
    ]
