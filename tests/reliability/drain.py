"""Drive one drain through claiming processes while faults strike at set points.

:func:`run_drain` enqueues ``jobs`` jobs, starts ``workers`` processes from
``argv``, and runs the i-th of ``faults`` once ``(i + 1) / (len(faults) + 1)`` of the
jobs are completed — so the faults are spread across the drain, and each strikes
while work is left. It then waits for the processes to finish and judges the
deliveries ledger. A fault is any callable; it returns counters (``kills``,
``stranded``, ``terminated`` …) that the report adds up.
"""

from __future__ import annotations

import random
import time
import uuid
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from sqlalchemy import Engine, func, select
from sqlalchemy.orm import Session

from programma_sa import JobQueue, JobSpec, JobState

from ..app import Job
from . import deliveries
from .claim_loop import RETRY_MESSAGE, repository_root
from .faults import WorkerPool, WorkerProcess

Fault = Callable[[WorkerPool, Engine], Counter[str]]


@dataclass
class DrainReport:
    job_ids: list[uuid.UUID]
    verdict: deliveries.Verdict
    seconds: float
    counters: Counter[str] = field(default_factory=Counter)
    states: Counter[str] = field(default_factory=Counter)


def enqueue(
    engine: Engine, topic: str, count: int, retry_after_seconds: int | None
) -> list[uuid.UUID]:
    queue = JobQueue(Job, notify=False)
    specs = [JobSpec(data={"n": n}, retry_after_seconds=retry_after_seconds) for n in range(count)]
    with Session(engine) as session, session.begin():
        return queue.add_jobs(session, topic, specs)


def completed(engine: Engine, topic: str) -> int:
    with engine.connect() as connection:
        return connection.execute(
            select(func.count())
            .select_from(Job)
            .where(Job.topic == topic, Job.state == JobState.COMPLETED.value)
        ).scalar_one()


def _wait_for(engine: Engine, topic: str, at_least: int, pool: WorkerPool, deadline: float) -> None:
    while completed(engine, topic) < at_least:
        if not pool.alive():
            raise AssertionError(f"every worker exited before the drain got going:\n{pool.logs()}")
        if time.monotonic() > deadline:
            raise AssertionError(f"drain stalled below {at_least} completed jobs:\n{pool.logs()}")
        time.sleep(0.01)


def run_drain(
    engine: Engine,
    *,
    topic: str,
    jobs: int,
    argv: Sequence[str],
    workers: int,
    faults: Sequence[Fault],
    retry_after_seconds: int | None,
    timeout: float = 300.0,
) -> DrainReport:
    job_ids = enqueue(engine, topic, jobs, retry_after_seconds)
    counters: Counter[str] = Counter()
    began = time.monotonic()
    deadline = began + timeout
    with WorkerPool(argv, cwd=repository_root()) as pool:
        pool.spawn(workers)
        for index, fault in enumerate(faults):
            _wait_for(engine, topic, jobs * (index + 1) // (len(faults) + 1), pool, deadline)
            counters.update(fault(pool, engine))
        pool.wait(timeout=max(1.0, deadline - time.monotonic()))
        counters["worker_db_errors"] = pool.count_in_logs(RETRY_MESSAGE)
    seconds = time.monotonic() - began
    with engine.connect() as connection:
        states = Counter(
            dict(
                connection.execute(
                    select(Job.state, func.count()).where(Job.topic == topic).group_by(Job.state)
                ).all()
            )
        )
    verdict = deliveries.analyse(job_ids, deliveries.read_all(engine))
    return DrainReport(job_ids, verdict, seconds, counters, states)


def sigkill_a_claiming_worker(
    rng: random.Random, *, wait_for_delivery: bool, replace: bool = True
) -> Fault:
    """SIGKILL a random worker; counts ``kills`` and ``stranded``.

    With ``wait_for_delivery`` (lease mode, where a delivery is committed before it
    is handled) the victim is killed while it holds a recorded, unfinished
    delivery, and ``stranded`` counts the deliveries it never completed. In
    transaction mode deliveries are invisible until they commit, so the victim is
    killed at a random moment instead. With ``replace``, a new process takes the
    victim's place, as a supervisor would start one.
    """

    def fault(pool: WorkerPool, engine: Engine) -> Counter[str]:
        if wait_for_delivery:
            victim = _choose_busy(pool, engine, rng)
        else:
            victim = pool.choose(rng)
            time.sleep(rng.uniform(0, 0.05))
        pool.kill(victim)
        stranded = _in_flight(engine).get(victim.pid, 0)
        if replace:
            pool.spawn(1)
        return Counter(kills=1, stranded=stranded)

    return fault


def _choose_busy(pool: WorkerPool, engine: Engine, rng: random.Random) -> WorkerProcess:
    """A random live worker holding an unfinished delivery (any live one after 10 s)."""
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        busy = _in_flight(engine)
        candidates = [worker for worker in pool.alive() if busy.get(worker.pid)]
        if candidates:
            return rng.choice(candidates)
        time.sleep(0.002)
    return pool.choose(rng)


def _in_flight(engine: Engine) -> dict[int, int]:
    """Unfinished deliveries per worker pid."""
    ledger = deliveries.deliveries
    with engine.connect() as connection:
        rows = connection.execute(
            select(ledger.c.worker_pid, func.count())
            .where(ledger.c.completed_at.is_(None))
            .group_by(ledger.c.worker_pid)
        )
        return {pid: count for pid, count in rows}
