"""Enqueue workloads: one job per transaction beside a business row, and bulk.

*Single*: each transaction writes one ``bench_orders`` row through the ORM
(``session.add``) and one job, then commits — the library's reason to exist. The
baseline is the same Session and transaction with the job inserted by a hand-written
``INSERT`` through ``session.execute(text(...))``: the ratio is what the library
adds on top of SQLAlchemy (validation, its statement, any extra round trip). A pure
psycopg loop (job only, autocommit) is a second reference, and the baseline of the
job-only library figures (on a Session, and on a Core ``Connection`` held open across
the loop, as a Core application would) and of the peers.

*Bulk*: 20,000 jobs in one ``add_jobs`` call and one transaction, against one
hand-written ``INSERT … SELECT FROM unnest(%s::text[])`` of the same payloads; a
second hand-written reference sends them as one JSON array
(``jsonb_array_elements``), the way ``add_jobs`` does.

*Priorities and unique keys*: the same single and bulk loops with a priority (five
levels) and a new unique key per job — the claim index and the unique index each
get an entry — and a single loop whose every enqueue asks for a key another job
holds (``on_conflict="keep"``: ``ON CONFLICT DO NOTHING``, then the holder's id is
read: two statements, nothing inserted). Compare the latter with
``enqueue.single.library`` for what a conflict costs against a plain enqueue.

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
_SESSION_INSERT_UNIQUE_JOB = text(baseline.SESSION_INSERT_UNIQUE_JOB)
#: The priority levels of the workloads with priorities and unique keys.
_LEVELS = 5

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


def _with_priority_and_key(queue: JobQueue) -> SessionBody:
    """``add_job`` with a priority (5 levels) and a unique key no job holds yet."""

    def body(session: Session, n: int) -> None:
        session.add(order_row(n))
        queue.add_job(
            session, TOPIC, baseline.payload(n), priority=n % _LEVELS, unique_key=f"k-{n}"
        )

    return body


def _with_held_key(queue: JobQueue) -> SessionBody:
    """``add_job`` of a key another job holds (``on_conflict="keep"``): nothing is
    inserted, the holder's id comes back."""

    def body(session: Session, n: int) -> None:
        session.add(order_row(n))
        queue.add_job(session, TOPIC, baseline.payload(n), unique_key=HELD_KEY)

    return body


#: The key every enqueue of the conflict workload asks for (held by its first job).
HELD_KEY = "held"


def _with_text_insert(session: Session, n: int) -> None:
    session.add(order_row(n))
    session.execute(_SESSION_INSERT_JOB, {"topic": TOPIC, "data": json.dumps(baseline.payload(n))})


def session_text(ctx: RunContext) -> dict[str, float]:
    return session_loop(ctx, ctx.sizes.single_enqueue, _with_text_insert)


def _with_unique_text_insert(session: Session, n: int) -> None:
    session.add(order_row(n))
    values = {
        "topic": TOPIC,
        "data": json.dumps(baseline.payload(n)),
        "priority": n % _LEVELS,
        "unique_key": f"k-{n}",
    }
    session.execute(_SESSION_INSERT_UNIQUE_JOB, values)


def session_text_priority_unique(ctx: RunContext) -> dict[str, float]:
    return session_loop(ctx, ctx.sizes.single_enqueue, _with_unique_text_insert)


def library(ctx: RunContext) -> dict[str, float]:
    body = _with_library(JobQueue(Job), business_row=True)
    return session_loop(ctx, ctx.sizes.single_enqueue, body)


def library_no_notify(ctx: RunContext) -> dict[str, float]:
    body = _with_library(JobQueue(Job, notify=False), business_row=True)
    return session_loop(ctx, ctx.sizes.single_enqueue, body)


def library_job_only(ctx: RunContext) -> dict[str, float]:
    body = _with_library(JobQueue(Job), business_row=False)
    return session_loop(ctx, ctx.sizes.single_enqueue, body)


def _connection_loop(ctx: RunContext, autocommit: bool) -> dict[str, float]:
    """Job only, ``add_job`` on one Core ``Connection`` held across the loop: each job
    in a transaction of its own (``connection.begin()``), or — a job on its own needs
    none — on an AUTOCOMMIT connection, one round trip as in the raw reference."""
    queue = JobQueue(Job)
    jobs = ctx.sizes.single_enqueue
    with ctx.database() as db:
        engine = db.engine()
        try:
            with engine.connect() as connection:
                if autocommit:
                    connection = connection.execution_options(isolation_level="AUTOCOMMIT")

                def enqueue(numbers: range) -> None:
                    for n in numbers:
                        if autocommit:
                            queue.add_job(connection, TOPIC, baseline.payload(n))
                        else:
                            with connection.begin():
                                queue.add_job(connection, TOPIC, baseline.payload(n))

                enqueue(range(-_WARMUP, 0))
                start = time.perf_counter()
                enqueue(range(jobs))
                return jobs_per_second(jobs, time.perf_counter() - start)
        finally:
            engine.dispose()


def library_connection(ctx: RunContext) -> dict[str, float]:
    return _connection_loop(ctx, autocommit=False)


def library_connection_autocommit(ctx: RunContext) -> dict[str, float]:
    return _connection_loop(ctx, autocommit=True)


def library_priority_unique(ctx: RunContext) -> dict[str, float]:
    return session_loop(ctx, ctx.sizes.single_enqueue, _with_priority_and_key(JobQueue(Job)))


