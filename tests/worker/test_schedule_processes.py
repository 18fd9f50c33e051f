"""Periodic schedules run by several real worker processes, with no leader.

Each process is ``programma-sa worker … --schedules tests.worker.schedules:…``. What
counts is the jobs table afterwards: one job per fire time, no fire time left out
while workers ran, and the missed-fire policy across a stretch with no worker.
"""

from __future__ import annotations

import itertools
import signal
import subprocess
import time
from datetime import datetime, timedelta

from sqlalchemy import Engine, func, select

from programma_sa import jobs_table

from ..app import Job
from .support import wait_for
from .test_processes import start_worker

TABLE = jobs_table(Job)
SECOND = timedelta(seconds=1)


def start_scheduling_worker(database_url: str, schedules: str) -> subprocess.Popen[str]:
    """A worker process of topic ``ticks`` (too) running ``schedules``."""
    return start_worker(
        database_url,
        "--topic",
        "ticks",
        "--heartbeat",
        "10",
        "--schedules",
        f"tests.worker.schedules:{schedules}",
    )


def stop(workers: list[subprocess.Popen[str]], how: signal.Signals) -> None:
    for worker in workers:
        worker.send_signal(how)
    for worker in workers:
        output, _ = worker.communicate(timeout=30)
        if how is signal.SIGTERM:
            assert worker.returncode == 0, output


def fire_times(engine: Engine, schedule: str) -> list[datetime]:
    """Each job's fire time, for the jobs of ``schedule`` (sorted, duplicates kept)."""
    fire_time = TABLE.c.attributes["fire_time"].astext
    with engine.connect() as connection:
        rows = connection.scalars(
            select(fire_time).where(TABLE.c.attributes["schedule"].astext == schedule)
        )
        return sorted(datetime.fromisoformat(value) for value in rows)


def count_of(engine: Engine, schedule: str) -> int:
    with engine.connect() as connection:
        return (
            connection.scalar(
                select(func.count())
                .select_from(TABLE)
                .where(TABLE.c.attributes["schedule"].astext == schedule)
            )
            or 0
        )


def gaps(times: list[datetime]) -> list[tuple[datetime, datetime]]:
    return [(a, b) for a, b in itertools.pairwise(times) if b - a != SECOND]


def test_four_workers_enqueue_exactly_one_job_per_fire_time(
    database_url: str, engine: Engine
) -> None:
    workers = [start_scheduling_worker(database_url, "TICKS") for _ in range(4)]
    try:
        wait_for(lambda: count_of(engine, "tick") >= 3, timeout=30)
        start = count_of(engine, "tick")
        wait_for(lambda: count_of(engine, "tick") >= start + 5, timeout=30)
    finally:
        stop(workers, signal.SIGTERM)
    times = fire_times(engine, "tick")
    assert len(times) == len(set(times)), "a fire time was enqueued twice"
    assert gaps(times) == [], "a fire time was left out while workers ran"
    assert len(times) >= 8


def test_workers_killed_and_restarted_across_fire_times_follow_the_missed_fire_policy(
    database_url: str, engine: Engine
) -> None:
    workers = [start_scheduling_worker(database_url, "RESTART") for _ in range(2)]
    try:
        wait_for(lambda: count_of(engine, "skip") >= 3, timeout=30)
    finally:
        stop(workers, signal.SIGKILL)
    down = count_of(engine, "skip")
    time.sleep(6)  # no worker: fire times go by (more than grace + catch_up of them)
    workers = [start_scheduling_worker(database_url, "RESTART") for _ in range(2)]
    try:
        wait_for(lambda: count_of(engine, "skip") >= down + 3, timeout=30)
    finally:
        stop(workers, signal.SIGTERM)

    skipped = fire_times(engine, "skip")
    caught_up = fire_times(engine, "catch-up-2")
    assert len(skipped) == len(set(skipped)) and len(caught_up) == len(set(caught_up))
    # Skip: the fire times nobody saw within grace are gone: one gap, while no worker ran.
    ((last_before, first_after),) = gaps(skipped)
    assert first_after - last_before >= 4 * SECOND
    # Catch up 2: the same, plus exactly the two latest missed fire times — at the
    # restart, and at the first start too (a starting worker knows nothing of the past:
    # what is older than grace counts as missed).
    first = skipped[0]
    assert set(skipped) <= set(caught_up)
    assert sorted(set(caught_up) - set(skipped)) == [
        first - 2 * SECOND,
        first - SECOND,
        first_after - 2 * SECOND,
        first_after - SECOND,
    ]
