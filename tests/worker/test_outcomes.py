"""What the worker writes after each handler outcome, in both modes (driven by run_once)."""

from __future__ import annotations

import threading
from datetime import datetime, timedelta, timezone

import pytest
from sqlalchemy import Engine, event, select
from sqlalchemy.orm import Session, sessionmaker

from programma_sa import (
    ConfigurationError,
    JobContext,
    JobQueue,
    JobState,
    PassResult,
    RetryPolicy,
    Worker,
)

from ..app import Job, Order
from .conftest import MakeWorker
from .support import get_job, seconds_from_now, wait_for

MODES = ["lease", "transaction"]


def enqueue(
    engine: Engine, queue: JobQueue, topic: str = "t", n: int = 1, **options: object
) -> list:
    with Session(engine) as session, session.begin():
        return [queue.add_job(session, topic, {"n": i}, **options) for i in range(n)]  # type: ignore[arg-type]


def order_ids(engine: Engine) -> list[int]:
    with Session(engine) as session:
        return list(session.scalars(select(Order.id).order_by(Order.id)))


# -- handler returns --------------------------------------------------------------------------


@pytest.mark.parametrize("mode", MODES)
def test_success_completes_the_job(
    engine: Engine, queue: JobQueue, make_worker: MakeWorker, mode: str
) -> None:
    (job_id,) = enqueue(engine, queue)
    sessions: list[object] = []

    def handler(ctx: JobContext) -> None:
        sessions.append(ctx.session)
        if ctx.session is not None:  # transaction mode: business write in the claim's tx
            ctx.session.add(Order(id=1, note=str(ctx.job.id)))

    result = make_worker(handler, mode=mode).run_once()

    assert result == PassResult(claimed=1, completed=1)
    job = get_job(engine, queue, job_id)
    assert job.state is JobState.COMPLETED and job.finished_at is not None
    assert job.attempts == 1
    if mode == "lease":
        assert sessions == [None]
    else:
        assert order_ids(engine) == [1]


@pytest.mark.parametrize("mode", MODES)
def test_untouched_job_without_auto_complete_comes_back_after_its_visibility_timeout(
    engine: Engine, queue: JobQueue, make_worker: MakeWorker, mode: str
) -> None:
    (job_id,) = enqueue(engine, queue, retry_after_seconds=0)  # lease runs out at once
    seen: list[int] = []
    worker = make_worker(lambda ctx: seen.append(ctx.job.attempts), mode=mode, auto_complete=False)

    assert worker.run_once() == PassResult(claimed=1, left_untouched=1)
    job = get_job(engine, queue, job_id)
    assert job.state is JobState.ACTIVE and job.finished_at is None
    assert job.start_after == job.started_at  # started_at + 0 s

    assert worker.run_once() == PassResult(claimed=1, left_untouched=1)
    assert seen == [1, 2]


def test_untouched_job_is_not_redelivered_before_its_visibility_timeout(
    engine: Engine, queue: JobQueue, make_worker: MakeWorker
) -> None:
    (job_id,) = enqueue(engine, queue, retry_after_seconds=30)
    worker = make_worker(lambda ctx: None, auto_complete=False)
    assert worker.run_once().claimed == 1
    assert worker.run_once().claimed == 0
    assert 28 < seconds_from_now(engine, get_job(engine, queue, job_id).start_after) <= 30


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize(
    ("steer", "expected_state"),
    [
        (lambda ctx: ctx.move_to_processing(), JobState.PROCESSING),
        (lambda ctx: ctx.move_to_failed(), JobState.FAILED),
        (lambda ctx: ctx.move_to_done(delete=True), None),
        (
            lambda ctx: ctx.set_job_start_date(datetime.now(timezone.utc) + timedelta(hours=1)),
            JobState.ACTIVE,
        ),
    ],
    ids=["processing", "failed", "deleted", "rescheduled"],
)
def test_auto_complete_respects_what_the_handler_did(
    engine: Engine,
    queue: JobQueue,
    make_worker: MakeWorker,
    mode: str,
    steer: object,
    expected_state: JobState | None,
) -> None:
    (job_id,) = enqueue(engine, queue)
    result = make_worker(steer, mode=mode).run_once()

    assert result == PassResult(claimed=1, left_untouched=1)
    with Session(engine) as session:
        job = queue.get_job(session, job_id)
    assert (job.state if job is not None else None) is expected_state


