"""The Worker's figures: drains through the Worker (and AsyncWorker), pickup latency.

**Drain** (``drain.worker.<mode>.c<concurrency>.p<processes>``, baseline
``drain.raw.batch100``). A fresh database gets ``ctx.sizes.drain`` due jobs (one
``INSERT … SELECT generate_series``) and ``VACUUM ANALYZE`` — untimed, as for the
other drains. Each process then builds its own engine (a pool of ``concurrency + 2``
connections, all opened up front) and its ``Worker(JobQueue(Job), engine, TOPIC,
noop, mode=…, concurrency=…, max_jobs=…, listen=False)``, and warms up off the clock
on a topic of its own (SQLAlchemy's compiled cache, the pool). The clock starts when
every process is ready and the Workers' loops start (``Worker.start()``: the real
loop, its handler threads, its batch completions) and stops when the Workers'
``totals.completed`` (looked at every 2 ms) add up to every job — a completion
counts once it has committed. Afterwards every job must be COMPLETED. One process:
the Worker runs in the benchmark process itself. Two processes: two OS processes
forked from a clean ``forkserver``, each with its Worker; they report their counts
through shared memory.

The handler is a no-op, so the figure is the queue's own cost. ``max_jobs`` per
setting is in :data:`DRAIN_MAX_JOBS` (the best we found, see ``docs/benchmarks.md``);
``drain.worker.lease.c1.p1.batch100`` is the like-for-like row, with the raw
baseline's batch of 100; ``drain.worker.lease.c1.p1.priorities5`` drains jobs
spread over five priority levels (each claim batch crosses levels).
``drain.async_worker.lease.c16.p1`` is the same drain with ``AsyncWorker`` on
``create_async_engine`` (psycopg), in one event loop. ``drain.worker.<mode>.defaults``
is the Worker a newcomer gets: no ``max_jobs`` (the adaptive claim size),
concurrency 1, one process (``listen=False`` as in every drain).

**Pickup latency** (``latency.worker.notify`` / ``latency.worker.polling``, baseline
``latency.raw_listen_notify``). An idle Worker (``heartbeat`` 10 s with LISTEN/NOTIFY;
``listen=False`` and ``heartbeat`` :data:`POLLING_HEARTBEAT` s polling only), started
with ``Worker.start()`` and left idle until the first job; its handler notes
``time.perf_counter()`` per job id. ``ctx.sizes.latency_jobs`` jobs are enqueued
``ctx.sizes.latency_interval_s`` apart, each by ``JobQueue.add_job`` in its own
committed Session (``notify=True``), noting ``time.perf_counter()`` when the commit
returns. Latency = handler start - commit, in ms; p50 / p95 / p99.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import time
import uuid
from collections.abc import Callable
from typing import Any, Literal

from sqlalchemy import Engine, create_engine
from sqlalchemy.engine import make_url
from sqlalchemy.orm import sessionmaker

from programma_sa import AsyncJobContext, AsyncJobQueue, AsyncWorker, JobContext, JobQueue, Worker
from programma_sa._urls import engine_options
from programma_sa.worker import WorkerMode

from .. import baseline
from ..app import Job
from ..harness import (
    JOBS_PER_S,
    LATENCY_MS,
    TOPIC,
    RunContext,
    RunFunction,
    Sizes,
    Workload,
    latency_figures,
)
from .drain import check_all_completed, raw_key
from .latency import RAW_LISTEN_NOTIFY
from .latency import params as latency_params

MODES: tuple[WorkerMode, ...] = ("lease", "transaction")
CONCURRENCY = (1, 4, 16)
PROCESSES = (1, 2)

#: ``max_jobs`` per (mode, concurrency): the best of the values we tried on this
#: machine (25 to 1,000; see docs/benchmarks.md, "Worker settings"). Larger batches
#: spread each claim's and each completion's fixed cost over more jobs.
DRAIN_MAX_JOBS: dict[tuple[str, int], int] = {
    ("lease", 1): 1000,
    ("lease", 4): 1000,
    ("lease", 16): 1000,
    ("transaction", 1): 1000,
    ("transaction", 4): 250,
    ("transaction", 16): 250,
}
#: The like-for-like row: the Worker with the raw baseline's batch size.
SAME_BATCH = 100
#: The priority levels of the drain with priorities: a claim passes across them.
PRIORITY_LEVELS = 5
ASYNC_CONCURRENCY = 16
ASYNC_MAX_JOBS = 1000
#: ``max_jobs`` of a drain: a size, ``"best"`` (:data:`DRAIN_MAX_JOBS`) or
#: ``"default"`` (none given: the Worker's adaptive claim size).
DrainMaxJobs = int | Literal["best", "default"]
#: The polling-only Worker's heartbeat (seconds): its pickup latency is about half of it.
POLLING_HEARTBEAT = 0.5
#: The idle Worker's heartbeat with LISTEN/NOTIFY: long, so that every pickup is a wake-up.
NOTIFY_HEARTBEAT = 10.0

_POLL = 0.002  # how often the clock looks at the Workers' counts (seconds)
_READY_TIMEOUT = 120.0


def _noop(ctx: JobContext) -> None:
    """The handler: no work, so the figure is the queue's own cost."""


