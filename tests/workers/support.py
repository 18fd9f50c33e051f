"""The worker tests' own reads, writes and waits: through the sync ``engine``, whatever the worker.

Also used by the CLI tests (:func:`blocking_wait_for`).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, select
from sqlalchemy.orm import Session

from programma_sa import JobDetail, JobQueue, JobState
from programma_sa._execute import execute

from ..app import Job, Order

#: The project's root: the working directory of worker processes.
ROOT = Path(__file__).resolve().parents[2]
#: The module of the handlers a worker process of each kind runs (``programma-sa worker``).
HANDLERS = {"sync": "tests.worker.handlers", "async": "tests.asyncio_worker.handlers"}


async def wait_for(condition: Callable[[], Any], timeout: float = 10.0) -> Any:
    """Poll ``condition`` (a plain function) until it is truthy; fail after ``timeout`` s.

    Waits without blocking the event loop, where an AsyncWorker may be running.
    """
    deadline = time.monotonic() + timeout
    while not (value := condition()):
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout} s")
        await asyncio.sleep(0.02)
    return value


def blocking_wait_for(condition: Callable[[], Any], timeout: float = 10.0) -> Any:
    """:func:`wait_for`, from code that runs no event loop."""
    return asyncio.run(wait_for(condition, timeout))


def enqueue(
    engine: Engine, queue: JobQueue, topic: str = "t", n: int = 1, **options: Any
) -> list[Any]:
    """Enqueue and commit ``n`` jobs of ``topic`` with data ``{"n": 0}`` … ``{"n": n - 1}``."""
    with Session(engine) as session, session.begin():
        return [queue.add_job(session, topic, {"n": i}, **options) for i in range(n)]


def get_job(engine: Engine, queue: JobQueue, job_id: object) -> JobDetail:
    with Session(engine) as session:
        job = queue.get_job(session, job_id)  # type: ignore[arg-type]
    assert job is not None
    return job


def all_completed(engine: Engine, queue: JobQueue, job_ids: list[Any]) -> bool:
    """Whether every one of ``job_ids`` is COMPLETED (committed)."""
    with Session(engine) as session:
        jobs = [queue.get_job(session, job_id) for job_id in job_ids]
    return all(job is not None and job.state is JobState.COMPLETED for job in jobs)


def order_ids(engine: Engine) -> list[int]:
    """The ids of the committed business rows (``tests.app.Order``)."""
    with Session(engine) as session:
        return list(session.scalars(select(Order.id).order_by(Order.id)))


def seconds_from_now(engine: Engine, moment: object) -> float:
    """``moment - now()`` in seconds, on the database clock."""
    assert isinstance(moment, datetime)
    with engine.connect() as connection:
        now = execute(connection, JobQueue(Job).operations.clock())
    return (moment - now).total_seconds()
