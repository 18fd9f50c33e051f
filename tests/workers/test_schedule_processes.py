"""Periodic schedules run by several real worker processes, with no leader.

Each process is ``programma-sa worker tests.worker.handlers:noop … --schedules
tests.worker.schedules:…``. What counts is the jobs table afterwards: one job per fire
time, no fire time left out while workers ran, and the missed-fire policy across a
stretch with no worker.
"""

from __future__ import annotations

import itertools
import signal
import subprocess
import sys
import time
from datetime import datetime, timedelta
from pathlib import Path

from sqlalchemy import Engine, func, select

from programma_sa import jobs_table

from ..app import Job
from .support import HANDLERS, ROOT, blocking_wait_for

TABLE = jobs_table(Job)
SECOND = timedelta(seconds=1)


class SchedulingWorkers:
    """Worker processes of topic ``ticks`` (too) running a set of schedules.

    Each writes its log to a file, so that a test can wait until every one of them
    has started (its SIGTERM handler is installed only then: a SIGTERM that reaches
    a process still importing ends it with -15, which says nothing of the worker).
    """

    def __init__(self, database_url: str, log_directory: Path) -> None:
        self.database_url = database_url
        self.log_directory = log_directory
        self.logs: list[Path] = []

    def start(self, schedules: str, count: int) -> list[subprocess.Popen[str]]:
        processes = []
        for _ in range(count):
            log = self.log_directory / f"worker-{len(self.logs)}.log"
            self.logs.append(log)
            with log.open("w") as output:
                processes.append(
                    subprocess.Popen(
                        [
                            sys.executable,
                            "-m",
                            "programma_sa",
                            "worker",
                            f"{HANDLERS['sync']}:noop",
                            "--topic",
                            "ticks",
                            "--heartbeat",
                            "10",
                            "--schedules",
                            f"tests.worker.schedules:{schedules}",
                            "--database-url",
                            self.database_url,
                        ],
                        cwd=ROOT,
                        stdout=output,
                        stderr=subprocess.STDOUT,
                        text=True,
                    )
                )
        started = self.logs[-count:]
        try:
            blocking_wait_for(
                lambda: all("worker started" in log.read_text() for log in started), 30
            )
        except BaseException:
            self.stop(processes, signal.SIGKILL)
            raise
        return processes

    def stop(self, processes: list[subprocess.Popen[str]], how: signal.Signals) -> None:
        for process in processes:
            process.send_signal(how)
        for process, log in zip(processes, self.logs[-len(processes) :], strict=True):
            returncode = process.wait(timeout=30)
            if how is signal.SIGTERM:
                assert returncode == 0, log.read_text()


def fire_times(engine: Engine, schedule: str) -> list[datetime]:
    """Each job's fire time, for the jobs of ``schedule`` (sorted, duplicates kept)."""
    fire_time = TABLE.c.attributes["fire_time"].as_string()
    with engine.connect() as connection:
        rows = connection.scalars(
            select(fire_time).where(TABLE.c.attributes["schedule"].as_string() == schedule)
        )
        return sorted(datetime.fromisoformat(value) for value in rows)


def count_of(engine: Engine, schedule: str) -> int:
    with engine.connect() as connection:
        return (
            connection.scalar(
                select(func.count())
                .select_from(TABLE)
                .where(TABLE.c.attributes["schedule"].as_string() == schedule)
            )
            or 0
        )


def gaps(times: list[datetime]) -> list[tuple[datetime, datetime]]:
    return [(a, b) for a, b in itertools.pairwise(times) if b - a != SECOND]


def test_four_workers_enqueue_exactly_one_job_per_fire_time(
    database_url: str, engine: Engine, tmp_path: Path
) -> None:
    scheduling = SchedulingWorkers(database_url, tmp_path)
    workers = scheduling.start("TICKS", 4)
    try:
        blocking_wait_for(lambda: count_of(engine, "tick") >= 3, timeout=30)
        start = count_of(engine, "tick")
        blocking_wait_for(lambda: count_of(engine, "tick") >= start + 5, timeout=30)
    finally:
        scheduling.stop(workers, signal.SIGTERM)
    times = fire_times(engine, "tick")
    assert len(times) == len(set(times)), "a fire time was enqueued twice"
    assert gaps(times) == [], "a fire time was left out while workers ran"
    assert len(times) >= 8


def test_workers_killed_and_restarted_across_fire_times_follow_the_missed_fire_policy(
    database_url: str, engine: Engine, tmp_path: Path
) -> None:
    scheduling = SchedulingWorkers(database_url, tmp_path)
    workers = scheduling.start("RESTART", 2)
    try:
        blocking_wait_for(lambda: count_of(engine, "skip") >= 3, timeout=30)
    finally:
        scheduling.stop(workers, signal.SIGKILL)
    down = count_of(engine, "skip")
    time.sleep(6)  # no worker: fire times go by (more than grace + catch_up of them)
    workers = scheduling.start("RESTART", 2)
    try:
        blocking_wait_for(lambda: count_of(engine, "skip") >= down + 3, timeout=30)
    finally:
        scheduling.stop(workers, signal.SIGTERM)

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
