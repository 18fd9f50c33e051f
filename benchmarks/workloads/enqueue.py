"""Enqueue workloads: one job per transaction beside a business row, and bulk.

*Single*: each transaction writes one ``bench_orders`` row through the ORM
(``session.add``) and one job, then commits — the library's reason to exist. The
baseline is the same Session and transaction with the job inserted by a hand-written
``INSERT`` through ``session.execute(text(...))``: the ratio is what the library
adds on top of SQLAlchemy (validation, its statement, any extra round trip). A pure
psycopg loop (job only, autocommit) is a second reference, and the baseline of the
job-only library figure and of the peers.

*Bulk*: 20,000 jobs in one ``add_jobs`` call and one transaction, against one
hand-written ``INSERT … SELECT FROM unnest(%s::text[])`` of the same payloads; a
second hand-written reference sends them as one JSON array
(``jsonb_array_elements``), the way ``add_jobs`` does.

A few untimed transactions warm the connection pool and SQLAlchemy's compiled
cache first, so every loop is measured in its steady state.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable

from sqlalchemy import text
from sqlalchemy.orm import Session, sessionmaker

from programma_sa import JobQueue, JobSpec

from .. import baseline
from ..app import Job, Order
from ..harness import JOBS_PER_S, TOPIC, RunContext, Sizes, Workload, jobs_per_second

_WARMUP = 10
_SESSION_INSERT_JOB = text(baseline.SESSION_INSERT_JOB)

SessionBody = Callable[[Session, int], None]


def session_loop(ctx: RunContext, jobs: int, body: SessionBody) -> dict[str, float]:
    """Time ``jobs`` transactions of ``body(session, n)``, each committed on its own."""
    with ctx.database() as db:
        engine = db.engine()
        try:
            sessions = sessionmaker(engine)
            for n in range(-_WARMUP, 0):
                with sessions.begin() as session:
                    body(session, n)
            start = time.perf_counter()
            for n in range(jobs):
                with sessions.begin() as session:
                    body(session, n)
            return jobs_per_second(jobs, time.perf_counter() - start)
        finally:
            engine.dispose()


def order_row(n: int) -> Order:
    return Order(id=n, note=f"order {n}")


def _with_library(queue: JobQueue, business_row: bool) -> SessionBody:
    def body(session: Session, n: int) -> None:
        if business_row:
            session.add(order_row(n))
        queue.add_job(session, TOPIC, baseline.payload(n))

    return body


def _with_text_insert(session: Session, n: int) -> None:
    session.add(order_row(n))
    session.execute(_SESSION_INSERT_JOB, {"topic": TOPIC, "data": json.dumps(baseline.payload(n))})


def session_text(ctx: RunContext) -> dict[str, float]:
    return session_loop(ctx, ctx.sizes.single_enqueue, _with_text_insert)


def library(ctx: RunContext) -> dict[str, float]:
    body = _with_library(JobQueue(Job), business_row=True)
    return session_loop(ctx, ctx.sizes.single_enqueue, body)


def library_no_notify(ctx: RunContext) -> dict[str, float]:
    body = _with_library(JobQueue(Job, notify=False), business_row=True)
    return session_loop(ctx, ctx.sizes.single_enqueue, body)


def library_job_only(ctx: RunContext) -> dict[str, float]:
    body = _with_library(JobQueue(Job), business_row=False)
    return session_loop(ctx, ctx.sizes.single_enqueue, body)


def raw_psycopg(ctx: RunContext) -> dict[str, float]:
    jobs = ctx.sizes.single_enqueue
    with ctx.database() as db:
        baseline.enqueue_loop(db.conninfo, TOPIC, _WARMUP)
        return jobs_per_second(jobs, baseline.enqueue_loop(db.conninfo, TOPIC, jobs))


def bulk_raw_unnest(ctx: RunContext) -> dict[str, float]:
    jobs = ctx.sizes.bulk_enqueue
    with ctx.database() as db:
        return jobs_per_second(jobs, baseline.bulk_insert_unnest(db.conninfo, TOPIC, jobs))


def bulk_raw_jsonb(ctx: RunContext) -> dict[str, float]:
    jobs = ctx.sizes.bulk_enqueue
    with ctx.database() as db:
        return jobs_per_second(jobs, baseline.bulk_insert_jsonb(db.conninfo, TOPIC, jobs))


def _bulk_library(ctx: RunContext, queue: JobQueue) -> dict[str, float]:
    jobs = ctx.sizes.bulk_enqueue
    with ctx.database() as db:
        engine = db.engine()
        try:
            sessions = sessionmaker(engine)
            with sessions.begin() as session:  # warm the pool and the compiled cache
                queue.add_jobs(session, TOPIC, [JobSpec(baseline.payload(0))])
            start = time.perf_counter()
            with sessions.begin() as session:
                queue.add_jobs(session, TOPIC, [JobSpec(baseline.payload(n)) for n in range(jobs)])
            return jobs_per_second(jobs, time.perf_counter() - start)
        finally:
            engine.dispose()


def bulk_library(ctx: RunContext) -> dict[str, float]:
    return _bulk_library(ctx, JobQueue(Job))


def bulk_library_no_notify(ctx: RunContext) -> dict[str, float]:
    return _bulk_library(ctx, JobQueue(Job, notify=False))


def single_params(sizes: Sizes) -> dict[str, int]:
    return {"jobs": sizes.single_enqueue, "transactions": sizes.single_enqueue}


def _bulk(sizes: Sizes) -> dict[str, int]:
    return {"jobs": sizes.bulk_enqueue, "transactions": 1}


SESSION_TEXT = "enqueue.single.session_text"
RAW_PSYCOPG = "enqueue.single.raw_psycopg"
BULK_RAW = "enqueue.bulk.raw_unnest"

WORKLOADS = [
    Workload(
        SESSION_TEXT,
        "1/tx + order row, Session + hand-written INSERT (baseline)",
        JOBS_PER_S,
        session_text,
        params=single_params,
    ),
    Workload(
        "enqueue.single.library",
        "1/tx + order row, add_job (notify)",
        JOBS_PER_S,
        library,
        baseline=SESSION_TEXT,
        params=single_params,
    ),
    Workload(
        "enqueue.single.library_no_notify",
        "1/tx + order row, add_job (notify=False)",
        JOBS_PER_S,
        library_no_notify,
        baseline=SESSION_TEXT,
        params=single_params,
    ),
    Workload(
        RAW_PSYCOPG,
        "1/tx job only, raw psycopg INSERT (reference)",
        JOBS_PER_S,
        raw_psycopg,
        params=single_params,
    ),
    Workload(
        "enqueue.single.library_job_only",
        "1/tx job only, add_job (notify)",
        JOBS_PER_S,
        library_job_only,
        baseline=RAW_PSYCOPG,
        params=single_params,
    ),
    Workload(
        BULK_RAW,
        "bulk, raw INSERT … SELECT unnest (baseline)",
        JOBS_PER_S,
        bulk_raw_unnest,
        params=_bulk,
    ),
    Workload(
        "enqueue.bulk.raw_jsonb",
        "bulk, raw INSERT … SELECT jsonb_array_elements (reference)",
        JOBS_PER_S,
        bulk_raw_jsonb,
        baseline=BULK_RAW,
        params=_bulk,
    ),
    Workload(
        "enqueue.bulk.library",
        "bulk, add_jobs (notify)",
        JOBS_PER_S,
        bulk_library,
        baseline=BULK_RAW,
        params=_bulk,
    ),
    Workload(
        "enqueue.bulk.library_no_notify",
        "bulk, add_jobs (notify=False)",
        JOBS_PER_S,
        bulk_library_no_notify,
        baseline=BULK_RAW,
        params=_bulk,
    ),
]