async def _async_noop(ctx: AsyncJobContext) -> None:
    """The async handler: no work."""


#: Builds the Worker of a drain: ``serve(engine, topic, settings)``.
Serve = Callable[[Engine, str, dict[str, Any]], Worker]


def handler_worker(engine: Engine, topic: str, settings: dict[str, Any]) -> Worker:
    """The Worker of the drains: one no-op handler on ``topic``."""
    return Worker(JobQueue(Job), engine, topic, _noop, **settings)


def warmup_topic(index: int) -> str:
    return f"{TOPIC}-warmup-{index}"


def _open_pool(engine: Engine, connections: int) -> None:
    """Open ``connections`` pooled connections now, so no connect lands on the clock."""
    held = [engine.connect() for _ in range(connections)]
    for connection in held:
        connection.close()


def _ready_worker(
    url: str, mode: WorkerMode, concurrency: int, max_jobs: int | None, index: int, serve: Serve
) -> tuple[Engine, Worker]:
    """An engine with an open pool, warmed up, and the Worker that will drain
    (``max_jobs`` ``None``: not given, the Worker's default)."""
    pool = concurrency + 2
    # READ COMMITTED on MariaDB, as the library's own engines (docs/mariadb.md).
    engine = create_engine(url, pool_size=pool, max_overflow=0, **engine_options(make_url(url)))
    _open_pool(engine, pool)
    settings: dict[str, Any] = {
        "mode": mode,
        "concurrency": concurrency,
        "listen": False,
    }
    if max_jobs is not None:
        settings["max_jobs"] = max_jobs
    warmup = serve(engine, warmup_topic(index), settings)
    while warmup.run_once().claimed:
        pass
    return engine, serve(engine, TOPIC, settings)


def drain_here(
    url: str, mode: WorkerMode, concurrency: int, max_jobs: int | None, jobs: int, serve: Serve
) -> float:
    """Seconds for a Worker in this process to complete ``jobs`` jobs."""
    engine, worker = _ready_worker(url, mode, concurrency, max_jobs, 0, serve)
    try:
        start = time.perf_counter()
        worker.start()
        while worker.totals.completed < jobs:
            time.sleep(_POLL)
        seconds = time.perf_counter() - start
        worker.stop()
        if not worker.join(60):
            raise RuntimeError("the Worker did not stop")
        return seconds
    finally:
        engine.dispose()


def _drain_child(
    url: str,
    mode: WorkerMode,
    concurrency: int,
    max_jobs: int | None,
    index: int,
    ready: Any,
    go: Any,
    stop: Any,
    completed: Any,
    serve: Serve,
) -> None:
    """One process of a multi-process drain: warm up, wait for the start, report counts."""
    engine, worker = _ready_worker(url, mode, concurrency, max_jobs, index, serve)
    try:
        ready.release()
        if not go.wait(_READY_TIMEOUT):
            return
        worker.start()
        while not stop.wait(_POLL):
            completed[index] = worker.totals.completed
        worker.stop()
        worker.join(60)
    finally:
        engine.dispose()


