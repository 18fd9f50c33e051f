"""``handler_context``: what a worker enters around each handler call; and
``run_once(session=...)``: a transaction-mode pass in the caller's transaction.

Each test runs on the sync Worker and on the AsyncWorker over both asyncio drivers:
the sync Worker enters a context manager, the AsyncWorker an async one.
"""

from __future__ import annotations

import contextvars
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from typing import Any

import pytest
from sqlalchemy import Engine

from programma_sa import ConfigurationError, JobContext, JobQueue, JobState, PassResult

from ..app import Order
from .harness import Context, Harness, awaited, noop, on
from .support import enqueue, get_job, order_ids, wait_for

pytestmark = pytest.mark.asyncio

MODES = ["lease", "transaction"]

#: What a framework sets up for a handler (Flask's app context, a tenant, a request id).
current_job: contextvars.ContextVar[object] = contextvars.ContextVar("current_job")


def handler_context(
    harness: Harness, events: list[tuple[str, object]], fail_on_exit: bool = False
) -> Callable[[Context], Any]:
    """A handler_context of the harness's kind: sets ``current_job``, notes enter/exit."""

    def enter(ctx: Context) -> contextvars.Token[object]:
        events.append(("enter", ctx.job.id))
        return current_job.set(ctx.job.id)

    def leave(ctx: Context, token: contextvars.Token[object]) -> None:
        current_job.reset(token)
        events.append(("exit", ctx.job.id))
        if fail_on_exit:
            raise RuntimeError("no tenant for this job")

    @contextmanager
    def sync_context(ctx: Context) -> Iterator[None]:
        token = enter(ctx)
        yield
        leave(ctx, token)

    @asynccontextmanager
    async def async_context(ctx: Context) -> AsyncIterator[None]:
        token = enter(ctx)
        yield
        leave(ctx, token)

    return sync_context if harness.kind == "sync" else async_context


@pytest.mark.parametrize("mode", MODES)
async def test_each_handler_runs_inside_the_handler_context(
    engine: Engine, queue: JobQueue, harness: Harness, mode: str
) -> None:
    job_ids = enqueue(engine, queue, n=3)
    events: list[tuple[str, object]] = []

    async def handler(ctx: Context) -> None:
        assert current_job.get(None) == ctx.job.id  # set up for this very job
        events.append(("handler", ctx.job.id))
        await awaited(harness.sleep(0))

    # Concurrency 2: the handlers run on the worker's own threads (tasks).
    worker = harness.worker(
        handler, mode=mode, concurrency=2, handler_context=handler_context(harness, events)
    )
    assert await harness.run_once(worker) == PassResult(claimed=3, completed=3)

    for job_id in job_ids:
        assert [event for event, job in events if job == job_id] == ["enter", "handler", "exit"]


async def test_a_failing_handler_context_fails_the_attempt_and_rolls_its_writes_back(
    engine: Engine, queue: JobQueue, harness: Harness
) -> None:
    (job_id,) = enqueue(engine, queue)

    async def handler(ctx: Context) -> None:
        ctx.session.add(Order(id=7))
        await awaited(ctx.session.flush())

    context = handler_context(harness, [], fail_on_exit=True)
    worker = harness.worker(handler, mode="transaction", handler_context=context)
    assert await harness.run_once(worker) == PassResult(claimed=1, retried=1)

    job = get_job(engine, queue, job_id)
    assert job.state is JobState.ACTIVE
    assert job.attributes["last_error"]["message"] == "no tenant for this job"
    assert order_ids(engine) == []


async def test_a_handler_context_of_the_wrong_kind_says_so(
    engine: Engine, queue: JobQueue, harness: Harness
) -> None:
    (job_id,) = enqueue(engine, queue)
    other_kind = "async" if harness.kind == "sync" else "sync"
    wrong = handler_context(type("Other", (), {"kind": other_kind})(), [])  # type: ignore[arg-type]

    worker = harness.worker(noop, handler_context=wrong)
    assert await harness.run_once(worker) == PassResult(claimed=1, retried=1)

    error = get_job(engine, queue, job_id).attributes["last_error"]
    assert error["type"] == "programma_sa.exceptions.ConfigurationError"
    expected = (
        "handler_context must return a context manager for Worker, got "
        if harness.kind == "sync"
        else "handler_context must return an async context manager for AsyncWorker, got "
    )
    assert error["message"].startswith(expected + "<contextlib._")


@on("sync")
async def test_handler_context_must_be_callable(harness: Harness) -> None:
    with pytest.raises(ConfigurationError) as refused:
        harness.worker(noop, handler_context="app")
    assert str(refused.value) == "handler_context must be callable or None, got 'app'"


async def test_run_once_in_a_session_runs_the_pass_there_and_never_commits_it(
    engine: Engine, queue: JobQueue, harness: Harness
) -> None:
    (job_id,) = enqueue(engine, queue)
    sessions: list[object] = []

    async def handler(ctx: Context) -> None:
        sessions.append(ctx.session)
        ctx.session.add(Order(id=1))
        await awaited(ctx.session.flush())

    worker = harness.worker(handler, mode="transaction")
    async with harness.transaction() as session:  # rolled back at the end
        assert await awaited(worker.run_once(session=session)) == PassResult(claimed=1, completed=1)
        assert sessions == [session]
        job = await awaited(harness.queue.get_job(session, job_id))
        assert job is not None and job.state is JobState.COMPLETED
        assert session.in_transaction()
    # The caller's rollback took the whole pass back: nothing of it was committed.
    assert get_job(engine, queue, job_id).state is JobState.CREATED
    assert order_ids(engine) == []


async def test_run_once_in_a_session_needs_transaction_mode(harness: Harness) -> None:
    worker = harness.worker(noop, mode="lease")
    async with harness.transaction() as session:
        with pytest.raises(ConfigurationError) as refused:
            await awaited(worker.run_once(session=session))
    assert str(refused.value) == (
        "run_once(session=...) runs a transaction-mode pass: this worker's mode is lease"
    )


@on("sync")
async def test_a_context_the_caller_set_is_not_on_the_workers_threads(
    engine: Engine, queue: JobQueue, harness: Harness
) -> None:
    """``run()`` hands handlers to threads of its own: what the caller's thread set up
    (as RQ users push Flask's app context at import) is not theirs; handler_context
    is. (An asyncio task inherits its creator's context, so AsyncWorker has no such
    trap.)"""
    current_job.set("set by the caller, on the caller's thread")
    seen: list[object] = []

    def handler(ctx: JobContext) -> None:
        seen.append(current_job.get(None))

    plain = harness.worker_class(queue, engine, "t", handler, listen=False, heartbeat=0.05)
    hooked = harness.worker_class(
        queue, engine, "t", handler, listen=False, heartbeat=0.05,
        handler_context=handler_context(harness, []),
    )  # fmt: skip
    job_ids = []
    for worker in (plain, hooked):
        job_ids += enqueue(engine, queue)
        worker.start()
        try:
            await wait_for(lambda: worker.totals.claimed == 1)  # noqa: B023  (awaited here)
        finally:
            worker.stop()
            assert worker.join(10)
    assert seen == [None, job_ids[1]]
