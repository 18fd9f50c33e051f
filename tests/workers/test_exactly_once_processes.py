"""Several worker processes (``programma-sa worker``) on one database: each job exactly once.

Runs on every test database. On SQLite it is the single writer's proof (issue 18):
four processes, two handler threads each, drain 2,000 jobs from one database file,
every job COMPLETED after exactly one claim (a second claim would count a second
attempt), and a job enqueued in a transaction that rolled back never runs. On
MariaDB, SKIP LOCKED's: eight processes over 5,000 jobs.
"""

from __future__ import annotations

import signal
import time
from collections import Counter

import pytest
from sqlalchemy import Engine, func, select
from sqlalchemy.orm import Session

from programma_sa import JobQueue, JobSpec, JobState

from ..app import Job, Order
from ..backends import DATABASE
from .test_processes import start_worker

#: Worker processes and jobs on each test database (issue 18).
PROCESSES, JOBS = {"mariadb": (8, 5_000)}.get(DATABASE, (4, 2_000))
#: The worker processes' handlers (tests.worker.handlers): in transaction mode each
#: job writes an Order row (primary key = the job's number) in the claim's transaction.
HANDLERS = {"lease": "tests.worker.handlers:slow", "transaction": "tests.worker.handlers:confirm"}


def _finished(engine: Engine) -> int:
    with engine.connect() as connection:
        return connection.execute(
            select(func.count()).where(Job.state == JobState.COMPLETED.value)
        ).scalar_one()


@pytest.mark.parametrize("mode", list(HANDLERS))
def test_worker_processes_run_each_job_exactly_once(
    database_url: str, engine: Engine, queue: JobQueue, mode: str
) -> None:
    with Session(engine) as session:
        session.add(Order(id=JOBS, note="rolled back"))
        rolled_back = queue.add_job(session, "t", {"order": JOBS})
        session.rollback()
    with Session(engine) as session, session.begin():
        queue.add_jobs(session, "t", [JobSpec(data={"order": n}) for n in range(JOBS)])
    workers = [
        start_worker(
            database_url,
            HANDLERS[mode],
            *("--mode", mode, "--concurrency", "2", "--max-jobs", "20", "--heartbeat", "0.2"),
            # Warnings and errors only: a line per job would fill the pipe (read at the
            # end) past a few hundred jobs per worker, and block the worker's logging.
            *("--log-level", "warning"),
        )
        for _ in range(PROCESSES)
    ]
    try:
        deadline = time.monotonic() + 180
        while _finished(engine) < JOBS and time.monotonic() < deadline:
            time.sleep(0.2)
        for worker in workers:
            worker.send_signal(signal.SIGTERM)
        outputs = [worker.output(timeout=30) for worker in workers]
    finally:
        for worker in workers:
            worker.kill()
    for worker, output in zip(workers, outputs, strict=True):
        assert worker.returncode == 0, output
        assert "Traceback" not in output and " ERROR " not in output, output
    with Session(engine) as session:
        jobs = session.execute(select(Job.state, Job.attempts)).all()
        assert Counter(jobs) == {(JobState.COMPLETED.value, 1): JOBS}
        assert queue.get_job(session, rolled_back) is None
        if mode == "transaction":
            notes = session.execute(select(Order.id, Order.note)).all()
            assert sorted(order_id for order_id, _ in notes) == list(range(JOBS))
            assert len({note for _, note in notes}) > 1  # the work really was shared