def test_auto_complete_skips_a_job_another_worker_claimed_after_its_lease_ran_out(
    engine: Engine, queue: JobQueue, make_worker: MakeWorker
) -> None:
    (job_id,) = enqueue(engine, queue, retry_after_seconds=0)

    def handler(ctx: JobContext) -> None:
        # Our lease has run out; another worker takes the job meanwhile.
        with Session(engine) as session, session.begin():
            assert [job.id for job in queue.claim_jobs(session, "t")] == [job_id]

    # Counted as lost (issue #15: the totals say what happened), with a WARNING.
    assert make_worker(handler).run_once() == PassResult(claimed=1, lost=1)
    job = get_job(engine, queue, job_id)
    assert job.state is JobState.ACTIVE and job.attempts == 2  # the other worker's lease stands


def test_lease_batch_is_completed_in_one_statement(
    engine: Engine, queue: JobQueue, make_worker: MakeWorker
) -> None:
    job_ids = enqueue(engine, queue, n=5)
    statements: list[str] = []

    def count(conn, cursor, statement, parameters, context, executemany) -> None:  # type: ignore[no-untyped-def]
        statements.append(statement)

    def handler(ctx: JobContext) -> None:
        if ctx.job.data["n"] == 2:
            ctx.move_to_processing()

    event.listen(engine, "before_cursor_execute", count)
    try:
        result = make_worker(handler, max_jobs=5).run_once()
    finally:
        event.remove(engine, "before_cursor_execute", count)

    assert result == PassResult(claimed=5, completed=4, left_untouched=1)
    completions = [s for s in statements if "SET state='completed'" in s.replace(" = ", "=")]
    assert len(completions) == 1, statements
    states = [get_job(engine, queue, job_id).state for job_id in job_ids]
    assert states == [JobState.COMPLETED] * 2 + [JobState.PROCESSING] + [JobState.COMPLETED] * 2


def test_transaction_mode_commits_business_writes_with_the_completion(
    engine: Engine, queue: JobQueue, make_worker: MakeWorker
) -> None:
    enqueue(engine, queue, n=3)

    def handler(ctx: JobContext) -> None:
        assert ctx.session is not None
        ctx.session.add(Order(id=ctx.job.data["n"] + 10))

    assert make_worker(handler, mode="transaction").run_once().completed == 3
    assert order_ids(engine) == [10, 11, 12]


# -- handler raises ---------------------------------------------------------------------------


class Boom(RuntimeError):
    pass


@pytest.mark.parametrize("mode", MODES)
def test_exception_records_the_error_and_retries_after_the_backoff(
    engine: Engine, queue: JobQueue, make_worker: MakeWorker, mode: str
) -> None:
    (job_id,) = enqueue(engine, queue)

    def handler(ctx: JobContext) -> None:
        if ctx.session is not None:
            ctx.session.add(Order(id=7))  # rolled back with the handler's savepoint
        raise Boom("payment API said no")

    worker = make_worker(handler, mode=mode, retry=RetryPolicy.constant(60.0, max_attempts=3))
    assert worker.run_once() == PassResult(claimed=1, retried=1)

    job = get_job(engine, queue, job_id)
    assert job.state is JobState.ACTIVE and job.finished_at is None
    assert 58 < seconds_from_now(engine, job.start_after) <= 60
    error = job.attributes["last_error"]
    assert error["type"] == f"{__name__}.Boom" and error["message"] == "payment API said no"
    assert error["attempt"] == 1 and "in handler" in error["traceback"]
    assert order_ids(engine) == []
    assert worker.run_once() == PassResult()  # not due before its backoff


@pytest.mark.parametrize("mode", MODES)
def test_a_handler_that_moved_its_job_then_raised(
    engine: Engine, queue: JobQueue, make_worker: MakeWorker, mode: str
) -> None:
    (job_id,) = enqueue(engine, queue)

    def handler(ctx: JobContext) -> None:
        ctx.move_to_processing()
        raise Boom("after the move")

    result = make_worker(handler, mode=mode, retry=RetryPolicy.constant(60.0)).run_once()

    job = get_job(engine, queue, job_id)
    if mode == "lease":  # the move committed on its own: it stands, nothing is recorded
        assert result == PassResult(claimed=1, left_untouched=1)
        assert job.state is JobState.PROCESSING and "last_error" not in job.attributes
    else:  # the move rolled back with the savepoint: retried like any failure
        assert result == PassResult(claimed=1, retried=1)
        assert job.state is JobState.ACTIVE and job.attributes["last_error"]["attempt"] == 1


