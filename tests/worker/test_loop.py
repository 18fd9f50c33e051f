"""The worker loop in-process: LISTEN/NOTIFY wake-ups, look-ahead, reconnects, shutdown."""

from __future__ import annotations

import logging
import threading
import time

import pytest
from sqlalchemy import Engine, create_engine, text
from sqlalchemy.orm import Session

from programma_sa import JobContext, JobQueue, JobState, PassResult
from programma_sa._drivers.postgresql import notify_channel
from programma_sa.worker.listen import Listener, conninfo_from_url

from .conftest import MakeWorker
from .support import get_job, wait_for


class Started:
    """A handler that notes when each job started (monotonic clock)."""

    def __init__(self) -> None:
        self.at: dict[object, float] = {}

    def __call__(self, ctx: JobContext) -> None:
        self.at.setdefault(ctx.job.id, time.monotonic())


def listening(worker: object) -> Listener:
    listener = wait_for(lambda: getattr(worker, "listener", None))
    assert listener.wait_listening(10)
    return listener  # type: ignore[no-any-return]


def enqueue_and_commit(engine: Engine, queue: JobQueue, **options: object) -> tuple[object, float]:
    with Session(engine) as session, session.begin():
        job_id = queue.add_job(session, "t", {}, **options)  # type: ignore[arg-type]
    return job_id, time.monotonic()


def test_an_idle_worker_starts_a_job_right_after_the_enqueue_commits(
    engine: Engine, queue: JobQueue, make_worker: MakeWorker
) -> None:
    started = Started()
    worker = make_worker(started, heartbeat=10.0, listen=True)
    worker.start()
    listening(worker)
    time.sleep(0.2)  # let the loop settle into its 10 s idle wait

    job_id, committed = enqueue_and_commit(engine, queue)

    wait_for(lambda: job_id in started.at, timeout=5)
    assert started.at[job_id] - committed < 2.0  # a heartbeat would take 10 s
    wait_for(lambda: get_job(engine, queue, job_id).state is JobState.COMPLETED)


