"""Both workers and the control of jobs in flight (issue #15), on real PostgreSQL:
leases renewed while a handler runs, each completion written when its job ends,
cancellation, results, release at shutdown, the counts, and a completion written
again after its connection died. Shared tests run once per flavour; what only one
worker does is marked with :func:`~.harness.on` (the AsyncWorker's cancellation of
a handler's task: tests/asyncio_worker/test_control.py)."""

from __future__ import annotations

import logging
import time

import pytest
from sqlalchemy import Engine, create_engine, select, text
from sqlalchemy.orm import Session

from programma_sa import CancelOutcome, JobCancelled, JobQueue, JobState, PassResult
from programma_sa._execute import execute

from ..app import Order
from ..backends import ON_SQLITE
from .harness import Context, Harness, awaited, on
from .support import enqueue, get_job, wait_for

pytestmark = pytest.mark.asyncio

MODES = ["lease", "transaction"]


def cancel(engine: Engine, queue: JobQueue, job_id: object) -> CancelOutcome:
    with Session(engine) as session, session.begin():
        return queue.cancel_job(session, job_id)  # type: ignore[arg-type]


# -- long handlers in lease mode ---------------------------------------------------------


@pytest.mark.parametrize("renewal", [True, False], ids=["renewed", "not-renewed"])
async def test_a_handler_may_run_past_its_lease_without_a_second_delivery(
    engine: Engine, queue: JobQueue, harness: Harness, renewal: bool
) -> None:
    """A 1 s lease, a 3.5 s handler, and a rival claiming every 0.2 s: renewed, the
    job is never delivered twice and its result is stored; without renewal (the old
    behaviour) the rival takes it once the lease runs out — what the test would see
    if renewal broke. On SQLite a 3 s lease and a 10.5 s handler: each renewal waits
    its turn for the single write lock behind the rival's claims, which on a loaded
    machine took over a second (docs/sqlite.md, "Several worker processes")."""
    lease = 3 if ON_SQLITE else 1
    (job_id,) = enqueue(engine, queue, retry_after_seconds=lease)
    runs: list[int] = []
    started, done = harness.gate(), harness.gate()

    async def handler(ctx: Context) -> str:
        runs.append(ctx.job.attempts)
        started.set()
        await awaited(harness.sleep(3.5 * lease))
        done.set()
        return "slow but once"

    worker = harness.worker(handler, heartbeat=5.0, lease_renewal=renewal)
    worker.start()
    await wait_for(started.is_set)
    rival: list[object] = []
    deadline = time.monotonic() + 10 * lease
    while not done.is_set() and time.monotonic() < deadline:
        with Session(engine) as session, session.begin():
            rival += [job.id for job in queue.claim_jobs(session, "t")]
        await awaited(harness.sleep(0.2))
    assert done.is_set()
    if not renewal:
        assert job_id in rival  # claimed again (each time its 1 s lease ran out)
        return
    assert rival == [] and runs == [1]
    job = await wait_for(
        lambda: (j := get_job(engine, queue, job_id)).state is JobState.COMPLETED and j
    )
    assert (job.attempts, job.result) == (1, "slow but once")


@on("sync")
async def test_each_completion_is_written_when_its_job_ends(
    engine: Engine, queue: JobQueue, harness: Harness
) -> None:
    """Two jobs of one claim on one thread: the first is COMPLETED while the second's
    handler still runs (not when the batch ends)."""
    quick, slow = enqueue(engine, queue, n=2)
    release = harness.gate()

    async def handler(ctx: Context) -> None:
        if ctx.job.id == slow:
            assert await awaited(release.wait(20))

    worker = harness.worker(handler, max_jobs=2)
    worker.start()
    try:
        await wait_for(lambda: get_job(engine, queue, quick).state is JobState.COMPLETED, 5)
        assert get_job(engine, queue, slow).state is JobState.ACTIVE
    finally:
        release.set()
    await wait_for(lambda: get_job(engine, queue, slow).state is JobState.COMPLETED)
    worker.stop()
    assert await harness.join(worker, 10)
    assert worker.totals == PassResult(claimed=2, completed=2)


# -- cancel ------------------------------------------------------------------------------