@pytest.mark.parametrize("mode", MODES)
def test_exception_then_exhaustion_moves_the_job_to_failed(
    engine: Engine, queue: JobQueue, make_worker: MakeWorker, mode: str
) -> None:
    (job_id,) = enqueue(engine, queue, attributes={"keep": "me"})

    def handler(ctx: JobContext) -> None:
        raise Boom(f"attempt {ctx.job.attempts}")

    worker = make_worker(handler, mode=mode, retry=RetryPolicy.constant(0.0, max_attempts=2))

    assert worker.run_once() == PassResult(claimed=1, retried=1)
    first = get_job(engine, queue, job_id)
    assert first.state is JobState.ACTIVE and first.attributes["last_error"]["attempt"] == 1
    assert seconds_from_now(engine, first.start_after) <= 0  # due again at once

    assert worker.run_once() == PassResult(claimed=1, failed=1)
    job = get_job(engine, queue, job_id)
    assert job.state is JobState.FAILED and job.finished_at is not None and job.attempts == 2
    assert job.attributes["keep"] == "me"
    assert job.attributes["last_error"]["message"] == "attempt 2"
    assert worker.run_once() == PassResult()  # nothing left to claim
    assert worker.totals == PassResult(claimed=2, retried=1, failed=1)


@pytest.mark.parametrize("mode", MODES)
def test_exception_without_retry_policy_leaves_the_job_to_its_visibility_timeout(
    engine: Engine, queue: JobQueue, make_worker: MakeWorker, mode: str
) -> None:
    (job_id,) = enqueue(engine, queue, retry_after_seconds=45)

    def handler(ctx: JobContext) -> None:
        raise Boom("no policy")

    assert make_worker(handler, mode=mode, retry=None).run_once() == PassResult(
        claimed=1, retried=1
    )
    job = get_job(engine, queue, job_id)
    assert job.state is JobState.ACTIVE and job.attributes["last_error"]["message"] == "no policy"
    assert job.start_after == job.started_at + timedelta(seconds=45)


def test_transaction_mode_a_failing_job_does_not_undo_its_batch_neighbours(
    engine: Engine, queue: JobQueue, make_worker: MakeWorker
) -> None:
    job_ids = enqueue(engine, queue, n=3)

    def handler(ctx: JobContext) -> None:
        assert ctx.session is not None
        ctx.session.add(Order(id=ctx.job.data["n"]))
        if ctx.job.data["n"] == 1:
            raise Boom("middle one")

    worker = make_worker(handler, mode="transaction", retry=RetryPolicy.constant(30))
    assert worker.run_once() == PassResult(claimed=3, completed=2, retried=1)
    assert order_ids(engine) == [0, 2]
    states = [get_job(engine, queue, job_id).state for job_id in job_ids]
    assert states == [JobState.COMPLETED, JobState.ACTIVE, JobState.COMPLETED]


# -- passes, topics, concurrency --------------------------------------------------------------


def test_run_once_with_nothing_due_claims_nothing(make_worker: MakeWorker) -> None:
    assert make_worker(lambda ctx: None).run_once() == PassResult()


def test_several_topics_are_claimed_in_one_pass(
    engine: Engine, queue: JobQueue, make_worker: MakeWorker
) -> None:
    enqueue(engine, queue, "a", n=2)
    enqueue(engine, queue, "b", n=2)
    enqueue(engine, queue, "other")
    seen: list[str] = []
    result = make_worker(lambda ctx: seen.append(ctx.job.topic), ["a", "b"]).run_once()
    assert result == PassResult(claimed=4, completed=4)
    assert sorted(seen) == ["a", "a", "b", "b"]


def test_lease_concurrency_runs_a_batch_in_parallel(
    engine: Engine, queue: JobQueue, make_worker: MakeWorker
) -> None:
    enqueue(engine, queue, n=4)
    barrier = threading.Barrier(4, timeout=10)  # passes only if 4 handlers run at once
    worker = make_worker(lambda ctx: barrier.wait(), concurrency=4, max_jobs=4)
    assert worker.run_once() == PassResult(claimed=4, completed=4)


