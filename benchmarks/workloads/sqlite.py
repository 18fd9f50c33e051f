"""The drain on SQLite: the core API and the Worker against a hand-written
``sqlite3`` claim loop, the single writer's baseline.

Each drains the same 20,000 due jobs from a SQLite file of its own migrated by the
shipped chain, one process, batch 100, lease-style: a claim (one ``UPDATE … WHERE id
IN (SELECT … LIMIT 100) RETURNING``), then the completion. The raw loop completes a
batch with one ``UPDATE … WHERE id IN (…)``; the core API, like
:func:`.drain.library`, with ``move_job_to_done`` per job in one transaction; the
Worker (lease mode, one handler thread, ``max_jobs=100``, no-op handler, polling) as
in :mod:`.worker`'s drains: its claims and batch completions in autocommit, the
clock stopped when its ``totals.completed`` reach every job.
"""

from __future__ import annotations

import sqlite3
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import create_engine
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session, sessionmaker

from programma_sa import JobQueue, JobSpec, migrations
from programma_sa._urls import engine_options

from ..app import Job
from ..harness import JOBS_PER_S, TOPIC, RunContext, RunFunction, Sizes, Workload
from .drain import check_all_completed
from .worker import drain_here, handler_worker

BATCH = 100
_NOW = "strftime('%Y-%m-%d %H:%M:%f000', 'now')"
#: The raw loop's claim: the library's, written by hand.
RAW_CLAIM = f"""
UPDATE programma_jobs
SET state = 'active', attempts = attempts + 1, started_at = {_NOW},
    start_after = strftime('%Y-%m-%d %H:%M:%f000', 'now',
                           printf('%.3f seconds', retry_after_seconds))
WHERE id IN (
    SELECT id FROM programma_jobs
    WHERE topic = ? AND state IN ('created', 'active') AND start_after <= {_NOW}
    ORDER BY priority DESC, start_after, id LIMIT ?)
RETURNING id
"""
RAW_COMPLETE = (
    "UPDATE programma_jobs SET state = 'completed', finished_at = {now} WHERE id IN ({ids})"
)


@contextmanager
def _database(jobs: int) -> Iterator[str]:
    """A migrated SQLite file with ``jobs`` due jobs (loaded off the clock)."""
    with tempfile.TemporaryDirectory() as directory:
        url = f"sqlite:///{Path(directory) / 'bench.db'}"
        migrate_and_load(url, jobs)
        yield url


def migrate_and_load(url: str, jobs: int) -> None:
    """Migrate the empty database ``url`` (any database) by the shipped chain and load
    ``jobs`` due jobs."""
    migrations.upgrade(url)
    engine = create_engine(url)
    try:
        with Session(engine) as session, session.begin():
            JobQueue(Job).add_jobs(session, TOPIC, [JobSpec(data=n) for n in range(jobs)])
    finally:
        engine.dispose()


def check_completed(url: str, jobs: int) -> None:
    """Every one of the ``jobs`` jobs on ``url`` (any database) is COMPLETED."""
    engine = create_engine(url)
    try:
        check_all_completed(engine, jobs)
    finally:
        engine.dispose()


def raw(ctx: RunContext) -> dict[str, float]:
    jobs = ctx.sizes.drain
    with _database(jobs) as url:
        connection = sqlite3.connect(url.removeprefix("sqlite:///"), isolation_level=None)
        try:
            done = 0
            start = time.perf_counter()
            while True:
                ids = [row[0] for row in connection.execute(RAW_CLAIM, (TOPIC, BATCH))]
                if not ids:
                    break
                marks = ",".join("?" * len(ids))
                connection.execute(RAW_COMPLETE.format(now=_NOW, ids=marks), ids)
                done += len(ids)
            seconds = time.perf_counter() - start
        finally:
            connection.close()
        check_completed(url, jobs)
        return {"jobs_per_s": done / seconds}


def core_drain(url: str, jobs: int) -> dict[str, float]:
    """The core API's drain of ``jobs`` jobs on ``url`` (any database): claims of
    :data:`BATCH` in a transaction each, then each job's completion in another."""
    queue = JobQueue(Job)
    engine = create_engine(url, **engine_options(make_url(url)))
    try:
        sessions = sessionmaker(engine)
        done = 0
        start = time.perf_counter()
        while True:
            with sessions.begin() as session:
                claimed = queue.claim_jobs(session, TOPIC, max_jobs=BATCH)
            if not claimed:
                break
            with sessions.begin() as session:
                for job in claimed:
                    queue.move_job_to_done(session, job.id)
            done += len(claimed)
        seconds = time.perf_counter() - start
        check_all_completed(engine, jobs)
        return {"jobs_per_s": done / seconds}
    finally:
        engine.dispose()


def worker_drain(url: str, jobs: int) -> dict[str, float]:
    """The Worker's drain of ``jobs`` jobs on ``url`` (any database): lease mode, one
    handler thread, ``max_jobs`` :data:`BATCH`."""
    seconds = drain_here(url, "lease", 1, BATCH, jobs, handler_worker)
    check_completed(url, jobs)
    return {"jobs_per_s": jobs / seconds}


def _params(sizes: Sizes) -> dict[str, object]:
    return {"jobs": sizes.drain, "batch": BATCH, "processes": 1, "connections": 1}


def drain_rows(
    name: str,
    label: str,
    raw: RunFunction,
    raw_title: str,
    database: Callable[[int], AbstractContextManager[str]],
    requires: tuple[str, ...] = (),
) -> list[Workload]:
    """The three drain rows of the database ``name`` (``label`` in titles): ``raw``,
    the baseline, then the core API and the Worker draining a ``database(jobs)``."""

    def library(ctx: RunContext) -> dict[str, float]:
        with database(ctx.sizes.drain) as url:
            return core_drain(url, ctx.sizes.drain)

    def worker(ctx: RunContext) -> dict[str, float]:
        with database(ctx.sizes.drain) as url:
            return worker_drain(url, ctx.sizes.drain)

    raw_key = f"drain.{name}.raw.batch100"
    common: dict[str, Any] = {"requires": requires, "params": _params}
    return [
        Workload(raw_key, f"{label}: {raw_title}", JOBS_PER_S, raw, **common),
        Workload(
            f"drain.{name}.library.lease.batch100",
            f"{label}: core API, lease mode, batch 100 (no Worker)",
            JOBS_PER_S,
            library,
            baseline=raw_key,
            **common,
        ),
        Workload(
            f"drain.{name}.worker.lease.c1.batch100",
            f"{label}: Worker, lease mode, concurrency 1, batch 100",
            JOBS_PER_S,
            worker,
            baseline=raw_key,
            **common,
        ),
    ]


WORKLOADS = drain_rows("sqlite", "SQLite", raw, "raw sqlite3, batch 100 (baseline)", _database)