def test_a_rolled_back_enqueue_wakes_nobody_and_runs_nothing(
    engine: Engine, queue: JobQueue, make_worker: MakeWorker
) -> None:
    wake_times: list[float] = []
    listener = Listener(
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
        assert listener.wait_listening(10)
        listening(worker)
        wait_for(lambda: len(wake_times) == 1)  # the wake-up every (re)connection gives
        with Session(engine) as session:
            session.begin()
            rolled_back = queue.add_job(session, "t", {})
            session.rollback()
        # A committed enqueue on another topic proves notifications flow meanwhile.
        with Session(engine) as session, session.begin():
            queue.add_job(session, "other-topic", {})
        time.sleep(1.0)
        assert len(wake_times) == 1
        assert started.at == {} and worker.totals == PassResult()
        with Session(engine) as session:
            assert queue.get_job(session, rolled_back) is None
        job_id, _ = enqueue_and_commit(engine, queue)  # and a committed one does wake
        wait_for(lambda: len(wake_times) == 2, timeout=5)
        wait_for(lambda: job_id in started.at, timeout=5)
    finally:
        listener.stop(timeout=5)


def test_the_listener_recovers_when_its_backend_is_terminated(
    engine: Engine, queue: JobQueue, make_worker: MakeWorker
) -> None:
    started = Started()
    worker = make_worker(started, heartbeat=10.0, listen=True)
    worker.start()
    listener = listening(worker)
    first_pid = listener.backend_pid
    with engine.connect() as connection:
        assert connection.execute(
            text("SELECT pg_terminate_backend(:pid)"), {"pid": first_pid}
        ).scalar_one()
    wait_for(lambda: listener.backend_pid not in (None, first_pid), timeout=10)
    time.sleep(0.2)

    job_id, committed = enqueue_and_commit(engine, queue)

    wait_for(lambda: job_id in started.at, timeout=5)
    assert started.at[job_id] - committed < 2.0


def test_polling_only_with_listen_false(
    engine: Engine, queue: JobQueue, make_worker: MakeWorker
) -> None:
    started = Started()
    worker = make_worker(started, heartbeat=0.2, listen=False)
    worker.start()
    job_id, _ = enqueue_and_commit(engine, queue)
    wait_for(lambda: get_job(engine, queue, job_id).state is JobState.COMPLETED, timeout=5)
    assert worker.listener is None


def test_an_idle_worker_wakes_when_a_scheduled_job_falls_due(
    engine: Engine, queue: JobQueue, make_worker: MakeWorker
) -> None:
    started = Started()
    worker = make_worker(started, heartbeat=30.0, listen=True)
    worker.start()
    listening(worker)
    job_id, committed = enqueue_and_commit(engine, queue, run_after_seconds=1.0)
    wait_for(lambda: job_id in started.at, timeout=10)
    assert 0.9 < started.at[job_id] - committed < 5.0  # due after 1 s; a heartbeat is 30 s


def test_the_loop_survives_losing_its_database_connections(
    database_url: str,
    engine: Engine,
    queue: JobQueue,
    make_worker: MakeWorker,
    caplog: pytest.LogCaptureFixture,
) -> None:
    worker_engine = create_engine(
        database_url, connect_args={"application_name": "programma-test-claims"}
    )
    try:
        started = Started()
        worker = make_worker(started, bind=worker_engine, heartbeat=0.1)
        worker.start()
        first, _ = enqueue_and_commit(engine, queue)
        wait_for(lambda: get_job(engine, queue, first).state is JobState.COMPLETED)
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
            wait_for(lambda: get_job(engine, queue, second).state is JobState.COMPLETED)
        assert any("claiming from t failed" in record.getMessage() for record in caplog.records)
        assert worker._thread is not None and worker._thread.is_alive()
        worker.stop()
        assert worker.join(10)
    finally:
        worker_engine.dispose()


@pytest.mark.parametrize("mode", ["lease", "transaction"])
def test_stop_lets_the_running_handler_finish(
    engine: Engine, queue: JobQueue, make_worker: MakeWorker, mode: str
) -> None:
    running, release = threading.Event(), threading.Event()

    def handler(ctx: JobContext) -> None:
        running.set()
        assert release.wait(10)

    worker = make_worker(handler, heartbeat=0.1, mode=mode)
    worker.start()
    job_id, _ = enqueue_and_commit(engine, queue)
    assert running.wait(10)
    worker.stop()
    assert not worker.join(0.3)  # still waiting for the handler
    release.set()
    assert worker.join(10)
    assert get_job(engine, queue, job_id).state is JobState.COMPLETED
    assert worker.totals == PassResult(claimed=1, completed=1)


def test_shutdown_timeout_leaves_a_stuck_job_to_its_visibility_timeout(
    engine: Engine, queue: JobQueue, make_worker: MakeWorker
) -> None:
    running, release = threading.Event(), threading.Event()

    def handler(ctx: JobContext) -> None:
        running.set()
        release.wait(10)

    worker = make_worker(handler, heartbeat=0.1, shutdown_timeout=0.2)
    worker.start()
    job_id, _ = enqueue_and_commit(engine, queue)
    try:
        assert running.wait(10)
        worker.stop()
        assert worker.join(5)  # gave up waiting after 0.2 s
        assert get_job(engine, queue, job_id).state is JobState.ACTIVE
    finally:
        release.set()


def test_transaction_mode_loop_with_concurrency(
    engine: Engine, queue: JobQueue, make_worker: MakeWorker
) -> None:
    with Session(engine) as session, session.begin():
        job_ids = [queue.add_job(session, "t", {"n": n}) for n in range(12)]
    worker = make_worker(lambda ctx: None, mode="transaction", concurrency=3, max_jobs=2)
    worker.start()
    wait_for(lambda: worker.totals.completed == 12)
    assert {get_job(engine, queue, job_id).state for job_id in job_ids} == {JobState.COMPLETED}
    assert worker.totals == PassResult(claimed=12, completed=12)
