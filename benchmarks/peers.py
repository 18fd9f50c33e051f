"""pgqueuer and procrastinate on the enqueue and drain workloads (the ``bench`` extra).

Each peer runs in a fresh database of its own with its own schema installed by its
own API, in its own event loop, with its fastest documented settings:

* **pgqueuer** — the asyncpg driver (its benchmark docs measure it at about twice
  the psycopg driver), uvloop (which it depends on), ``QueueManager.run`` in drain
  mode with ``batch_size=1000`` (the Worker's best ``max_jobs`` too; in our trials
  on this machine 1000 beat its default 10, and 50, 100 and 500: by 25 % over
  100). Enqueue: ``Queries.enqueue`` with one job (its own transaction) or with
  lists (one statement).
* **procrastinate** — ``PsycopgConnector`` (its async connector), a task deferred
  with ``defer_async`` (one transaction each) or ``batch_defer_async``; the worker
  with ``wait=False`` (exit when the queue is empty), ``concurrency=16`` with a pool
  of 18 connections (best of 1/4/10/16/20 in our trials), ``listen_notify=False``
  (a drain needs no wake-ups).

**Pickup latency** (``latency.pgqueuer`` / ``latency.procrastinate``, baseline
``latency.raw_listen_notify``), measured as the Worker's is: an idle consumer
waiting on LISTEN/NOTIFY (pgqueuer's ``QueueManager.run`` in continuous mode,
batch 10 — its default; procrastinate's worker with ``listen_notify=True``), jobs
enqueued ``Sizes.latency_jobs`` times ``Sizes.latency_interval_s`` apart from a
connection of their own in the same event loop (which is idle between them), and
the time from each enqueue returning to its handler starting. One job is picked up
before the clock starts, so the consumer is listening and warm.

Procrastinate's drain runs on fewer jobs (``Sizes.procrastinate_drain``): it
processes a few hundred jobs a second here, and a rate is a rate.

Skipped, with a message, when the package is not importable.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Awaitable, Callable, Coroutine
from datetime import timedelta
from typing import Any

from .baseline import payload
from .harness import (
    JOBS_PER_S,
    LATENCY_MS,
    RunContext,
    Sizes,
    Workload,
    jobs_per_second,
    latency_figures,
)
from .workloads.drain import raw_key
from .workloads.enqueue import BULK_RAW, RAW_PSYCOPG
from .workloads.latency import RAW_LISTEN_NOTIFY
from .workloads.latency import params as latency_params

__all__ = ["WORKLOADS"]

_ENTRYPOINT = "bench"
_WARMUP = 10
_PGQUEUER_BATCH = 1000
_PROCRASTINATE_CONCURRENCY = 16


def _payload_bytes(n: int) -> bytes:
    return json.dumps(payload(n)).encode()


def _run_uvloop(coro: Coroutine[Any, Any, dict[str, float]]) -> dict[str, float]:
    try:
        import uvloop
    except ImportError:  # pgqueuer depends on it; plain asyncio otherwise
        return asyncio.run(coro)
    return uvloop.run(coro)


# -- pgqueuer -------------------------------------------------------------------------

#: ``body(queries, ctx, conninfo)``: ``conninfo`` for connections of the body's own.
PgQueuerBody = Callable[[Any, RunContext, str], Awaitable[dict[str, float]]]


def _pgqueuer(body: PgQueuerBody) -> Callable[[RunContext], dict[str, float]]:
    """Run ``body(queries, ctx, conninfo)`` on an asyncpg connection to a fresh,
    installed database."""

    def run(ctx: RunContext) -> dict[str, float]:
        import asyncpg  # type: ignore[import-untyped, unused-ignore]
        from pgqueuer import AsyncpgDriver, Queries

        logging.getLogger("pgqueuer").setLevel(logging.WARNING)

        async def main(conninfo: str) -> dict[str, float]:
            connection = await asyncpg.connect(conninfo)
            try:
                queries = Queries(AsyncpgDriver(connection))
                await queries.install()
                return await body(queries, ctx, conninfo)
            finally:
                await connection.close()

        with ctx.database(programma=False) as db:
            return _run_uvloop(main(db.conninfo))

    return run


async def _pgqueuer_single(queries: Any, ctx: RunContext, conninfo: str) -> dict[str, float]:
    jobs = ctx.sizes.peer_single_enqueue
    for n in range(_WARMUP):
        await queries.enqueue(_ENTRYPOINT, _payload_bytes(n))
    start = time.perf_counter()
    for n in range(jobs):
        await queries.enqueue(_ENTRYPOINT, _payload_bytes(n))
    return jobs_per_second(jobs, time.perf_counter() - start)


async def _pgqueuer_bulk_enqueue(queries: Any, jobs: int) -> None:
    await queries.enqueue(
        [_ENTRYPOINT] * jobs, [_payload_bytes(n) for n in range(jobs)], [0] * jobs
    )


async def _pgqueuer_bulk(queries: Any, ctx: RunContext, conninfo: str) -> dict[str, float]:
    jobs = ctx.sizes.bulk_enqueue
    start = time.perf_counter()
    await _pgqueuer_bulk_enqueue(queries, jobs)
    return jobs_per_second(jobs, time.perf_counter() - start)


async def _pgqueuer_drain(queries: Any, ctx: RunContext, conninfo: str) -> dict[str, float]:
    from pgqueuer import QueueManager
    from pgqueuer.domain.types import QueueExecutionMode

    jobs = ctx.sizes.peer_drain
    await _pgqueuer_bulk_enqueue(queries, jobs)
    manager = QueueManager(queries)
    done = 0

    @manager.entrypoint(_ENTRYPOINT)
    async def noop(job: Any) -> None:
        nonlocal done
        done += 1

    start = time.perf_counter()
    await manager.run(
        batch_size=_PGQUEUER_BATCH,
        mode=QueueExecutionMode.drain,
        dequeue_timeout=timedelta(seconds=0.1),
    )
    seconds = time.perf_counter() - start
    if done != jobs:
        raise RuntimeError(f"pgqueuer drained {done} of {jobs} jobs")
    return jobs_per_second(done, seconds)


async def _pickup_latencies(
    ctx: RunContext,
    enqueue: Callable[[int], Awaitable[object]],
    started: dict[int, float],
) -> dict[str, float]:
    """Enqueue one warm-up job (until its pickup) then ``latency_jobs`` jobs, job
    ``n`` with the payload ``payload(n)``; the consumer notes ``started[order_id]``."""
    sizes = ctx.sizes
    deadline = time.monotonic() + 30
    await enqueue(-1)
    while -1 not in started:
        if time.monotonic() > deadline:
            raise RuntimeError("the consumer never picked up the warm-up job")
        await asyncio.sleep(0.01)
    committed: dict[int, float] = {}
    for n in range(sizes.latency_jobs):
        await enqueue(n)
        committed[n] = time.perf_counter()
        await asyncio.sleep(sizes.latency_interval_s)
    deadline = time.monotonic() + 30
    while len(started) <= sizes.latency_jobs and time.monotonic() < deadline:
        await asyncio.sleep(0.01)
    missing = set(committed) - set(started)
    if missing:
        raise RuntimeError(f"the consumer never started {len(missing)} jobs")
    return latency_figures([(started[n] - committed[n]) * 1000 for n in committed])


async def _pgqueuer_pickup(queries: Any, ctx: RunContext, conninfo: str) -> dict[str, float]:
    import asyncpg
    from pgqueuer import AsyncpgDriver, Queries, QueueManager

    manager = QueueManager(queries)
    started: dict[int, float] = {}

    @manager.entrypoint(_ENTRYPOINT)
    async def note(job: Any) -> None:
        started[json.loads(job.payload)["order_id"]] = time.perf_counter()

    consumer = asyncio.create_task(manager.run())
    producer = await asyncpg.connect(conninfo)
    try:
        producer_queries = Queries(AsyncpgDriver(producer))
        return await _pickup_latencies(
            ctx, lambda n: producer_queries.enqueue(_ENTRYPOINT, _payload_bytes(n)), started
        )
    finally:
        await producer.close()
        manager.shutdown.set()
        await consumer


# -- procrastinate --------------------------------------------------------------------

#: ``body(app, task, handled, ctx)``; ``handled["jobs"]`` counts the task's runs.
ProcrastinateBody = Callable[[Any, Any, dict[str, int], RunContext], Awaitable[dict[str, float]]]


def _procrastinate(body: ProcrastinateBody) -> Callable[[RunContext], dict[str, float]]:
    """Run ``body`` with an open app on a fresh database with its schema installed."""

    def run(ctx: RunContext) -> dict[str, float]:
        import procrastinate

        logging.getLogger("procrastinate").setLevel(logging.WARNING)

        async def main(conninfo: str) -> dict[str, float]:
            pool = _PROCRASTINATE_CONCURRENCY + 2
            app = procrastinate.App(
                connector=procrastinate.PsycopgConnector(
                    conninfo=conninfo, min_size=pool, max_size=pool
                )
            )
            handled = {"jobs": 0}

            @app.task(name=_ENTRYPOINT, queue=_ENTRYPOINT)
            async def noop(**kwargs: Any) -> None:
                handled["jobs"] += 1

            async with app.open_async():
                await app.schema_manager.apply_schema_async()
                return await body(app, noop, handled, ctx)

        with ctx.database(programma=False) as db:
            return asyncio.run(main(db.conninfo))

    return run


async def _procrastinate_single(
    app: Any, task: Any, handled: dict[str, int], ctx: RunContext
) -> dict[str, float]:
    jobs = ctx.sizes.peer_single_enqueue
    for n in range(_WARMUP):
        await task.defer_async(**payload(n))
    start = time.perf_counter()
    for n in range(jobs):
        await task.defer_async(**payload(n))
    return jobs_per_second(jobs, time.perf_counter() - start)


async def _procrastinate_bulk(
    app: Any, task: Any, handled: dict[str, int], ctx: RunContext
) -> dict[str, float]:
    jobs = ctx.sizes.bulk_enqueue
    start = time.perf_counter()
    await task.batch_defer_async(*(payload(n) for n in range(jobs)))
    return jobs_per_second(jobs, time.perf_counter() - start)


async def _procrastinate_drain(
    app: Any, task: Any, handled: dict[str, int], ctx: RunContext
) -> dict[str, float]:
    jobs = ctx.sizes.procrastinate_drain
    await task.batch_defer_async(*(payload(n) for n in range(jobs)))
    start = time.perf_counter()
    await app.run_worker_async(
        queues=[_ENTRYPOINT],
        concurrency=_PROCRASTINATE_CONCURRENCY,
        wait=False,
        listen_notify=False,
        install_signal_handlers=False,
    )
    seconds = time.perf_counter() - start
    if handled["jobs"] != jobs:
        raise RuntimeError(f"procrastinate drained {handled['jobs']} of {jobs} jobs")
    return jobs_per_second(jobs, seconds)


async def _procrastinate_pickup(
    app: Any, task: Any, handled: dict[str, int], ctx: RunContext
) -> dict[str, float]:
    started: dict[int, float] = {}

    @app.task(name="pickup", queue="pickup")
    async def note(order_id: int, **kwargs: Any) -> None:
        started[order_id] = time.perf_counter()

    consumer = asyncio.create_task(
        app.run_worker_async(queues=["pickup"], listen_notify=True, install_signal_handlers=False)
    )
    try:
        return await _pickup_latencies(ctx, lambda n: note.defer_async(**payload(n)), started)
    finally:
        consumer.cancel()
        await asyncio.gather(consumer, return_exceptions=True)


# -- registry -------------------------------------------------------------------------


def _sizes(attribute: str, **extra: object) -> Callable[[Sizes], dict[str, object]]:
    return lambda sizes: {"jobs": getattr(sizes, attribute), **extra}


WORKLOADS = [
    Workload(
        "enqueue.single.pgqueuer",
        "1/tx job only, pgqueuer Queries.enqueue",
        JOBS_PER_S,
        _pgqueuer(_pgqueuer_single),
        baseline=RAW_PSYCOPG,
        requires=("pgqueuer", "asyncpg"),
        params=_sizes("peer_single_enqueue", driver="asyncpg"),
    ),
    Workload(
        "enqueue.single.procrastinate",
        "1/tx job only, procrastinate defer_async",
        JOBS_PER_S,
        _procrastinate(_procrastinate_single),
        baseline=RAW_PSYCOPG,
        requires=("procrastinate",),
        params=_sizes("peer_single_enqueue", connector="psycopg"),
    ),
    Workload(
        "enqueue.bulk.pgqueuer",
        "bulk, pgqueuer Queries.enqueue(lists)",
        JOBS_PER_S,
        _pgqueuer(_pgqueuer_bulk),
        baseline=BULK_RAW,
        requires=("pgqueuer", "asyncpg"),
        params=_sizes("bulk_enqueue", driver="asyncpg"),
    ),
    Workload(
        "enqueue.bulk.procrastinate",
        "bulk, procrastinate batch_defer_async",
        JOBS_PER_S,
        _procrastinate(_procrastinate_bulk),
        baseline=BULK_RAW,
        requires=("procrastinate",),
        params=_sizes("bulk_enqueue", connector="psycopg"),
    ),
    Workload(
        "drain.pgqueuer",
        f"pgqueuer QueueManager, drain mode, batch {_PGQUEUER_BATCH}",
        JOBS_PER_S,
        _pgqueuer(_pgqueuer_drain),
        baseline=raw_key(100),
        requires=("pgqueuer", "asyncpg"),
        params=_sizes("peer_drain", driver="asyncpg", batch_size=_PGQUEUER_BATCH),
    ),
    Workload(
        "drain.procrastinate",
        f"procrastinate worker, concurrency {_PROCRASTINATE_CONCURRENCY}",
        JOBS_PER_S,
        _procrastinate(_procrastinate_drain),
        baseline=raw_key(100),
        requires=("procrastinate",),
        params=_sizes("procrastinate_drain", concurrency=_PROCRASTINATE_CONCURRENCY),
    ),
    Workload(
        "latency.pgqueuer",
        "pgqueuer QueueManager, idle, LISTEN/NOTIFY",
        LATENCY_MS,
        _pgqueuer(_pgqueuer_pickup),
        baseline=RAW_LISTEN_NOTIFY,
        requires=("pgqueuer", "asyncpg"),
        params=lambda sizes: {**latency_params(sizes), "driver": "asyncpg"},
    ),
    Workload(
        "latency.procrastinate",
        "procrastinate worker, idle, LISTEN/NOTIFY",
        LATENCY_MS,
        _procrastinate(_procrastinate_pickup),
        baseline=RAW_LISTEN_NOTIFY,
        requires=("procrastinate",),
        params=lambda sizes: {**latency_params(sizes), "connector": "psycopg"},
    ),
]
