"""What a worker writes after each handler outcome, in both modes (driven by run_once).

Each test runs on the sync Worker and on the AsyncWorker over both asyncio drivers.
"""

from __future__ import annotations

import threading
from datetime import datetime, timedelta, timezone

import pytest
from sqlalchemy import Engine, event
from sqlalchemy.orm import Session

from programma_sa import JobQueue, JobState, PassResult, RetryPolicy

from ..app import Job, Order
from .harness import Context, Harness, awaited, noop
from .support import enqueue, get_job, order_ids, seconds_from_now

pytestmark = pytest.mark.asyncio

MODES = ["lease", "transaction"]


class Boom(RuntimeError):
    pass


# -- handler returns --------------------------------------------------------------------------


@pytest.mark.parametrize("mode", MODES)
async def test_success_completes_the_job(
    engine: Engine, queue: JobQueue, harness: Harness, mode: str
) -> None:
    """A handler that returns completes its job; in transaction mode its session is the
    flavour's and its write commits with the completion."""
    (job_id,) = enqueue(engine, queue)
    sessions: list[object] = []

    async def handler(ctx: Context) -> None:
        sessions.append(ctx.session)
        if ctx.session is not None:  # transaction mode: business write in the claim's tx
            ctx.session.add(Order(id=1, note=str(ctx.job.id)))
        await awaited(harness.sleep(0))

    result = await harness.run_once(harness.worker(handler, mode=mode))

    assert result == PassResult(claimed=1, completed=1)
    job = get_job(engine, queue, job_id)
    assert job.state is JobState.COMPLETED and job.finished_at is not None
    assert job.attempts == 1
    if mode == "lease":
        assert sessions == [None]
    else:
        assert isinstance(sessions[0], harness.session_class)
        assert order_ids(engine) == [1]


@pytest.mark.parametrize("mode", MODES)
async def test_untouched_job_without_auto_complete_comes_back_after_its_visibility_timeout(
    engine: Engine, queue: JobQueue, harness: Harness, mode: str
) -> None:
    """auto_complete=False: a job the handler left alone stays ACTIVE until its lease ends."""
    (job_id,) = enqueue(engine, queue, retry_after_seconds=0)  # lease runs out at once
    seen: list[int] = []

    async def handler(ctx: Context) -> None:
        seen.append(ctx.job.attempts)

    worker = harness.worker(handler, mode=mode, auto_complete=False)
    assert await harness.run_once(worker) == PassResult(claimed=1, left_untouched=1)
    job = get_job(engine, queue, job_id)
    assert job.state is JobState.ACTIVE and job.finished_at is None
    assert job.start_after == job.started_at  # started_at + 0 s

    assert await harness.run_once(worker) == PassResult(claimed=1, left_untouched=1)
    assert seen == [1, 2]


async def test_untouched_job_is_not_redelivered_before_its_visibility_timeout(
    engine: Engine, queue: JobQueue, harness: Harness
) -> None:
    """A job left alone is due again only ``retry_after_seconds`` after its claim."""
    (job_id,) = enqueue(engine, queue, retry_after_seconds=30)
    worker = harness.worker(noop, auto_complete=False)
    assert (await harness.run_once(worker)).claimed == 1
    assert (await harness.run_once(worker)).claimed == 0
    assert 28 < seconds_from_now(engine, get_job(engine, queue, job_id).start_after) <= 30


async def _processing(ctx: Context) -> None:
    await awaited(ctx.move_to_processing())


async def _failed(ctx: Context) -> None:
    await awaited(ctx.move_to_failed())


async def _deleted(ctx: Context) -> None:
    await awaited(ctx.move_to_done(delete=True))


async def _rescheduled(ctx: Context) -> None:
    await awaited(ctx.set_job_start_date(datetime.now(timezone.utc) + timedelta(hours=1)))


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize(
    ("steer", "expected_state"),
    [
        (_processing, JobState.PROCESSING),
        (_failed, JobState.FAILED),
        (_deleted, None),
        (_rescheduled, JobState.ACTIVE),
    ],
    ids=["processing", "failed", "deleted", "rescheduled"],
)
async def test_auto_complete_respects_what_the_handler_did(
    engine: Engine,
    queue: JobQueue,
    harness: Harness,
    mode: str,
    steer: object,
    expected_state: JobState | None,
) -> None:
    """A job the handler moved or rescheduled is not completed over its move."""
    (job_id,) = enqueue(engine, queue)
    result = await harness.run_once(harness.worker(steer, mode=mode))  # type: ignore[arg-type]

    assert result == PassResult(claimed=1, left_untouched=1)
    with Session(engine) as session:
        job = queue.get_job(session, job_id)
    assert (job.state if job is not None else None) is expected_state


