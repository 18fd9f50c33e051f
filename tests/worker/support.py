"""Polling and reading helpers shared by the worker and CLI tests."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from sqlalchemy import Engine, text
from sqlalchemy.orm import Session

from programma_sa import JobDetail, JobQueue


def wait_for(condition: Callable[[], Any], timeout: float = 10.0, interval: float = 0.02) -> Any:
    """Poll ``condition`` until it returns something truthy; fail after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout} s")
        time.sleep(interval)


def get_job(engine: Engine, queue: JobQueue, job_id: object) -> JobDetail:
    with Session(engine) as session:
        job = queue.get_job(session, job_id)  # type: ignore[arg-type]
    assert job is not None
    return job


def seconds_from_now(engine: Engine, moment: object) -> float:
    """``moment - now()`` in seconds, on the database clock."""
    with engine.connect() as connection:
        return float(
            connection.execute(
                text("SELECT extract(epoch FROM CAST(:moment AS timestamptz) - now())"),
                {"moment": moment},
            ).scalar_one()
        )
