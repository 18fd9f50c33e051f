"""Slots for the Worker-based workloads (``programma_sa.worker.Worker``): a follow-up fills them.

They are registered now, so the table and the JSON list every figure the issue asks
for, marked *pending* until their ``run`` function is written and the ``pending``
marker below is removed. The protocol each must follow, so its figure is comparable
with the baselines already measured:

**Drain** (``drain.worker.<mode>.c<concurrency>.p<processes>``, baseline
``drain.raw.batch100``): in a fresh database (``ctx.database()``) load
``ctx.sizes.drain`` due jobs with ``baseline.load_due_jobs`` and run
``baseline.vacuum_analyze`` (untimed, as the other drains do). Start ``processes``
OS processes (``multiprocessing`` spawn context; pass them ``db.url``); each builds
its own engine (``pool_size`` >= ``concurrency`` + 1) and
``Worker(JobQueue(Job), engine, TOPIC, handler, mode=mode,
concurrency=concurrency, max_jobs=100, listen=False)`` with a no-op handler
(``lambda ctx: None``; ``ctx`` is a ``JobContext``), and drains: ``run_once()``
until a pass claims nothing. Time from a start barrier every process waits on to
the last one finishing; afterwards check every job is COMPLETED
(``drain.check_all_completed``). Return ``{"jobs_per_s": jobs / seconds}``.

**Pickup latency** (``latency.worker.notify`` / ``latency.worker.polling``,
baseline ``latency.raw_listen_notify``): ``Worker(..., listen=True)`` resp.
``listen=False`` (polling only, at the Worker's default ``heartbeat`` — put the
value in ``params``), ``start()``-ed in a background thread and left idle until the
first job; its handler records ``time.perf_counter()`` per ``ctx.job.id``. Enqueue
``ctx.sizes.latency_jobs`` jobs ``ctx.sizes.latency_interval_s`` apart, each with
``JobQueue.add_job`` in its own committed Session, noting ``time.perf_counter()``
when the commit returns. Latency = handler time - commit time, in ms; return
``harness.latency_figures(latencies)``; then ``stop()`` and ``join()`` the Worker.
"""

from __future__ import annotations

from collections.abc import Callable

from ..harness import JOBS_PER_S, LATENCY_MS, RunContext, RunFunction, Sizes, Workload
from .drain import raw_key
from .latency import RAW_LISTEN_NOTIFY
from .latency import params as latency_params

PENDING = "follow-up: the Worker-based run is not written yet"
MODES = ("lease", "transaction")
CONCURRENCY = (1, 4, 16)
PROCESSES = (1, 2)


def drain_with_worker(mode: str, concurrency: int, processes: int) -> RunFunction:
    """Slot: the Worker draining ``ctx.sizes.drain`` jobs (protocol in the module docs)."""

    def run(ctx: RunContext) -> dict[str, float]:
        raise NotImplementedError(PENDING)

    return run


def pickup_with_worker(listen: bool) -> RunFunction:
    """Slot: an idle Worker's pickup latency (protocol in the module docs)."""

    def run(ctx: RunContext) -> dict[str, float]:
        raise NotImplementedError(PENDING)

    return run


def _drain_params(
    mode: str, concurrency: int, processes: int
) -> Callable[[Sizes], dict[str, object]]:
    return lambda sizes: {
        "jobs": sizes.drain,
        "mode": mode,
        "concurrency": concurrency,
        "processes": processes,
        "max_jobs": 100,
    }


def _drain_key(mode: str, concurrency: int, processes: int) -> str:
    return f"drain.worker.{mode}.c{concurrency}.p{processes}"


WORKLOADS = [
    *(
        Workload(
            _drain_key(mode, concurrency, processes),
            f"Worker, {mode} mode, concurrency {concurrency}, {processes} process"
            + ("es" if processes > 1 else ""),
            JOBS_PER_S,
            drain_with_worker(mode, concurrency, processes),
            baseline=raw_key(100),
            pending=PENDING,
            params=_drain_params(mode, concurrency, processes),
        )
        for mode in MODES
        for processes in PROCESSES
        for concurrency in CONCURRENCY
    ),
    Workload(
        "latency.worker.notify",
        "idle Worker, LISTEN/NOTIFY",
        LATENCY_MS,
        pickup_with_worker(listen=True),
        baseline=RAW_LISTEN_NOTIFY,
        pending=PENDING,
        params=latency_params,
    ),
    Workload(
        "latency.worker.polling",
        "idle Worker, polling only",
        LATENCY_MS,
        pickup_with_worker(listen=False),
        baseline=RAW_LISTEN_NOTIFY,
        pending=PENDING,
        params=latency_params,
    ),
]