def _process_context() -> Any:
    """``forkserver``: each Worker process is forked from a clean, single-threaded
    server that has imported this module already, so a process starts in
    milliseconds instead of re-importing SQLAlchemy (``spawn``), and never inherits
    the threads of this one (``fork``)."""
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload([__name__])
    return context


def _drain_in_processes(
    url: str,
    mode: WorkerMode,
    concurrency: int,
    max_jobs: int | None,
    jobs: int,
    processes: int,
    serve: Serve,
) -> float:
    """Seconds for ``processes`` spawned processes, a Worker each, to complete ``jobs``."""
    spawn = _process_context()
    ready = spawn.Semaphore(0)
    go = spawn.Event()
    stop = spawn.Event()
    completed = spawn.Array("q", processes, lock=False)
    children = [
        spawn.Process(
            target=_drain_child,
            args=(url, mode, concurrency, max_jobs, index, ready, go, stop, completed, serve),
            name=f"bench-worker-{index}",
        )
        for index in range(processes)
    ]
    for child in children:
        child.start()

    def check_alive() -> None:
        if not all(child.is_alive() for child in children):
            raise RuntimeError("a Worker process died (see its traceback above)")

    try:
        deadline = time.monotonic() + _READY_TIMEOUT
        for _ in children:
            while not ready.acquire(timeout=0.1):
                check_alive()
                if time.monotonic() > deadline:
                    raise RuntimeError("the Worker processes did not get ready")
        start = time.perf_counter()
        go.set()
        while sum(completed) < jobs:
            check_alive()
            time.sleep(_POLL)
        seconds = time.perf_counter() - start
    finally:
        stop.set()
        for child in children:
            child.join(60)
            if child.is_alive():
                child.kill()
    failed = [child.exitcode for child in children if child.exitcode != 0]
    if failed:
        raise RuntimeError(f"Worker processes exited with {failed}")
    return seconds


def _load(conninfo: str, sizes: Sizes, processes: int, levels: int = 1) -> int:
    """Load the due jobs (over ``levels`` priorities) and each process's warm-up jobs;
    return how many in all."""
    baseline.load_due_jobs(conninfo, TOPIC, sizes.drain, levels)
    for index in range(processes):
        baseline.load_due_jobs(conninfo, warmup_topic(index), sizes.drain_warmup)
    baseline.vacuum_analyze(conninfo)
    return sizes.drain + processes * sizes.drain_warmup


def drain_with_worker(
    mode: WorkerMode,
    concurrency: int,
    processes: int,
    max_jobs: DrainMaxJobs = "best",
    serve: Serve = handler_worker,
    levels: int = 1,
) -> RunFunction:
    """The Worker draining ``ctx.sizes.drain`` jobs (protocol in the module docs);
    ``max_jobs`` (:data:`DrainMaxJobs`) defaults to the best setting; ``serve``
    builds the Worker (a module-level function: it is sent to the processes); the
    jobs' priorities spread over ``levels`` levels."""

    def run(ctx: RunContext) -> dict[str, float]:
        batch = _max_jobs(mode, concurrency, max_jobs)
        jobs = ctx.sizes.drain
        with ctx.database() as db:
            loaded = _load(db.conninfo, ctx.sizes, processes, levels)
            if processes == 1:
                seconds = drain_here(db.url, mode, concurrency, batch, jobs, serve)
            else:
                seconds = _drain_in_processes(
                    db.url, mode, concurrency, batch, jobs, processes, serve
                )
            _check(db.engine(), loaded)
            return {"jobs_per_s": jobs / seconds}

    return run


def _max_jobs(mode: str, concurrency: int, max_jobs: DrainMaxJobs) -> int | None:
    """The ``max_jobs`` a drain's Worker gets (``None``: none given)."""
    if max_jobs == "best":
        return DRAIN_MAX_JOBS[mode, concurrency]
    return None if max_jobs == "default" else max_jobs


def _check(engine: Engine, jobs: int) -> None:
    try:
        check_all_completed(engine, jobs)
    finally:
        engine.dispose()