class Waits:
    """A handler that waits until its job is cancelled (at most 20 s), noting when."""

    def __init__(self, harness: Harness) -> None:
        self.running = harness.gate()
        self.saw_cancel_at: float | None = None

    async def __call__(self, ctx: Context) -> None:
        if ctx.session is not None:
            ctx.session.add(Order(id=1))  # rolled back with the cancelled job
        self.running.set()
        if await awaited(ctx.wait_cancelled(20)):
            self.saw_cancel_at = time.monotonic()
            ctx.raise_if_cancelled()


@pytest.mark.postgresql_only(
    "NOTIFY; on SQLite the lease renewal tells the worker (its test runs there)"
)
@on("sync")
@pytest.mark.parametrize("mode", MODES)
async def test_a_running_handler_learns_of_its_cancellation_by_notification(
    engine: Engine, queue: JobQueue, harness: Harness, mode: str
) -> None:
    (job_id,) = enqueue(engine, queue)
    handler = Waits(harness)
    # A 10 s heartbeat: only the notification can tell the handler within a second.
    worker = harness.worker(handler, mode=mode, heartbeat=10.0, listen=True)
    worker.start()
    await wait_for(handler.running.is_set)
    time.sleep(0.3)  # the listener is up (it wakes on every (re)connection)
    asked = time.monotonic()
    outcome = cancel(engine, queue, job_id)
    # Lease mode: the row is free, CANCELLED at once. Transaction mode: the pass holds
    # it locked, and the cancel does not wait for that lock.
    assert outcome is (CancelOutcome.CANCELLED if mode == "lease" else CancelOutcome.REQUESTED)
    await wait_for(lambda: handler.saw_cancel_at is not None, 5)
    assert handler.saw_cancel_at is not None and handler.saw_cancel_at - asked < 1.0
    await wait_for(lambda: get_job(engine, queue, job_id).state is JobState.CANCELLED)
    await wait_for(lambda: worker.totals.cancelled == 1)
    worker.stop()
    assert await harness.join(worker, 10)
    assert worker.totals == PassResult(claimed=1, cancelled=1)
    with Session(engine) as session:  # transaction mode: the job's writes rolled back
        assert session.scalars(select(Order.id)).all() == []
    job = get_job(engine, queue, job_id)
    assert job.attempts == 1 and "last_error" not in job.attributes  # never retried


async def test_without_a_notification_the_lease_pass_tells_the_handler(
    engine: Engine, queue: JobQueue, harness: Harness
) -> None:
    (job_id,) = enqueue(engine, queue)
    handler = Waits(harness)
    worker = harness.worker(handler, heartbeat=0.5, listen=False, cancel_grace_period=30)
    worker.start()
    await wait_for(handler.running.is_set)
    assert cancel(engine, queue, job_id) is CancelOutcome.CANCELLED
    await wait_for(lambda: handler.saw_cancel_at is not None, 5)
    await wait_for(lambda: worker.totals.cancelled == 1)
    assert get_job(engine, queue, job_id).state is JobState.CANCELLED


async def test_a_handler_may_cancel_its_own_job(
    engine: Engine, queue: JobQueue, harness: Harness
) -> None:
    (job_id,) = enqueue(engine, queue)

    async def handler(ctx: Context) -> None:
        raise JobCancelled("nothing left to do")

    assert await harness.run_once(harness.worker(handler)) == PassResult(claimed=1, cancelled=1)
    assert get_job(engine, queue, job_id).state is JobState.CANCELLED


async def test_a_cancelled_waiting_job_never_runs(
    engine: Engine, queue: JobQueue, harness: Harness
) -> None:
    (job_id,) = enqueue(engine, queue)
    assert cancel(engine, queue, job_id) is CancelOutcome.CANCELLED
    ran: list[object] = []

    async def handler(ctx: Context) -> None:
        ran.append(ctx.job.id)

    assert await harness.run_once(harness.worker(handler)) == PassResult()
    assert ran == []


# -- results -----------------------------------------------------------------------------