async def test_auto_complete_skips_a_job_another_worker_claimed_after_its_lease_ran_out(
    engine: Engine, queue: JobQueue, harness: Harness
) -> None:
    """The completion is guarded: it does not overwrite another worker's newer lease."""
    (job_id,) = enqueue(engine, queue, retry_after_seconds=0)

    async def handler(ctx: Context) -> None:
        # Our lease has run out; another worker takes the job meanwhile.
        with Session(engine) as session, session.begin():
            assert [job.id for job in queue.claim_jobs(session, "t")] == [job_id]

    # Counted as lost (issue #15: the totals say what happened), with a WARNING.
    result = await harness.run_once(harness.worker(handler))
    assert result == PassResult(claimed=1, lost=1)
    job = get_job(engine, queue, job_id)
    assert job.state is JobState.ACTIVE and job.attempts == 2  # the other worker's lease stands


@pytest.mark.databases(
    "postgresql",
    "sqlite",
    reason="one UPDATE … RETURNING; MariaDB locks, updates and reads back (docs/mariadb.md)",
)
@pytest.mark.parametrize("concurrency", [1, 3])
async def test_lease_batch_is_completed_in_one_statement(
    engine: Engine, queue: JobQueue, harness: Harness, concurrency: int
) -> None:
    """Lease mode completes the untouched jobs of a batch with one UPDATE."""
    job_ids = enqueue(engine, queue, n=5)
    statements: list[str] = []

    def count(conn, cursor, statement, parameters, context, executemany) -> None:  # type: ignore[no-untyped-def]
        statements.append(statement)

    async def handler(ctx: Context) -> None:
        if ctx.job.data["n"] == 2:
            await awaited(ctx.move_to_processing())

    target = harness.sync_engine(harness.bind)
    event.listen(target, "before_cursor_execute", count)
    try:
        worker = harness.worker(handler, max_jobs=5, concurrency=concurrency)
        result = await harness.run_once(worker)
    finally:
        event.remove(target, "before_cursor_execute", count)

    assert result == PassResult(claimed=5, completed=4, left_untouched=1)
    completions = [s for s in statements if "SET state='completed'" in s.replace(" = ", "=")]
    assert len(completions) == 1, statements
    states = [get_job(engine, queue, job_id).state for job_id in job_ids]
    assert states == [JobState.COMPLETED] * 2 + [JobState.PROCESSING] + [JobState.COMPLETED] * 2


async def test_transaction_mode_commits_business_writes_with_the_completion(
    engine: Engine, queue: JobQueue, harness: Harness
) -> None:
    """Every handler's write through ``ctx.session`` commits with its job's completion."""
    enqueue(engine, queue, n=3)

    async def handler(ctx: Context) -> None:
        assert ctx.session is not None
        ctx.session.add(Order(id=ctx.job.data["n"] + 10))

    result = await harness.run_once(harness.worker(handler, mode="transaction"))
    assert result.completed == 3
    assert order_ids(engine) == [10, 11, 12]


# -- handler raises ---------------------------------------------------------------------------


@pytest.mark.parametrize("mode", MODES)
async def test_exception_records_the_error_and_retries_after_the_backoff(
    engine: Engine, queue: JobQueue, harness: Harness, mode: str
) -> None:
    """A raising handler: ``last_error`` recorded, the job due after the policy's delay,
    and (transaction mode) the handler's write rolled back."""
    (job_id,) = enqueue(engine, queue)

    async def handler(ctx: Context) -> None:
        if ctx.session is not None:
            ctx.session.add(Order(id=7))  # rolled back with the handler's savepoint
            await awaited(ctx.session.flush())
        raise Boom("payment API said no")

    worker = harness.worker(handler, mode=mode, retry=RetryPolicy.constant(60.0, max_attempts=3))
    assert await harness.run_once(worker) == PassResult(claimed=1, retried=1)

    job = get_job(engine, queue, job_id)
    assert job.state is JobState.ACTIVE and job.finished_at is None
    assert 58 < seconds_from_now(engine, job.start_after) <= 60
    error = job.attributes["last_error"]
    assert error["type"] == f"{__name__}.Boom" and error["message"] == "payment API said no"
    assert error["attempt"] == 1 and "in handler" in error["traceback"]
    assert order_ids(engine) == []
    assert await harness.run_once(worker) == PassResult()  # not due before its backoff