def library_unique_conflict(ctx: RunContext) -> dict[str, float]:
    return session_loop(ctx, ctx.sizes.single_enqueue, _with_held_key(JobQueue(Job)))


def raw_psycopg(ctx: RunContext) -> dict[str, float]:
    jobs = ctx.sizes.single_enqueue
    with ctx.database() as db:
        baseline.enqueue_loop(db.conninfo, TOPIC, _WARMUP)
        return jobs_per_second(jobs, baseline.enqueue_loop(db.conninfo, TOPIC, jobs))


def bulk_raw_unnest(ctx: RunContext) -> dict[str, float]:
    jobs = ctx.sizes.bulk_enqueue
    with ctx.database() as db:
        return jobs_per_second(jobs, baseline.bulk_insert_unnest(db.conninfo, TOPIC, jobs))


def bulk_raw_unnest_priority_unique(ctx: RunContext) -> dict[str, float]:
    jobs = ctx.sizes.bulk_enqueue
    with ctx.database() as db:
        seconds = baseline.bulk_insert_unnest_unique(db.conninfo, TOPIC, jobs, _LEVELS)
        return jobs_per_second(jobs, seconds)


def bulk_raw_jsonb(ctx: RunContext) -> dict[str, float]:
    jobs = ctx.sizes.bulk_enqueue
    with ctx.database() as db:
        return jobs_per_second(jobs, baseline.bulk_insert_jsonb(db.conninfo, TOPIC, jobs))


def _plain_spec(n: int) -> JobSpec:
    return JobSpec(baseline.payload(n))


def _unique_spec(n: int) -> JobSpec:
    return JobSpec(baseline.payload(n), priority=n % _LEVELS, unique_key=f"k-{n}")


def _bulk_library(
    ctx: RunContext, queue: JobQueue, spec: Callable[[int], JobSpec] = _plain_spec
) -> dict[str, float]:
    jobs = ctx.sizes.bulk_enqueue
    with ctx.database() as db:
        engine = db.engine()
        try:
            sessions = sessionmaker(engine)
            with sessions.begin() as session:  # warm the pool and the compiled cache
                queue.add_jobs(session, TOPIC, [spec(-1)])
            start = time.perf_counter()
            with sessions.begin() as session:
                queue.add_jobs(session, TOPIC, [spec(n) for n in range(jobs)])
            return jobs_per_second(jobs, time.perf_counter() - start)
        finally:
            engine.dispose()


def bulk_library(ctx: RunContext) -> dict[str, float]:
    return _bulk_library(ctx, JobQueue(Job))


def bulk_library_no_notify(ctx: RunContext) -> dict[str, float]:
    return _bulk_library(ctx, JobQueue(Job, notify=False))


def bulk_library_priority_unique(ctx: RunContext) -> dict[str, float]:
    return _bulk_library(ctx, JobQueue(Job), _unique_spec)


def single_params(sizes: Sizes) -> dict[str, int]:
    return {"jobs": sizes.single_enqueue, "transactions": sizes.single_enqueue}


def _bulk(sizes: Sizes) -> dict[str, int]:
    return {"jobs": sizes.bulk_enqueue, "transactions": 1}


SESSION_TEXT = "enqueue.single.session_text"
SESSION_TEXT_UNIQUE = "enqueue.single.session_text_priority_unique"
RAW_PSYCOPG = "enqueue.single.raw_psycopg"
BULK_RAW = "enqueue.bulk.raw_unnest"
BULK_RAW_UNIQUE = "enqueue.bulk.raw_unnest_priority_unique"

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
        SESSION_TEXT_UNIQUE,
        "1/tx + order row, Session + hand-written INSERT with a priority and a new unique key "
        "(ON CONFLICT DO NOTHING; baseline)",
        JOBS_PER_S,
        session_text_priority_unique,
        params=single_params,
    ),
    Workload(
        "enqueue.single.library_priority_unique",
        "1/tx + order row, add_job with a priority and a new unique key",
        JOBS_PER_S,
        library_priority_unique,
        baseline=SESSION_TEXT_UNIQUE,
        params=single_params,
    ),
    Workload(
        "enqueue.single.library_unique_conflict",
        "1/tx + order row, add_job of a held unique key (keep: nothing inserted)",
        JOBS_PER_S,
        library_unique_conflict,
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
        "enqueue.single.library_connection",
        "1/tx job only, add_job on a Core Connection (notify)",
        JOBS_PER_S,
        library_connection,
        baseline=RAW_PSYCOPG,
        params=single_params,
    ),
    Workload(
        "enqueue.single.library_connection_autocommit",
        "1/tx job only, add_job on an AUTOCOMMIT Core Connection (notify)",
        JOBS_PER_S,
        library_connection_autocommit,
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
    Workload(
        BULK_RAW_UNIQUE,
        "bulk, raw INSERT … SELECT unnest with priorities and a new unique key each "
        "(ON CONFLICT DO NOTHING; baseline)",
        JOBS_PER_S,
        bulk_raw_unnest_priority_unique,
        params=_bulk,
    ),
    Workload(
        "enqueue.bulk.library_priority_unique",
        "bulk, add_jobs with priorities and a new unique key each",
        JOBS_PER_S,
        bulk_library_priority_unique,
        baseline=BULK_RAW_UNIQUE,
        params=_bulk,
    ),
]
