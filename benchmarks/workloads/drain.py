"""Drain workloads without the Worker: 20,000 due jobs, a no-op handler, one process.

The raw baseline (``baseline.drain``) claims a batch and completes it with one
``UPDATE … WHERE id = ANY(…)``, each statement its own transaction.

The library figures use the core API the way a hand-rolled loop would, one
connection, a fresh ``Session`` per transaction:

* **lease** — ``claim_jobs`` in one transaction, commit; run the handlers; then one
  transaction with ``move_job_to_done`` per job (the seed's way: a crash between the
  two leaves the jobs ACTIVE until their lease runs out);
* **transaction** — ``claim_jobs``, the handlers and ``move_job_to_done`` per job in
  one transaction (work and completion commit together).

Batch 1 and batch 100, each against the raw baseline of the same batch size. The
Worker-based drain (mode, concurrency, processes) is in :mod:`.worker`.
Every run checks afterwards that every job is COMPLETED.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from sqlalchemy import Engine, func, select
from sqlalchemy.orm import sessionmaker

from programma_sa import ClaimedJob, JobQueue, JobState

from .. import baseline
from ..app import Job
from ..harness import JOBS_PER_S, TOPIC, RunContext, RunFunction, Sizes, Workload


def _noop(job: ClaimedJob) -> None:
    """The handler: no work, so the figure is the queue's own cost."""


def _jobs(sizes: Sizes, batch: int) -> int:
    return sizes.drain_batch1 if batch == 1 else sizes.drain


def check_all_completed(engine: Engine, jobs: int) -> None:
    """Raise unless exactly ``jobs`` jobs are COMPLETED (a drain that lost or repeated work)."""
    with engine.connect() as conn:
        completed = conn.execute(
            select(func.count()).where(Job.__table__.c.state == JobState.COMPLETED.value)
        ).scalar_one()
    if completed != jobs:
        raise RuntimeError(f"drain completed {completed} of {jobs} jobs")


def raw(batch: int) -> RunFunction:
    def run(ctx: RunContext) -> dict[str, float]:
        jobs = _jobs(ctx.sizes, batch)
        with ctx.database() as db:
            baseline.load_due_jobs(db.conninfo, TOPIC, jobs)
            baseline.vacuum_analyze(db.conninfo)
            done, seconds = baseline.drain(db.conninfo, TOPIC, batch)
            if done != jobs:
                raise RuntimeError(f"raw drain claimed {done} of {jobs} jobs")
            return {"jobs_per_s": done / seconds}

    return run


def library(batch: int, *, lease: bool) -> RunFunction:
    def run(ctx: RunContext) -> dict[str, float]:
        jobs = _jobs(ctx.sizes, batch)
        queue = JobQueue(Job)
        with ctx.database() as db:
            baseline.load_due_jobs(db.conninfo, TOPIC, jobs)
            baseline.vacuum_analyze(db.conninfo)
            engine = db.engine()
            try:
                sessions = sessionmaker(engine)
                done = 0
                start = time.perf_counter()
                while True:
                    with sessions.begin() as session:
                        claimed = queue.claim_jobs(session, TOPIC, max_jobs=batch)
                        if not lease:
                            for job in claimed:
                                _noop(job)
                                queue.move_job_to_done(session, job.id)
                    if not claimed:
                        break
                    if lease:
                        for job in claimed:
                            _noop(job)
                        with sessions.begin() as session:
                            for job in claimed:
                                queue.move_job_to_done(session, job.id)
                    done += len(claimed)
                seconds = time.perf_counter() - start
                check_all_completed(engine, jobs)
                return {"jobs_per_s": done / seconds}
            finally:
                engine.dispose()

    return run


def _params(batch: int) -> Callable[[Sizes], dict[str, object]]:
    return lambda sizes: {
        "jobs": _jobs(sizes, batch),
        "batch": batch,
        "processes": 1,
        "connections": 1,
    }


def raw_key(batch: int) -> str:
    return f"drain.raw.batch{batch}"


WORKLOADS = [
    *(
        Workload(
            raw_key(batch),
            f"raw psycopg, batch {batch} (baseline)",
            JOBS_PER_S,
            raw(batch),
            params=_params(batch),
        )
        for batch in (1, 100)
    ),
    *(
        Workload(
            f"drain.library.{mode}.batch{batch}",
            f"core API, {mode} mode, batch {batch} (no Worker)",
            JOBS_PER_S,
            library(batch, lease=mode == "lease"),
            baseline=raw_key(batch),
            params=_params(batch),
        )
        for mode in ("lease", "transaction")
        for batch in (1, 100)
    ),
]