def test_lease_context_methods_commit_on_their_own(
    engine: Engine, queue: JobQueue, make_worker: MakeWorker
) -> None:
    (job_id,) = enqueue(engine, queue)

    def handler(ctx: JobContext) -> None:
        assert ctx.set_attributes({"progress": 50})
        assert ctx.set_retry_after_seconds(120)
        assert get_job(engine, queue, ctx.job.id).attributes == {"progress": 50}

    # set_retry_after_seconds re-measured the lease: the job changed, so it stays ACTIVE.
    assert make_worker(handler).run_once() == PassResult(claimed=1, left_untouched=1)
    job = get_job(engine, queue, job_id)
    assert job.state is JobState.ACTIVE and job.retry_after_seconds == 120


def test_process_jobs_is_the_seed_shaped_entry_point(engine: Engine, queue: JobQueue) -> None:
    (done_id, untouched_id) = enqueue(engine, queue, "emails", n=2, retry_after_seconds=30)

    def handler(ctx: JobContext) -> None:
        if ctx.job.id == done_id:
            ctx.move_to_done()

    worker = queue.process_jobs(
        sessionmaker(engine), handler, topic_name="emails", heart_beat=0.1, max_jobs=5
    )
    try:
        wait_for(lambda: worker.totals.claimed == 2)
    finally:
        worker.stop()
        assert worker.join(10)
    assert get_job(engine, queue, done_id).state is JobState.COMPLETED
    assert get_job(engine, queue, untouched_id).state is JobState.ACTIVE  # the seed's way
    assert worker.totals == PassResult(claimed=2, left_untouched=2)


# -- settings ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"mode": "eager"}, "mode must be one of lease, transaction, got 'eager'"),
        ({"heartbeat": 0}, r"heartbeat must be a finite number of seconds > 0, got 0"),
        ({"heartbeat": float("inf")}, "heartbeat must be a finite number of seconds"),
        ({"max_jobs": 0}, "max_jobs must be an int >= 1, got 0"),
        ({"concurrency": 1.5}, "concurrency must be an int >= 1, got 1.5"),
        ({"shutdown_timeout": -1}, r"shutdown_timeout must be a finite number of seconds >= 0"),
        ({"retry": 3}, "retry must be a RetryPolicy or None, got 3"),
        ({"listen": "yes"}, "listen must be True or False, got 'yes'"),
        ({"auto_complete": None}, "auto_complete must be True or False, got None"),
        ({"topics": []}, "topics must be a topic or a non-empty list of topics"),
        ({"topics": ["ok", ""]}, "topics: topic must not be empty"),
        ({"handler": "not callable"}, "handler must be callable"),
        ({"database_url": "::nope::", "listen": True}, "database_url is not a valid database URL"),
    ],
)
def test_bad_settings_are_refused_with_the_setting_named(
    engine: Engine, queue: JobQueue, settings: dict[str, object], message: str
) -> None:
    arguments: dict[str, object] = {"topics": "t", "handler": lambda ctx: None, **settings}
    topics, handler = arguments.pop("topics"), arguments.pop("handler")
    arguments.setdefault("listen", False)
    with pytest.raises(ConfigurationError, match=message):
        Worker(queue, engine, topics, handler, **arguments)  # type: ignore[arg-type]


def test_listening_needs_a_url_when_given_a_bare_session_factory(
    engine: Engine, queue: JobQueue
) -> None:
    with pytest.raises(ConfigurationError, match="listen=True needs the database to LISTEN on"):
        Worker(queue, lambda: Session(engine), "t", lambda ctx: None)
    Worker(queue, sessionmaker(engine), "t", lambda ctx: None)  # the URL comes from its bind


def test_bad_queue_and_bind_are_refused(engine: Engine, queue: JobQueue) -> None:
    with pytest.raises(ConfigurationError, match="queue must be a JobQueue"):
        Worker("jobs", engine, "t", lambda ctx: None)  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError, match="expected an Engine or a session factory"):
        Worker(queue, 42, "t", lambda ctx: None, listen=False)  # type: ignore[arg-type]


@pytest.mark.parametrize("mode", MODES)
def test_an_error_too_large_for_the_payload_limit_is_recorded_in_short(
    engine: Engine, mode: str
) -> None:
    small = JobQueue(Job, max_payload_bytes=400)
    (job_id,) = enqueue(engine, small)

    def handler(ctx: JobContext) -> None:
        raise Boom("x" * 5000)

    worker = Worker(small, engine, "t", handler, mode=mode, listen=False)
    assert worker.run_once() == PassResult(claimed=1, retried=1)  # not a rolled-back claim
    error = get_job(engine, small, job_id).attributes["last_error"]
    assert error["type"].endswith("Boom") and error["message"] == "x" * 200
    assert "traceback" not in error and error["attempt"] == 1
