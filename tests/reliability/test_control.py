"""Control of jobs in flight with real worker processes (issue #15).

* Handlers of 3x their lease under two ``programma-sa worker`` processes at their
  default settings: every job runs once, and is COMPLETED as soon as its handler
  returns — not when its claim batch ends.
* SIGKILL mid-handler: the job is redelivered, after its (renewed) lease.
* ``pg_terminate_backend`` of every backend, twice a second, through a lease-mode
  drain with a 2 s lease: no job runs twice (a completion whose connection died is
  written again on a fresh one instead of leaving the job to its lease).
* SIGTERM with claimed jobs not yet started: they are claimable at once.
* Pause and resume a topic under four worker processes.
"""

from __future__ import annotations

import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import datetime

import pytest
from sqlalchemy import Engine, func, select, text
from sqlalchemy import exc as sa_exc
from sqlalchemy.orm import Session

from programma_sa import JobQueue, JobSpec, JobState

from ..app import Job
from . import deliveries
from .conftest import Figures
from .drain import STARTED_MESSAGE, wait_for_listeners
from .faults import WorkerPool, terminate_backends
from .worker_process import command, repository_root

pytestmark = pytest.mark.reliability

QUEUE = JobQueue(Job)
TABLE = Job.__table__


def cli_worker(topic: str, *options: str) -> list[str]:
    """``programma-sa worker`` with the ledger handler, at its default settings."""
    return [
        sys.executable,
        "-m",
        "programma_sa",
        "worker",
        "tests.reliability.control_handlers:ledgered",
        "--topic",
        topic,
        *options,
    ]


@pytest.fixture
def cli_env(private_database_url: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """``DATABASE_URL`` for the CLI workers (and their handler's ledger)."""
    monkeypatch.setenv("DATABASE_URL", private_database_url)
    yield private_database_url


def enqueue(engine: Engine, topic: str, specs: list[JobSpec]) -> list[uuid.UUID]:
    with Session(engine) as session, session.begin():
        return QUEUE.add_jobs(session, topic, specs)


def jobs_by_id(engine: Engine, ids: list[uuid.UUID]) -> dict[uuid.UUID, dict[str, object]]:
    with engine.connect() as connection:
        rows = connection.execute(
            select(TABLE.c.id, TABLE.c.state, TABLE.c.attempts, TABLE.c.finished_at).where(
                TABLE.c.id.in_(ids)
            )
        ).mappings()
        return {row["id"]: dict(row) for row in rows}


def wait_until(
    condition: Callable[[], object], timeout: float, pool: WorkerPool, what: str
) -> None:
    deadline = time.monotonic() + timeout
    while not _survived(condition):
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} not within {timeout} s:\n{pool.logs()}")
        time.sleep(0.05)


def _survived(condition: Callable[[], object]) -> object:
    """``condition()``, or False when the test's own connection was terminated too."""
    try:
        return condition()
    except sa_exc.DBAPIError:
        return False


def all_finished(engine: Engine, ids: list[uuid.UUID]) -> bool:
    return all(job["finished_at"] is not None for job in jobs_by_id(engine, ids).values())


def test_long_handlers_run_once_under_two_default_cli_workers(
    cli_env: str, private_engine: Engine, figures: Figures
) -> None:
    """The issue's first report, at test size: three handlers each 3x the lease (2 s
    lease, 6 s handler) under two default workers (max_jobs 10, concurrency 1): one
    worker claims all three and runs them in turn for 18 s; renewal keeps each lease,
    and each job is COMPLETED when its own handler returns."""
    ids = enqueue(private_engine, "long", [JobSpec(data={"sleep": 6}, retry_after_seconds=2)] * 3)
    with WorkerPool(cli_worker("long"), repository_root()) as pool:
        pool.spawn(2)
        wait_until(lambda: all_finished(private_engine, ids), 60, pool, "three 6 s jobs")
        pool.shutdown(30, STARTED_MESSAGE)
        ledger = deliveries.read_all(private_engine)
        summaries = [line for line in pool.logs().splitlines() if "worker stopped:" in line]
    verdict = deliveries.analyse(ids, ledger)
    assert not verdict.lost and not verdict.redelivered and not verdict.completed_twice
    jobs = jobs_by_id(private_engine, ids)
    assert {(job["state"], job["attempts"]) for job in jobs.values()} == {("completed", 1)}
    # Nothing stayed ACTIVE after its handler returned: completed within a second of
    # the handler's own "done" stamp, though its batch-mates ran on for up to 12 s.
    lags = []
    for delivery in ledger:
        assert delivery.completed_at is not None
        finished_at = jobs[delivery.job_id]["finished_at"]
        assert isinstance(finished_at, datetime)
        lags.append((finished_at - delivery.completed_at).total_seconds())
    assert all(0 <= lag < 1.0 for lag in lags), lags
    assert len(summaries) == 2 and sum(" completed 3," in line for line in summaries) == 1
    figures.add("long handlers, 2 default CLI workers", runs=len(ledger), max_lag_s=max(lags))