@pytest.mark.parametrize("mode", MODES)
async def test_a_handler_that_moved_its_job_then_raised(
    engine: Engine, queue: JobQueue, harness: Harness, mode: str
) -> None:
    """Lease mode: the move stands. Transaction mode: it rolls back, a plain failure."""
    (job_id,) = enqueue(engine, queue)

    async def handler(ctx: Context) -> None:
        await awaited(ctx.move_to_processing())
        raise Boom("after the move")

    worker = harness.worker(handler, mode=mode, retry=RetryPolicy.constant(60.0))
    result = await harness.run_once(worker)

    job = get_job(engine, queue, job_id)
    if mode == "lease":  # the move committed on its own: it stands, nothing is recorded
        assert result == PassResult(claimed=1, left_untouched=1)
        assert job.state is JobState.PROCESSING and "last_error" not in job.attributes
    else:  # the move rolled back with the savepoint: retried like any failure
        assert result == PassResult(claimed=1, retried=1)
        assert job.state is JobState.ACTIVE and job.attributes["last_error"]["attempt"] == 1


@pytest.mark.parametrize("mode", MODES)
async def test_exception_then_exhaustion_moves_the_job_to_failed(
    engine: Engine, queue: JobQueue, harness: Harness, mode: str
) -> None:
    """The last attempt's failure moves the job to FAILED, keeping its attributes."""
    (job_id,) = enqueue(engine, queue, attributes={"keep": "me"})

    async def handler(ctx: Context) -> None:
        raise Boom(f"attempt {ctx.job.attempts}")

    worker = harness.worker(handler, mode=mode, retry=RetryPolicy.constant(0.0, max_attempts=2))

    assert await harness.run_once(worker) == PassResult(claimed=1, retried=1)
    first = get_job(engine, queue, job_id)
    assert first.state is JobState.ACTIVE and first.attributes["last_error"]["attempt"] == 1
    assert seconds_from_now(engine, first.start_after) <= 0  # due again at once

    assert await harness.run_once(worker) == PassResult(claimed=1, failed=1)
    job = get_job(engine, queue, job_id)
    assert job.state is JobState.FAILED and job.finished_at is not None and job.attempts == 2
    assert job.attributes["keep"] == "me"
    assert job.attributes["last_error"]["message"] == "attempt 2"
    assert await harness.run_once(worker) == PassResult()  # nothing left to claim
    assert worker.totals == PassResult(claimed=2, retried=1, failed=1)


@pytest.mark.parametrize("mode", MODES)
async def test_exception_without_retry_policy_leaves_the_job_to_its_visibility_timeout(
    engine: Engine, queue: JobQueue, harness: Harness, mode: str
) -> None:
    """retry=None: the error is recorded, the claim's lease decides when the job is due."""
    (job_id,) = enqueue(engine, queue, retry_after_seconds=45)

    async def handler(ctx: Context) -> None:
        raise Boom("no policy")

    result = await harness.run_once(harness.worker(handler, mode=mode, retry=None))
    assert result == PassResult(claimed=1, retried=1)
    job = get_job(engine, queue, job_id)
    assert job.state is JobState.ACTIVE and job.attributes["last_error"]["message"] == "no policy"
    assert job.started_at is not None
    assert job.start_after == job.started_at + timedelta(seconds=45)