def drain_with_async_worker(ctx: RunContext) -> dict[str, float]:
    """``AsyncWorker``, lease mode, concurrency 16, in one event loop."""
    from sqlalchemy.ext.asyncio import create_async_engine

    jobs = ctx.sizes.drain

    async def drain(url: str) -> float:
        pool = ASYNC_CONCURRENCY + 2
        engine = create_async_engine(url, pool_size=pool, max_overflow=0)
        try:
            held = [await engine.connect() for _ in range(pool)]
            for connection in held:
                await connection.close()
            queue = AsyncJobQueue(Job)
            settings: dict[str, Any] = {
                "concurrency": ASYNC_CONCURRENCY,
                "max_jobs": ASYNC_MAX_JOBS,
                "listen": False,
            }
            warmup = AsyncWorker(queue, engine, warmup_topic(0), _async_noop, **settings)
            while (await warmup.run_once()).claimed:
                pass
            worker = AsyncWorker(queue, engine, TOPIC, _async_noop, **settings)
            start = time.perf_counter()
            worker.start()
            while worker.totals.completed < jobs:
                await asyncio.sleep(_POLL)
            seconds = time.perf_counter() - start
            worker.stop()
            if not await worker.join(60):
                raise RuntimeError("the AsyncWorker did not stop")
            return seconds
        finally:
            await engine.dispose()

    with ctx.database() as db:
        loaded = _load(db.conninfo, ctx.sizes, 1)
        seconds = asyncio.run(drain(db.url))
        _check(db.engine(), loaded)
        return {"jobs_per_s": jobs / seconds}


def pickup_with_worker(listen: bool) -> RunFunction:
    """An idle Worker's pickup latency (protocol in the module docs)."""

    def run(ctx: RunContext) -> dict[str, float]:
        sizes = ctx.sizes
        jobs = sizes.latency_jobs
        queue = JobQueue(Job)
        started: dict[uuid.UUID, float] = {}

        def handler(job_ctx: JobContext) -> None:
            started[job_ctx.job.id] = time.perf_counter()

        with ctx.database() as db:
            worker_engine = db.engine()
            producer_engine = db.engine()
            try:
                worker = Worker(
                    queue,
                    worker_engine,
                    TOPIC,
                    handler,
                    listen=listen,
                    heartbeat=NOTIFY_HEARTBEAT if listen else POLLING_HEARTBEAT,
                )
                worker.start()
                if listen:
                    wait_listening(worker)
                sessions = sessionmaker(producer_engine)
                with sessions.begin() as session:  # warm the pool and the compiled cache
                    queue.add_job(session, warmup_topic(0), baseline.payload(-1))
                committed: dict[uuid.UUID, float] = {}
                for n in range(jobs):
                    with sessions.begin() as session:
                        job_id = queue.add_job(session, TOPIC, baseline.payload(n))
                    committed[job_id] = time.perf_counter()
                    time.sleep(sizes.latency_interval_s)
                deadline = time.monotonic() + 30 + (0 if listen else POLLING_HEARTBEAT)
                while len(started) < jobs and time.monotonic() < deadline:
                    time.sleep(0.01)
                worker.stop()
                worker.join(30)
                if worker.listener is not None:  # closed before its database is dropped
                    worker.listener.stop(timeout=5)
            finally:
                worker_engine.dispose()
                producer_engine.dispose()
        missing = set(committed) - set(started)
        if missing:
            raise RuntimeError(f"the Worker never started {len(missing)} jobs")
        return latency_figures([(started[key] - committed[key]) * 1000 for key in committed])

    return run


def wait_listening(worker: Worker) -> None:
    deadline = time.monotonic() + 30
    while worker.listener is None and time.monotonic() < deadline:
        time.sleep(0.005)
    if worker.listener is None or not worker.listener.wait_listening(30):
        raise RuntimeError("the Worker's listener did not start")