def test_sigkill_mid_handler_redelivers_after_the_lease(
    cli_env: str, private_engine: Engine, figures: Figures
) -> None:
    (job_id,) = enqueue(
        private_engine,
        "crash",
        [JobSpec(data={"sleep": 30, "first_only": True}, retry_after_seconds=2)],
    )
    with WorkerPool(cli_worker("crash"), repository_root()) as pool:
        pool.spawn(2)
        wait_until(lambda: deliveries.read_all(private_engine), 30, pool, "the first delivery")
        (first,) = deliveries.read_all(private_engine)
        time.sleep(2.5)  # past the claim's lease: only renewal keeps the job held
        (victim,) = [worker for worker in pool.alive() if worker.pid == first.worker_pid]
        with Session(private_engine) as session:
            lease_end = QUEUE.get_job(session, job_id).start_after  # type: ignore[union-attr]
        pool.kill(victim)
        assert lease_end is not None and lease_end > first.lease_until  # type: ignore[operator]
        wait_until(lambda: all_finished(private_engine, [job_id]), 30, pool, "the redelivery")
        pool.shutdown(30, STARTED_MESSAGE)
    first, second = deliveries.read_all(private_engine)
    assert (first.attempt, second.attempt) == (1, 2)
    assert first.completed_at is None and second.completed_at is not None
    # Not before the last lease the killed worker wrote had run out.
    assert second.claimed_at >= lease_end
    figures.add(
        "SIGKILL mid-handler",
        redelivered_after_lease_s=(second.claimed_at - lease_end).total_seconds(),
    )


def test_terminated_backends_during_lease_completions_run_no_job_twice(
    private_database_url: str, private_engine: Engine, figures: Figures
) -> None:
    ids = enqueue(private_engine, "kill", [JobSpec(data={}, retry_after_seconds=2)] * 1000)
    argv = command(
        private_database_url, "kill", mode="lease", concurrency=2, max_jobs=5, work_seconds=0.01
    )
    stop = threading.Event()
    terminated: list[int] = []

    def terminate_twice_a_second() -> None:
        while not stop.wait(0.5):
            terminated.append(terminate_backends(private_database_url))

    with WorkerPool(argv, repository_root()) as pool:
        pool.spawn(2)
        killer = threading.Thread(target=terminate_twice_a_second)
        killer.start()
        try:
            wait_until(lambda: all_finished(private_engine, ids), 120, pool, "the drain")
        finally:
            stop.set()
            killer.join()
        pool.shutdown(30, STARTED_MESSAGE)
        written_again = pool.count_in_logs("writing them again on a fresh connection")
        queued_again = pool.count_in_logs("could not complete")
    verdict = deliveries.analyse(ids, deliveries.read_all(private_engine))
    assert not verdict.lost
    assert not verdict.completed_twice, verdict.completed_twice
    assert not verdict.redelivered, verdict.redelivered
    assert not verdict.early_redeliveries
    assert sum(terminated) > 0
    figures.add(
        "pg_terminate_backend 2/s, lease drain",
        jobs=len(ids),
        backends_terminated=sum(terminated),
        outcomes_written_again=written_again,
        outcomes_queued_again=queued_again,
        ran_twice=len(verdict.completed_twice),
    )


