"""Tasks against the layer under them, in the same run (``--only tasks``).

**Enqueue** (``tasks.enqueue.*``). One transaction per job, each writing one
``bench_orders`` row through the ORM and enqueueing one job, as
``enqueue.single.library`` does: ``queue.add_job(session, TOPIC, {"order_id": n,
"action": "send-receipt"})`` (the baseline) against
``send_receipt.enqueue(session, order, "send-receipt")`` for a task
``send_receipt(order: Order, action: str)`` — the call bound against the signature,
the pending order flushed to learn its key and stored as a reference. Target: at
least 0.9x.

**Drain** (``tasks.drain.<mode>.*``). The Worker drain of :mod:`.worker` (20,000 due
jobs ``{"n": g}``, one process, concurrency 1, ``max_jobs`` 1,000, no LISTEN, warmed
up off the clock): the Worker with one no-op handler (the baseline) against a Worker
given a :class:`~programma_sa.TaskRegistry` whose no-op task ``noop(n: int)`` serves
the topic — the dispatch by topic and the reading of each job's document into a
call are what the ratio measures. Target: at least 0.9x.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import Engine
from sqlalchemy.orm import Session

from programma_sa import JobQueue, TaskRegistry, Worker
from programma_sa.worker import WorkerMode

from ..app import Job, Order
from ..harness import JOBS_PER_S, TOPIC, RunContext, Workload
from .enqueue import order_row, session_loop, single_params
from .worker import DRAIN_MAX_JOBS, drain_with_worker

_ACTION = "send-receipt"


def _enqueue_with_add_job(ctx: RunContext) -> dict[str, float]:
    queue = JobQueue(Job)

    def body(session: Session, n: int) -> None:
        session.add(order_row(n))
        queue.add_job(session, TOPIC, {"order_id": n, "action": _ACTION})

    return session_loop(ctx, ctx.sizes.single_enqueue, body)


def _enqueue_with_task(ctx: RunContext) -> dict[str, float]:
    registry = TaskRegistry(JobQueue(Job))

    @registry.task(topic=TOPIC)
    def send_receipt(order: Order, action: str) -> None:
        """Never run: only enqueued."""

    def body(session: Session, n: int) -> None:
        order = order_row(n)
        session.add(order)
        send_receipt.enqueue(session, order, _ACTION)

    return session_loop(ctx, ctx.sizes.single_enqueue, body)


def _noop(n: int) -> None:
    """The task: no work, so the figure is the dispatch's own cost."""


def registry_worker(engine: Engine, topic: str, settings: dict[str, Any]) -> Worker:
    """A Worker given a registry whose no-op task serves ``topic``."""
    registry = TaskRegistry(JobQueue(Job))
    registry.task(topic=topic)(_noop)
    return Worker(registry, engine, **settings)


ENQUEUE_BASELINE = "tasks.enqueue.add_job"


def _drain_key(mode: str, served_by: str) -> str:
    return f"tasks.drain.{mode}.{served_by}"


def _drain_params(mode: WorkerMode) -> Any:
    return lambda sizes: {
        "jobs": sizes.drain,
        "mode": mode,
        "concurrency": 1,
        "processes": 1,
        "max_jobs": DRAIN_MAX_JOBS[mode, 1],
        "listen": False,
    }


def _drains(mode: WorkerMode) -> list[Workload]:
    batch = DRAIN_MAX_JOBS[mode, 1]
    return [
        Workload(
            _drain_key(mode, "handler"),
            f"Worker, one handler, {mode} mode, concurrency 1, max_jobs {batch} (baseline)",
            JOBS_PER_S,
            drain_with_worker(mode, 1, 1),
            params=_drain_params(mode),
        ),
        Workload(
            _drain_key(mode, "registry"),
            f"Worker given a TaskRegistry, {mode} mode, concurrency 1, max_jobs {batch}",
            JOBS_PER_S,
            drain_with_worker(mode, 1, 1, serve=registry_worker),
            baseline=_drain_key(mode, "handler"),
            params=_drain_params(mode),
        ),
    ]


WORKLOADS = [
    Workload(
        ENQUEUE_BASELINE,
        "1/tx + order row, queue.add_job (baseline)",
        JOBS_PER_S,
        _enqueue_with_add_job,
        params=single_params,
    ),
    Workload(
        "tasks.enqueue.task",
        "1/tx + order row, task.enqueue(session, order, …) (reference argument)",
        JOBS_PER_S,
        _enqueue_with_task,
        baseline=ENQUEUE_BASELINE,
        params=single_params,
    ),
    *_drains("lease"),
    *_drains("transaction"),
]
