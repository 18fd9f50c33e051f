"""The AsyncWorker loop: LISTEN/NOTIFY wake-ups, look-ahead, reconnects, shutdown.

The mirror of ``tests/worker/test_loop.py``. The worker runs as a task of the
test's event loop; the tests write and read through the sync ``engine`` (quick
statements) and wait without blocking the loop.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

import pytest
from sqlalchemy import Engine, text
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
from sqlalchemy.orm import Session

from programma_sa import AsyncJobContext, AsyncWorker, JobQueue, JobState, PassResult
from programma_sa._drivers.postgresql import notify_channel
from programma_sa.worker.listen import AsyncListener, conninfo_from_url

from ..asyncio.urls import async_url
from ..worker.support import get_job
from .conftest import MakeAsyncWorker
from .support import wait_for

pytestmark = pytest.mark.asyncio


class Started:
    """An async handler that notes when each job started (monotonic clock)."""

    def __init__(self) -> None:
        self.at: dict[object, float] = {}

    async def __call__(self, ctx: AsyncJobContext) -> None:
        self.at.setdefault(ctx.job.id, time.monotonic())


async def listening(worker: AsyncWorker) -> AsyncListener:
    listener: AsyncListener = await wait_for(lambda: worker.listener)
    assert await listener.wait_listening(10)
    return listener


def enqueue_and_commit(engine: Engine, queue: JobQueue, **options: Any) -> tuple[object, float]:
    with Session(engine) as session, session.begin():
        job_id = queue.add_job(session, "t", {}, **options)
    return job_id, time.monotonic()


def completed(engine: Engine, queue: JobQueue, job_id: object) -> bool:
    return get_job(engine, queue, job_id).state is JobState.COMPLETED


@pytest.mark.parametrize("driver", ["psycopg"], indirect=True)
async def test_an_idle_worker_starts_a_job_right_after_the_enqueue_commits(
    engine: Engine, queue: JobQueue, make_worker: MakeAsyncWorker
) -> None:
    started = Started()
    worker = make_worker(started, heartbeat=10.0, listen=True)
    worker.start()
    await listening(worker)
    await asyncio.sleep(0.2)  # let the loop settle into its 10 s idle wait

    job_id, committed = enqueue_and_commit(engine, queue)

    await wait_for(lambda: job_id in started.at, timeout=5)
    assert started.at[job_id] - committed < 2.0  # a heartbeat would take 10 s
    await wait_for(lambda: completed(engine, queue, job_id))


@pytest.mark.parametrize("driver", ["psycopg"], indirect=True)
async def test_a_rolled_back_enqueue_wakes_nobody_and_runs_nothing(
    engine: Engine, queue: JobQueue, make_worker: MakeAsyncWorker
) -> None:
    wake_times: list[float] = []
    listener = AsyncListener(
        conninfo_from_url(engine.url),
        notify_channel(queue.table),
        ["t"],
        lambda: wake_times.append(time.monotonic()),
    )
    started = Started()
    worker = make_worker(started, heartbeat=10.0, listen=True)
    listener.start()
    worker.start()
    try:
        assert await listener.wait_listening(10)
        await listening(worker)
        await wait_for(lambda: len(wake_times) == 1)  # the wake-up every (re)connection gives
        with Session(engine) as session:
            session.begin()
            rolled_back = queue.add_job(session, "t", {})
            session.rollback()
        # A committed enqueue on another topic proves notifications flow meanwhile.
        with Session(engine) as session, session.begin():
            queue.add_job(session, "other-topic", {})
        await asyncio.sleep(1.0)
        assert len(wake_times) == 1
        assert started.at == {} and worker.totals == PassResult()
        with Session(engine) as session:
            assert queue.get_job(session, rolled_back) is None
        job_id, _ = enqueue_and_commit(engine, queue)  # and a committed one does wake
        await wait_for(lambda: len(wake_times) == 2, timeout=5)
        await wait_for(lambda: job_id in started.at, timeout=5)
    finally:
        await listener.stop()


@pytest.mark.parametrize("driver", ["psycopg"], indirect=True)
async def test_the_listener_recovers_when_its_backend_is_terminated(
    engine: Engine, queue: JobQueue, make_worker: MakeAsyncWorker
) -> None:
    started = Started()
    worker = make_worker(started, heartbeat=10.0, listen=True)
    worker.start()
    listener = await listening(worker)
    first_pid = listener.backend_pid
    with engine.connect() as connection:
        assert connection.execute(
            text("SELECT pg_terminate_backend(:pid)"), {"pid": first_pid}
        ).scalar_one()
    await wait_for(lambda: listener.backend_pid not in (None, first_pid), timeout=10)
    await asyncio.sleep(0.2)

    job_id, committed = enqueue_and_commit(engine, queue)

    await wait_for(lambda: job_id in started.at, timeout=5)
    assert started.at[job_id] - committed < 2.0


@pytest.mark.parametrize("driver", ["psycopg"], indirect=True)
async def test_polling_only_with_listen_false(
    engine: Engine, queue: JobQueue, make_worker: MakeAsyncWorker
) -> None:
    worker = make_worker(Started(), heartbeat=0.2, listen=False)
    worker.start()
    job_id, _ = enqueue_and_commit(engine, queue)
    await wait_for(lambda: completed(engine, queue, job_id), timeout=5)
    assert worker.listener is None


@pytest.mark.parametrize("driver", ["asyncpg"], indirect=True)
async def test_an_idle_worker_wakes_when_a_scheduled_job_falls_due(
    engine: Engine, queue: JobQueue, make_worker: MakeAsyncWorker
) -> None:
    """On asyncpg: the listener is psycopg's whatever the engine's driver."""
    started = Started()
    worker = make_worker(started, heartbeat=30.0, listen=True)
    worker.start()
    await listening(worker)
    job_id, committed = enqueue_and_commit(engine, queue, run_after_seconds=1.0)
    await wait_for(lambda: job_id in started.at, timeout=10)
    assert 0.9 < started.at[job_id] - committed < 5.0  # due after 1 s; a heartbeat is 30 s


def _named(database_url: str, driver: str, name: str) -> AsyncEngine:
    """An async engine whose connections carry ``application_name`` ``name``."""
    if driver == "asyncpg":
        connect_args: dict[str, Any] = {"server_settings": {"application_name": name}}
    else:
        connect_args = {"application_name": name}
    return create_async_engine(async_url(database_url, driver), connect_args=connect_args)


async def test_the_loop_survives_losing_its_database_connections(
    database_url: str,
    driver: str,
    engine: Engine,
    queue: JobQueue,
    make_worker: MakeAsyncWorker,
    caplog: pytest.LogCaptureFixture,
) -> None:
    worker_engine = _named(database_url, driver, "programma-test-async-claims")
    try:
        worker = make_worker(Started(), bind=worker_engine, heartbeat=0.1)
        worker.start()
        first, _ = enqueue_and_commit(engine, queue)
        await wait_for(lambda: completed(engine, queue, first))
        with caplog.at_level(logging.ERROR, logger="programma_sa.worker"):
            with engine.connect() as connection:
                killed = connection.execute(
                    text(
                        "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                        "WHERE application_name = 'programma-test-async-claims'"
                    )
                ).scalar_one()
            assert killed >= 1
            second, _ = enqueue_and_commit(engine, queue)
            await wait_for(lambda: completed(engine, queue, second))
        assert any("claiming from t failed" in record.getMessage() for record in caplog.records)
        assert not await worker.join(0)  # still running
        worker.stop()
        assert await worker.join(10)
    finally:
        await worker_engine.dispose()


@pytest.mark.parametrize("mode", ["lease", "transaction"])
async def test_stop_lets_the_running_handler_finish(
    engine: Engine, queue: JobQueue, make_worker: MakeAsyncWorker, mode: str
) -> None:
    running, release = asyncio.Event(), asyncio.Event()

    async def handler(ctx: AsyncJobContext) -> None:
        running.set()
        await asyncio.wait_for(release.wait(), 10)
        assert ctx.stopping

    worker = make_worker(handler, heartbeat=0.1, mode=mode)
    worker.start()
    job_id, _ = enqueue_and_commit(engine, queue)
    await asyncio.wait_for(running.wait(), 10)
    worker.stop()
    assert not await worker.join(0.3)  # still waiting for the handler
    release.set()
    assert await worker.join(10)
    assert completed(engine, queue, job_id)
    assert worker.totals == PassResult(claimed=1, completed=1)


@pytest.mark.parametrize("mode", ["lease", "transaction"])
async def test_shutdown_timeout_cancels_a_stuck_handler(
    engine: Engine, queue: JobQueue, make_worker: MakeAsyncWorker, mode: str
) -> None:
    running = asyncio.Event()
    cancelled: list[bool] = []

    async def handler(ctx: AsyncJobContext) -> None:
        running.set()
        try:
            await asyncio.sleep(60)
        except asyncio.CancelledError:
            cancelled.append(True)
            raise

    worker = make_worker(handler, heartbeat=0.1, shutdown_timeout=0.2, mode=mode)
    worker.start()
    job_id, _ = enqueue_and_commit(engine, queue)
    await asyncio.wait_for(running.wait(), 10)
    worker.stop()
    assert await worker.join(5)  # gave up waiting after 0.2 s
    assert cancelled == [True]
    job = get_job(engine, queue, job_id)
    if mode == "lease":  # left to its lease
        assert job.state is JobState.ACTIVE and job.attempts == 1
    else:  # the claim's transaction rolled back: claimable again at once
        assert job.state is JobState.CREATED and job.attempts == 0


async def test_transaction_mode_loop_with_concurrency(
    engine: Engine, queue: JobQueue, make_worker: MakeAsyncWorker
) -> None:
    with Session(engine) as session, session.begin():
        job_ids = [queue.add_job(session, "t", {"n": n}) for n in range(12)]
    running: list[int] = []
    peak = 0

    async def handler(ctx: AsyncJobContext) -> None:
        nonlocal peak
        running.append(1)
        peak = max(peak, len(running))
        await asyncio.sleep(0.05)
        running.pop()

    worker = make_worker(handler, mode="transaction", concurrency=3, max_jobs=2)
    worker.start()
    await wait_for(lambda: worker.totals.completed == 12)
    assert {get_job(engine, queue, job_id).state for job_id in job_ids} == {JobState.COMPLETED}
    assert worker.totals == PassResult(claimed=12, completed=12)
    assert 1 <= peak <= 3  # one handler per transaction at a time, three transactions


async def test_lease_loop_with_concurrency_runs_every_job_once(
    engine: Engine, queue: JobQueue, make_worker: MakeAsyncWorker
) -> None:
    with Session(engine) as session, session.begin():
        job_ids = [queue.add_job(session, "t", {"n": n}) for n in range(25)]
    seen: list[int] = []

    async def handler(ctx: AsyncJobContext) -> None:
        seen.append(ctx.job.data["n"])
        await asyncio.sleep(0.01)

    worker = make_worker(handler, concurrency=4, max_jobs=3, heartbeat=0.1)
    worker.start()
    await wait_for(lambda: worker.totals.completed == 25)
    assert sorted(seen) == list(range(25))
    assert {get_job(engine, queue, job_id).state for job_id in job_ids} == {JobState.COMPLETED}


async def test_run_twice_at_once_is_refused(make_worker: MakeAsyncWorker) -> None:
    worker = make_worker(Started(), heartbeat=0.1)
    worker.start()
    await asyncio.sleep(0.05)
    with pytest.raises(Exception, match="this AsyncWorker is already running"):
        await worker.run()


async def test_the_worker_as_an_async_context_manager(
    engine: Engine, queue: JobQueue, make_worker: MakeAsyncWorker
) -> None:
    started = Started()
    async with make_worker(started, heartbeat=0.1) as worker:
        job_id, _ = enqueue_and_commit(engine, queue)
        await wait_for(lambda: completed(engine, queue, job_id))
    assert await worker.join(0)
    assert worker.totals == PassResult(claimed=1, completed=1)
