"""The worker loop in-process: LISTEN/NOTIFY wake-ups, look-ahead, reconnects, shutdown.

Each test runs on the sync Worker (its own threads) and on the AsyncWorker (a task of
the test's event loop); the LISTEN tests on one asyncio driver each, as the listener
is psycopg's whatever the engine's driver. The tests write and read through the sync
``engine`` (quick statements) and wait without blocking the event loop.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from typing import Any

import pytest
from sqlalchemy import Engine, text
from sqlalchemy.orm import Session

from programma_sa import JobQueue, JobState, PassResult

from .harness import Context, Harness, awaited, on
from .private import listener_beside, listening
from .support import get_job, wait_for

pytestmark = pytest.mark.asyncio


class Started:
    """A handler body that notes when each job started (monotonic clock)."""

    def __init__(self) -> None:
        self.at: dict[object, float] = {}

    async def __call__(self, ctx: Context) -> None:
        self.at.setdefault(ctx.job.id, time.monotonic())


def enqueue_and_commit(engine: Engine, queue: JobQueue, **options: Any) -> tuple[object, float]:
    with Session(engine) as session, session.begin():
        job_id = queue.add_job(session, "t", {}, **options)
    return job_id, time.monotonic()


def completed(engine: Engine, queue: JobQueue, job_id: object) -> bool:
    return get_job(engine, queue, job_id).state is JobState.COMPLETED


@on("sync", "async-psycopg")
@pytest.mark.postgresql_only("LISTEN/NOTIFY")
async def test_an_idle_worker_starts_a_job_right_after_the_enqueue_commits(
    engine: Engine, queue: JobQueue, harness: Harness
) -> None:
    """A NOTIFY wakes an idle worker long before its heartbeat."""
    started = Started()
    worker = harness.worker(started, heartbeat=10.0, listen=True)
    worker.start()
    await listening(worker)
    await asyncio.sleep(0.2)  # let the loop settle into its 10 s idle wait

    job_id, committed = enqueue_and_commit(engine, queue)

    await wait_for(lambda: job_id in started.at, timeout=5)
    assert started.at[job_id] - committed < 2.0  # a heartbeat would take 10 s
    await wait_for(lambda: completed(engine, queue, job_id))


@on("sync", "async-psycopg")
@pytest.mark.postgresql_only("LISTEN/NOTIFY")
async def test_a_rolled_back_enqueue_wakes_nobody_and_runs_nothing(
    engine: Engine, queue: JobQueue, harness: Harness
) -> None:
    """The NOTIFY is sent at COMMIT: a rolled-back enqueue sends none."""
    wake_times: list[float] = []
    started = Started()
    worker = harness.worker(started, heartbeat=10.0, listen=True)

    def wake() -> None:
        wake_times.append(time.monotonic())

    async with listener_beside(harness.kind, engine.url, queue.table, ["t"], wake) as listener:
        worker.start()
        assert await awaited(listener.wait_listening(10))
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


@on("sync", "async-psycopg")
@pytest.mark.postgresql_only("LISTEN/NOTIFY")
async def test_the_listener_recovers_when_its_backend_is_terminated(
    engine: Engine, queue: JobQueue, harness: Harness
) -> None:
    started = Started()
    worker = harness.worker(started, heartbeat=10.0, listen=True)
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


@on("sync", "async-psycopg")
async def test_polling_only_with_listen_false(
    engine: Engine, queue: JobQueue, harness: Harness
) -> None:
    worker = harness.worker(Started(), heartbeat=0.2, listen=False)
    worker.start()
    job_id, _ = enqueue_and_commit(engine, queue)
    await wait_for(lambda: completed(engine, queue, job_id), timeout=5)
    assert worker.listener is None


@on("sync", "async-asyncpg")
@pytest.mark.postgresql_only("LISTEN/NOTIFY")
async def test_an_idle_worker_wakes_when_a_scheduled_job_falls_due(
    engine: Engine, queue: JobQueue, harness: Harness
) -> None:
    """The idle wait ends when the next scheduled job falls due, not at the heartbeat."""
    started = Started()
    worker = harness.worker(started, heartbeat=30.0, listen=True)
    worker.start()
    await listening(worker)
    job_id, committed = enqueue_and_commit(engine, queue, run_after_seconds=1.0)
    await wait_for(lambda: job_id in started.at, timeout=10)
    assert 0.9 < started.at[job_id] - committed < 5.0  # due after 1 s; a heartbeat is 30 s


@pytest.mark.postgresql_only("backends terminated with pg_terminate_backend")
async def test_the_loop_survives_losing_its_database_connections(
    engine: Engine, queue: JobQueue, harness: Harness, caplog: pytest.LogCaptureFixture
) -> None:
    """Its claiming connections terminated, the loop logs, reconnects and goes on."""
    worker_engine = harness.engine(application_name="programma-test-claims")
    worker = harness.worker(Started(), bind=worker_engine, heartbeat=0.1)
    worker.start()
    first, _ = enqueue_and_commit(engine, queue)
    await wait_for(lambda: completed(engine, queue, first))
    with caplog.at_level(logging.ERROR, logger="programma_sa.worker"):
        with engine.connect() as connection:
            killed = connection.execute(
                text(
                    "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                    "WHERE application_name = 'programma-test-claims'"
                )
            ).scalar_one()
        assert killed >= 1
        second, _ = enqueue_and_commit(engine, queue)
        await wait_for(lambda: completed(engine, queue, second))
    assert any("claiming from t failed" in record.getMessage() for record in caplog.records)
    assert not await harness.join(worker, 0)  # still running
    worker.stop()
    assert await harness.join(worker, 10)


@pytest.mark.parametrize("mode", ["lease", "transaction"])
async def test_stop_lets_the_running_handler_finish(
    engine: Engine, queue: JobQueue, harness: Harness, mode: str
) -> None:
    """After stop() the running handler finishes (seeing ``ctx.stopping``) and completes."""
    running, release = harness.gate(), harness.gate()

    async def handler(ctx: Context) -> None:
        running.set()
        assert await awaited(release.wait(10))
        assert ctx.stopping

    worker = harness.worker(handler, heartbeat=0.1, mode=mode)
    worker.start()
    job_id, _ = enqueue_and_commit(engine, queue)
    await wait_for(running.is_set)
    worker.stop()
    assert not await harness.join(worker, 0.3)  # still waiting for the handler
    release.set()
    assert await harness.join(worker, 10)
    assert completed(engine, queue, job_id)
    assert worker.totals == PassResult(claimed=1, completed=1)


async def test_transaction_mode_loop_with_concurrency(
    engine: Engine, queue: JobQueue, harness: Harness
) -> None:
    """Three transactions at once, one handler each at a time: every job completes."""
    with Session(engine) as session, session.begin():
        job_ids = [queue.add_job(session, "t", {"n": n}) for n in range(12)]
    lock = threading.Lock()
    running = peak = 0

    async def handler(ctx: Context) -> None:
        nonlocal running, peak
        with lock:
            running += 1
            peak = max(peak, running)
        await awaited(harness.sleep(0.05))
        with lock:
            running -= 1

    worker = harness.worker(handler, mode="transaction", concurrency=3, max_jobs=2)
    worker.start()
    await wait_for(lambda: worker.totals.completed == 12)
    assert {get_job(engine, queue, job_id).state for job_id in job_ids} == {JobState.COMPLETED}
    assert worker.totals == PassResult(claimed=12, completed=12)
    assert 1 <= peak <= 3  # one handler per transaction at a time, three transactions


async def test_lease_loop_with_concurrency_runs_every_job_once(
    engine: Engine, queue: JobQueue, harness: Harness
) -> None:
    with Session(engine) as session, session.begin():
        job_ids = [queue.add_job(session, "t", {"n": n}) for n in range(25)]
    seen: list[int] = []

    async def handler(ctx: Context) -> None:
        seen.append(ctx.job.data["n"])
        await awaited(harness.sleep(0.01))

    worker = harness.worker(handler, concurrency=4, max_jobs=3, heartbeat=0.1)
    worker.start()
    await wait_for(lambda: worker.totals.completed == 25)
    assert sorted(seen) == list(range(25))
    assert {get_job(engine, queue, job_id).state for job_id in job_ids} == {JobState.COMPLETED}


async def test_run_twice_at_once_is_refused(harness: Harness) -> None:
    worker = harness.worker(Started(), heartbeat=0.1)
    worker.start()
    await asyncio.sleep(0.05)
    name = harness.worker_class.__name__
    with pytest.raises(Exception, match=f"this {name} is already running"):
        await awaited(worker.run())
