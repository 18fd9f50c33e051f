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
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from sqlalchemy import create_engine
from sqlalchemy.orm import Session, sessionmaker

from programma_sa import JobQueue, JobSpec, migrations

from ..app import Job
from ..harness import JOBS_PER_S, TOPIC, RunContext, Sizes, Workload
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
        migrations.upgrade(url)
        engine = create_engine(url)
        try:
            with Session(engine) as session, session.begin():
                JobQueue(Job).add_jobs(session, TOPIC, [JobSpec(data=n) for n in range(jobs)])
        finally:
            engine.dispose()
        yield url


def _check_all_completed(url: str, jobs: int) -> None:
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
        _check_all_completed(url, jobs)
        return {"jobs_per_s": done / seconds}


def library(ctx: RunContext) -> dict[str, float]:
    jobs = ctx.sizes.drain
    queue = JobQueue(Job)
    with _database(jobs) as url:
        engine = create_engine(url)
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


def worker(ctx: RunContext) -> dict[str, float]:
    jobs = ctx.sizes.drain
    with _database(jobs) as url:
        seconds = drain_here(url, "lease", 1, BATCH, jobs, handler_worker)
        _check_all_completed(url, jobs)
    return {"jobs_per_s": jobs / seconds}


def _params(sizes: Sizes) -> dict[str, object]:
    return {"jobs": sizes.drain, "batch": BATCH, "processes": 1, "connections": 1}


RAW_KEY = "drain.sqlite.raw.batch100"
WORKLOADS: list[Workload] = [
    Workload(RAW_KEY, "SQLite: raw sqlite3, batch 100 (baseline)", JOBS_PER_S, raw, params=_params),
    Workload(
        "drain.sqlite.library.lease.batch100",
        "SQLite: core API, lease mode, batch 100 (no Worker)",
        JOBS_PER_S,
        library,
        baseline=RAW_KEY,
        params=_params,
    ),
    Workload(
        "drain.sqlite.worker.lease.c1.batch100",
        "SQLite: Worker, lease mode, concurrency 1, batch 100",
        JOBS_PER_S,
        worker,
        baseline=RAW_KEY,
        params=_params,
    ),
]