def test_sigterm_releases_claimed_jobs_that_have_not_started(
    cli_env: str, private_engine: Engine, figures: Figures
) -> None:
    first, *waiting = enqueue(
        private_engine, "stop", [JobSpec(data={"sleep": 3})] + [JobSpec(data={})] * 4
    )
    with WorkerPool(cli_worker("stop"), repository_root()) as pool:
        (worker,) = pool.spawn(1)
        wait_until(lambda: deliveries.read_all(private_engine), 30, pool, "the first delivery")
        assert worker.wait_for_log(STARTED_MESSAGE, 10)
        worker.process.terminate()
        signalled = time.monotonic()

        def released() -> bool:
            jobs = jobs_by_id(private_engine, waiting)
            return all((job["state"], job["attempts"]) == ("created", 0) for job in jobs.values())

        wait_until(released, 10, pool, "the release")
        released_after = time.monotonic() - signalled
        # Claimable at once: due now, while the first handler still runs.
        with Session(private_engine) as session, session.begin():
            claimed = QUEUE.claim_jobs(session, "stop", max_jobs=10)
            assert sorted(job.id for job in claimed) == sorted(waiting)
            assert QUEUE.get_job(session, first).state is JobState.ACTIVE  # type: ignore[union-attr]
        assert worker.process.wait(30) == 0
        log = worker.log_text()
    assert released_after < 3  # well before the 3 s handler ends, and its lease
    assert "released 4" in log and " completed 1," in log
    figures.add("SIGTERM with 4 claimed, unstarted jobs", released_after_s=round(released_after, 2))


def test_pause_stops_four_workers_and_resume_starts_them(
    private_database_url: str, private_engine: Engine, figures: Figures
) -> None:
    argv = command(
        private_database_url, "p", mode="lease", concurrency=2, max_jobs=5, work_seconds=0.02
    )
    with WorkerPool(argv, repository_root()) as pool:
        pool.spawn(4)
        wait_for_listeners(private_engine, pool)
        # Paused while they drain: from the pause's commit on, no claim takes a job.
        busy = enqueue(private_engine, "p", [JobSpec(data={})] * 600)
        wait_until(
            lambda: (
                sum(1 for j in jobs_by_id(private_engine, busy).values() if j["finished_at"]) > 50
            ),
            60,
            pool,
            "the drain's start",
        )
        with Session(private_engine) as session, session.begin():
            assert QUEUE.pause_topic(session, "p")
        # A moment after the pause committed, on the database clock. (Not paused_at,
        # the pausing transaction's start: a claim between that and the commit does
        # not see the pause yet, and rightly claims.)
        with private_engine.connect() as connection:
            paused_at = connection.execute(text("SELECT statement_timestamp()")).scalar_one()
        time.sleep(2)  # many wake-ups: the enqueues below notify every worker
        later = enqueue(private_engine, "p", [JobSpec(data={})] * 20)
        time.sleep(1)
        with private_engine.connect() as connection:
            claimed_after = connection.execute(
                select(func.count()).where(TABLE.c.started_at > paused_at)
            ).scalar_one()
            untouched = connection.execute(
                select(func.count()).where(
                    TABLE.c.id.in_(later), TABLE.c.state == "created", TABLE.c.attempts == 0
                )
            ).scalar_one()
        left = sum(1 for j in jobs_by_id(private_engine, busy).values() if not j["finished_at"])
        assert claimed_after == 0 and untouched == 20 and left > 0
        with Session(private_engine) as session, session.begin():
            assert QUEUE.resume_topic(session, "p")
        resumed = time.monotonic()
        wait_until(lambda: all_finished(private_engine, busy + later), 60, pool, "the rest")
        drained_after = time.monotonic() - resumed
        pool.shutdown(30, STARTED_MESSAGE)
    verdict = deliveries.analyse(busy + later, deliveries.read_all(private_engine))
    assert not verdict.lost and not verdict.completed_twice
    assert len(verdict.per_worker) == 4
    figures.add(
        "pause/resume, 4 workers",
        waiting_when_paused=left,
        claimed_after_pause=claimed_after,
        drained_after_resume_s=round(drained_after, 2),
    )