async def test_transaction_mode_a_failing_job_does_not_undo_its_batch_neighbours(
    engine: Engine, queue: JobQueue, harness: Harness
) -> None:
    """Each handler runs in a savepoint: one failure rolls back only its own write."""
    job_ids = enqueue(engine, queue, n=3)

    async def handler(ctx: Context) -> None:
        assert ctx.session is not None
        ctx.session.add(Order(id=ctx.job.data["n"]))
        await awaited(ctx.session.flush())
        if ctx.job.data["n"] == 1:
            raise Boom("middle one")

    worker = harness.worker(handler, mode="transaction", retry=RetryPolicy.constant(30))
    assert await harness.run_once(worker) == PassResult(claimed=3, completed=2, retried=1)
    assert order_ids(engine) == [0, 2]
    states = [get_job(engine, queue, job_id).state for job_id in job_ids]
    assert states == [JobState.COMPLETED, JobState.ACTIVE, JobState.COMPLETED]


@pytest.mark.parametrize("mode", MODES)
async def test_an_error_too_large_for_the_payload_limit_is_recorded_in_short(
    engine: Engine, harness: Harness, mode: str
) -> None:
    """An error record over ``max_payload_bytes`` is cut down, not a rolled-back claim."""
    (job_id,) = enqueue(engine, JobQueue(Job, max_payload_bytes=400))

    async def handler(ctx: Context) -> None:
        raise Boom("x" * 5000)

    small = harness.queue_class(Job, max_payload_bytes=400)
    worker = harness.worker(handler, queue=small, mode=mode)
    assert await harness.run_once(worker) == PassResult(claimed=1, retried=1)
    error = get_job(engine, JobQueue(Job), job_id).attributes["last_error"]
    assert error["type"].endswith("Boom") and error["message"] == "x" * 200
    assert "traceback" not in error and error["attempt"] == 1


# -- passes, topics, concurrency --------------------------------------------------------------


async def test_run_once_with_nothing_due_claims_nothing(harness: Harness) -> None:
    assert await harness.run_once(harness.worker(noop)) == PassResult()


async def test_several_topics_are_claimed_in_one_pass(
    engine: Engine, queue: JobQueue, harness: Harness
) -> None:
    """A pass claims from each of the worker's topics, and from no other."""
    enqueue(engine, queue, "a", n=2)
    enqueue(engine, queue, "b", n=2)
    enqueue(engine, queue, "other")
    seen: list[str] = []

    async def handler(ctx: Context) -> None:
        seen.append(ctx.job.topic)

    result = await harness.run_once(harness.worker(handler, ["a", "b"]))
    assert result == PassResult(claimed=4, completed=4)
    assert sorted(seen) == ["a", "a", "b", "b"]


@pytest.mark.parametrize(("concurrency", "jobs"), [(1, 6), (3, 6), (4, 4)])
async def test_lease_concurrency_bounds_the_handlers_running_at_once(
    engine: Engine, queue: JobQueue, harness: Harness, concurrency: int, jobs: int
) -> None:
    """A lease batch runs ``concurrency`` handlers at once: that many, never more."""
    enqueue(engine, queue, n=jobs)
    lock = threading.Lock()
    running = peak = 0
    full = harness.gate()

    async def handler(ctx: Context) -> None:
        nonlocal running, peak
        with lock:
            running += 1
            peak = max(peak, running)
            if running == concurrency:
                full.set()
        # Each handler waits until `concurrency` of them run at once: proof that
        # they do run concurrently (a serial run would time out here).
        assert await awaited(full.wait(10))
        await awaited(harness.sleep(0.01))
        with lock:
            running -= 1

    worker = harness.worker(handler, max_jobs=jobs, concurrency=concurrency)
    assert await harness.run_once(worker) == PassResult(claimed=jobs, completed=jobs)
    assert peak == concurrency


async def test_lease_context_methods_commit_on_their_own(
    engine: Engine, queue: JobQueue, harness: Harness
) -> None:
    """In lease mode each context method commits at once, visible to other sessions."""
    (job_id,) = enqueue(engine, queue)

    async def handler(ctx: Context) -> None:
        assert await awaited(ctx.set_attributes({"progress": 50}))
        assert await awaited(ctx.set_retry_after_seconds(120))
        assert get_job(engine, queue, ctx.job.id).attributes == {"progress": 50}
        assert not ctx.stopping

    # set_retry_after_seconds re-measured the lease: the job changed, so it stays ACTIVE.
    result = await harness.run_once(harness.worker(handler))
    assert result == PassResult(claimed=1, left_untouched=1)
    job = get_job(engine, queue, job_id)
    assert job.state is JobState.ACTIVE and job.retry_after_seconds == 120