def _drain_params(
    mode: str, concurrency: int, processes: int, max_jobs: DrainMaxJobs = "best"
) -> Callable[[Sizes], dict[str, object]]:
    return lambda sizes: {
        "jobs": sizes.drain,
        "mode": mode,
        "concurrency": concurrency,
        "processes": processes,
        "max_jobs": _max_jobs(mode, concurrency, max_jobs) or "adaptive",
        "pool_size": concurrency + 2,
        "listen": False,
    }


def _pickup_params(listen: bool) -> Callable[[Sizes], dict[str, object]]:
    return lambda sizes: {
        **latency_params(sizes),
        "listen": listen,
        "heartbeat_s": NOTIFY_HEARTBEAT if listen else POLLING_HEARTBEAT,
    }


def _drain_key(mode: str, concurrency: int, processes: int) -> str:
    return f"drain.worker.{mode}.c{concurrency}.p{processes}"


WORKLOADS = [
    *(
        Workload(
            _drain_key(mode, concurrency, processes),
            f"Worker, {mode} mode, concurrency {concurrency}, {processes} process"
            + ("es" if processes > 1 else "")
            + f", max_jobs {DRAIN_MAX_JOBS[mode, concurrency]}",
            JOBS_PER_S,
            drain_with_worker(mode, concurrency, processes),
            baseline=raw_key(100),
            params=_drain_params(mode, concurrency, processes),
        )
        for mode in MODES
        for processes in PROCESSES
        for concurrency in CONCURRENCY
    ),
    Workload(
        f"drain.worker.lease.c1.p1.batch{SAME_BATCH}",
        f"Worker, lease mode, concurrency 1, 1 process, max_jobs {SAME_BATCH} (like for like)",
        JOBS_PER_S,
        drain_with_worker("lease", 1, 1, SAME_BATCH),
        baseline=raw_key(100),
        params=_drain_params("lease", 1, 1, SAME_BATCH),
    ),
    *(
        Workload(
            f"drain.worker.{mode}.defaults",
            f"Worker, {mode} mode, defaults (no max_jobs: adaptive; concurrency 1, 1 process)",
            JOBS_PER_S,
            drain_with_worker(mode, 1, 1, "default"),
            baseline=raw_key(100),
            params=_drain_params(mode, 1, 1, "default"),
        )
        for mode in MODES
    ),
    Workload(
        f"drain.worker.lease.c1.p1.priorities{PRIORITY_LEVELS}",
        f"Worker, lease mode, concurrency 1, 1 process, max_jobs "
        f"{DRAIN_MAX_JOBS['lease', 1]}, jobs over {PRIORITY_LEVELS} priorities",
        JOBS_PER_S,
        drain_with_worker("lease", 1, 1, levels=PRIORITY_LEVELS),
        baseline=raw_key(100),
        params=lambda sizes: {
            **_drain_params("lease", 1, 1)(sizes),
            "priority_levels": PRIORITY_LEVELS,
        },
    ),
    Workload(
        "drain.async_worker.lease.c16.p1",
        f"AsyncWorker (psycopg), lease mode, concurrency {ASYNC_CONCURRENCY}, "
        f"max_jobs {ASYNC_MAX_JOBS}",
        JOBS_PER_S,
        drain_with_async_worker,
        baseline=raw_key(100),
        requires=("greenlet",),
        params=lambda sizes: {
            "jobs": sizes.drain,
            "mode": "lease",
            "concurrency": ASYNC_CONCURRENCY,
            "processes": 1,
            "max_jobs": ASYNC_MAX_JOBS,
            "driver": "psycopg (async)",
        },
    ),
    Workload(
        "latency.worker.notify",
        f"idle Worker, LISTEN/NOTIFY (heartbeat {NOTIFY_HEARTBEAT:g} s)",
        LATENCY_MS,
        pickup_with_worker(listen=True),
        baseline=RAW_LISTEN_NOTIFY,
        params=_pickup_params(True),
    ),
    Workload(
        "latency.worker.polling",
        f"idle Worker, polling only (listen=False, heartbeat {POLLING_HEARTBEAT:g} s)",
        LATENCY_MS,
        pickup_with_worker(listen=False),
        baseline=RAW_LISTEN_NOTIFY,
        params=_pickup_params(False),
    ),
]