@pytest.mark.parametrize("mode", MODES)
async def test_the_handlers_return_value_is_stored_with_the_completion(
    engine: Engine,
    queue: JobQueue,
    harness: Harness,
    mode: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    stored, unstorable, nothing = enqueue(engine, queue, n=3)

    async def handler(ctx: Context) -> object:
        return {0: {"sum": 42, "parts": [40, 2]}, 1: object(), 2: None}[ctx.job.data["n"]]

    with caplog.at_level(logging.WARNING, logger="programma_sa.worker"):
        result = await harness.run_once(harness.worker(handler, mode=mode, max_jobs=3))
    assert result == PassResult(claimed=3, completed=3)
    assert get_job(engine, queue, stored).result == {"sum": 42, "parts": [40, 2]}
    assert get_job(engine, queue, unstorable).result is None
    assert get_job(engine, queue, nothing).result is None
    (warning,) = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert warning.getMessage().startswith(
        f"job {unstorable} [t]: its handler's return value is not stored as its result "
        "(the handler's result is not JSON-serialisable: Object of type object"
    )


# -- shutdown ----------------------------------------------------------------------------


async def test_stopping_releases_the_claimed_jobs_that_have_not_started(
    engine: Engine, queue: JobQueue, harness: Harness
) -> None:
    first, *waiting = enqueue(engine, queue, n=3)
    running, release = harness.gate(), harness.gate()

    async def handler(ctx: Context) -> None:
        running.set()
        assert await awaited(release.wait(20))

    worker = harness.worker(handler, max_jobs=3)
    worker.start()
    await wait_for(running.is_set)
    worker.stop()
    try:
        # Claimable at once, while the first handler still runs, the delivery uncounted.
        for job_id in waiting:
            await wait_for(
                lambda job_id=job_id: get_job(engine, queue, job_id).state is JobState.CREATED
            )
        with Session(engine) as session:
            now = execute(session, queue.operations.clock())
        starts = [get_job(engine, queue, job_id).start_after for job_id in [first, *waiting]]
        assert sum(start is not None and start <= now for start in starts) == 2
        assert {get_job(engine, queue, job_id).attempts for job_id in waiting} == {0}
    finally:
        release.set()
    assert await harness.join(worker, 10)
    assert get_job(engine, queue, first).state is JobState.COMPLETED
    assert worker.totals == PassResult(claimed=3, completed=1, released=2)


@on("sync")
async def test_handlers_past_the_shutdown_timeout_are_counted_as_abandoned(
    engine: Engine, queue: JobQueue, harness: Harness, caplog: pytest.LogCaptureFixture
) -> None:
    enqueue(engine, queue)
    running, release = harness.gate(), harness.gate()

    async def handler(ctx: Context) -> None:
        running.set()
        await awaited(release.wait(20))

    worker = harness.worker(handler, shutdown_timeout=0.2)
    worker.start()
    try:
        await wait_for(running.is_set)
        with caplog.at_level(logging.INFO, logger="programma_sa.worker"):
            worker.stop()
            assert await harness.join(worker, 5)
        assert worker.totals == PassResult(claimed=1, abandoned=1)
        assert "worker stopped: claimed 1, completed 0, retried 0, failed 0, abandoned 1, " in (
            caplog.text
        )
    finally:
        release.set()


# -- a completion whose connection died ---------------------------------------------------


@pytest.mark.postgresql_only("kills the connection with pg_terminate_backend")
@on("sync")
async def test_a_completion_whose_connection_died_is_written_again_on_a_fresh_one(
    database_url: str, queue: JobQueue, engine: Engine, harness: Harness
) -> None:
    """The handler kills the worker's pooled connection before returning: the first
    completion fails on it, the second — on a fresh connection — lands, so the job
    is not left to wait out its lease and run again."""
    (job_id,) = enqueue(engine, queue)
    worker_engine = create_engine(
        database_url, pool_size=1, max_overflow=0, connect_args={"application_name": "victim"}
    )

    async def handler(ctx: Context) -> str:
        with engine.connect() as connection:
            killed = connection.execute(
                text(
                    "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                    "WHERE application_name = 'victim' AND pid <> pg_backend_pid()"
                )
            ).scalar_one()
        assert killed == 1
        return "done"

    try:
        result = await harness.run_once(harness.worker(handler, bind=worker_engine))
    finally:
        worker_engine.dispose()
    assert result == PassResult(claimed=1, completed=1)
    job = get_job(engine, queue, job_id)
    assert (job.state, job.attempts, job.result) == (JobState.COMPLETED, 1, "done")
