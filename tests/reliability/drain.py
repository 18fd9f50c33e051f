"""Drive one drain through real Worker processes while faults strike at set points.

:func:`run_drain` enqueues ``jobs`` jobs, starts ``workers`` processes from
``argv`` (a :func:`worker_process.command <.worker_process.command>`), and runs the
i-th of ``faults`` once about ``(i + 1) / (len(faults) + 1)`` of the jobs are
completed (shifted at random when given an ``rng``), so the faults are spread
across the drain and each strikes while work is left. Once no job is unfinished it
optionally probes how fast a new enqueue wakes the idle workers, SIGTERMs every
worker (each must exit 0), and judges the jobs table and the deliveries ledger.

A fault is any callable ``(pool, engine) -> Counter``; the report adds up the
counters it returns (``kills``, ``stranded``, ``backends``, ``restarts`` …).
"""

from __future__ import annotations

import os
import random
import signal
import time
import uuid
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from sqlalchemy import Engine, func, select, text
from sqlalchemy.orm import Session

from programma_sa import JobQueue, JobSpec, JobState
from programma_sa._embedded import EmbeddedPostgres

from ..app import Job
from . import deliveries
from .faults import WorkerPool, WorkerProcess, restart, terminate_backends
from .worker_process import LEDGER_RETRY_MESSAGE, application_name, repository_root

Fault = Callable[[WorkerPool, Engine], Counter[str]]
#: Called about once a second while the drain runs, with the completed count.
Monitor = Callable[[WorkerPool, Engine, int], None]

#: What programma_sa.worker logs once run() has installed its signal handlers.
STARTED_MESSAGE = "worker started: "
#: Longer than the Worker's shortest idle wait (0.25 s) plus a pass.
PROBE_SETTLE_SECONDS = 1.0
_UNFINISHED = (JobState.CREATED.value, JobState.ACTIVE.value, JobState.PROCESSING.value)
_ENQUEUE_BATCH = 10_000
#: What the workers' logs say, counted into the report (see programma_sa.worker,
#: programma_sa.worker.listen and worker_process).
LOG_COUNTERS = {
    "claim_errors": "claiming from ",  # the loop logged a database error and backed off
    "pass_errors": "a transaction-mode pass failed",
    "transactions_lost": "transaction lost: ",  # a pass's connection died under a handler
    "commits_failed": "commit failed: ",  # a transaction-mode pass's COMMIT failed
    "completions_lost": "could not complete ",
    "failures_unrecorded": "could not record the failure",
    "ledger_retries": LEDGER_RETRY_MESSAGE,
    "listener_losses": "LISTEN connection on ",
    "listener_connects": "listening on ",
    "tracebacks": "Traceback",
}


@dataclass
class DrainReport:
    #: The drain's jobs, then any wake-up probes' (empty when not kept: the soak).
    job_ids: list[uuid.UUID]
    jobs: int
    #: The ledger's judgement (``None`` when the workers kept no ledger).
    verdict: deliveries.Verdict | None
    #: Wall-clock seconds from the first worker's start to the last job finished.
    seconds: float
    counters: Counter[str] = field(default_factory=Counter)
    #: Final job states, and how many jobs were claimed how many times (``attempts``).
    states: Counter[str] = field(default_factory=Counter)
    attempts: Counter[int] = field(default_factory=Counter)
    #: Worker pids right after the start (after any replacement: at the end).
    started_pids: list[int] = field(default_factory=list)
    final_pids: list[int] = field(default_factory=list)
    #: Seconds from a probe job's insert to its claim (database clock).
    pickups: list[float] = field(default_factory=list)


def enqueue(
    engine: Engine, topic: str, count: int, retry_after_seconds: int | None
) -> list[uuid.UUID]:
    """Commit ``count`` jobs (without NOTIFY: the workers find them by claiming)."""
    queue = JobQueue(Job, notify=False)
    ids: list[uuid.UUID] = []
    for start in range(0, count, _ENQUEUE_BATCH):
        specs = [
            JobSpec(data={"n": n}, retry_after_seconds=retry_after_seconds)
            for n in range(start, min(count, start + _ENQUEUE_BATCH))
        ]
        with Session(engine) as session, session.begin():
            ids.extend(queue.add_jobs(session, topic, specs))
    return ids


def counts(engine: Engine, topic: str) -> tuple[int, int]:
    """``(completed, unfinished)`` jobs of ``topic``."""
    with engine.connect() as connection:
        completed, unfinished = connection.execute(
            select(
                func.count().filter(Job.state == JobState.COMPLETED.value),
                func.count().filter(Job.state.in_(_UNFINISHED)),
            ).where(Job.topic == topic)
        ).one()
    return completed, unfinished


class _Waiter:
    """Waits for drain milestones, calling the monitor, failing on a stall."""

    def __init__(
        self, engine: Engine, topic: str, pool: WorkerPool, deadline: float, monitor: Monitor | None
    ) -> None:
        self.engine, self.topic, self.pool = engine, topic, pool
        self.deadline, self.monitor = deadline, monitor
        self._next_tick = 0.0

    def until_completed(self, at_least: int) -> None:
        self._until(lambda completed, _: completed >= at_least, f"{at_least} completions")

    def until_finished(self) -> None:
        self._until(lambda _, unfinished: unfinished == 0, "every job finished")

    def _until(self, done: Callable[[int, int], bool], what: str) -> None:
        while True:
            asked = time.monotonic()
            completed, unfinished = counts(self.engine, self.topic)
            # Counting scans the topic's jobs: over the soak's million rows that
            # takes a while, and polling back to back would load the server as
            # much as the workers do. Poll at most a tenth of the time.
            pause = max(0.02, 10 * (time.monotonic() - asked))
            if self.monitor is not None and time.monotonic() >= self._next_tick:
                self.monitor(self.pool, self.engine, completed)
                self._next_tick = time.monotonic() + 1.0
            if done(completed, unfinished):
                return
            if not self.pool.alive():
                raise AssertionError(f"every worker exited before {what}:\n{self.pool.logs()}")
            if time.monotonic() > self.deadline:
                raise AssertionError(
                    f"drain stalled before {what} ({completed} completed, {unfinished} "
                    f"unfinished):\n{self.pool.logs()}"
                )
            time.sleep(pause)


def run_drain(
    engine: Engine,
    *,
    topic: str,
    jobs: int,
    argv: Sequence[str],
    workers: int,
    retry_after_seconds: int | None,
    faults: Sequence[Fault] = (),
    rng: random.Random | None = None,
    wake_probes: int = 0,
    monitor: Monitor | None = None,
    ledger: bool = True,
    timeout: float = 300.0,
) -> DrainReport:
    job_ids = enqueue(engine, topic, jobs, retry_after_seconds)
    report = DrainReport(job_ids=job_ids if ledger else [], jobs=jobs, verdict=None, seconds=0.0)
    del job_ids  # the soak's million ids need not stay in memory
    began = time.monotonic()
    with WorkerPool(argv, cwd=repository_root()) as pool:
        pool.spawn(workers)
        report.started_pids = pool.pids()
        waiter = _Waiter(engine, topic, pool, began + timeout, monitor)
        for index, fault in enumerate(faults):
            share = index + 1 + (rng.uniform(-0.4, 0.4) if rng is not None else 0.0)
            waiter.until_completed(int(jobs * share / (len(faults) + 1)))
            report.counters.update(fault(pool, engine))
        waiter.until_finished()
        report.seconds = time.monotonic() - began
        if monitor is not None:
            monitor(pool, engine, jobs)
        if wake_probes:
            wait_for_listeners(engine, pool)
            for _ in range(wake_probes):
                job_id, pickup = probe_wakeup(engine, topic, pool)
                report.job_ids.append(job_id)
                report.pickups.append(pickup)
        report.final_pids = pool.pids()
        pool.shutdown(timeout=30, started=STARTED_MESSAGE)
        for name, needle in LOG_COUNTERS.items():
            report.counters[name] += pool.count_in_logs(needle)
    report.states = Counter(dict(_tally(engine, Job.state, topic)))
    report.attempts = Counter(dict(_tally(engine, Job.attempts, topic)))
    if ledger:
        report.verdict = deliveries.analyse(report.job_ids, deliveries.read_all(engine))
    return report


def _tally(engine: Engine, column: Any, topic: str) -> list[Any]:
    """``(value, jobs)`` pairs of ``column`` over the jobs of ``topic``."""
    with engine.connect() as connection:
        return list(
            connection.execute(
                select(column, func.count()).where(Job.topic == topic).group_by(column)
            ).all()
        )


# -- after the drain: is LISTEN back? ---------------------------------------------------


def backends_per_worker(engine: Engine, pool: WorkerPool, *, listening: bool) -> dict[int, int]:
    """Backends per live worker pid (found by the workers' application name);
    ``listening``: only the LISTEN connection (its last query is the LISTEN)."""
    names = {application_name(pid): pid for pid in pool.pids()}
    with engine.connect() as connection:
        rows = connection.execute(
            text(
                "SELECT application_name, count(*) FROM pg_stat_activity"
                " WHERE datname = current_database() AND application_name = ANY(:names)"
                " AND (NOT :listening OR query LIKE 'LISTEN %')"
                " GROUP BY application_name"
            ),
            {"names": list(names), "listening": listening},
        ).all()
    found = {names[name]: count for name, count in rows}
    return {pid: found.get(pid, 0) for pid in names.values()}


def wait_for_listeners(engine: Engine, pool: WorkerPool, timeout: float = 30.0) -> None:
    """Wait until every live worker LISTENs on exactly one connection."""
    deadline = time.monotonic() + timeout
    while set((seen := backends_per_worker(engine, pool, listening=True)).values()) != {1}:
        if time.monotonic() > deadline:
            raise AssertionError(f"LISTEN backends per worker: {seen}:\n{pool.logs()}")
        time.sleep(0.1)


def probe_wakeup(engine: Engine, topic: str, pool: WorkerPool) -> tuple[uuid.UUID, float]:
    """Enqueue one job (with NOTIFY) to idle workers; its id and seconds to its claim.

    It first waits :data:`PROBE_SETTLE_SECONDS`, so that any pass the workers had
    scheduled (after a reconnection, after the previous probe) is over and they
    sleep on their heartbeat: only a notification can wake them quickly then.
    """
    time.sleep(PROBE_SETTLE_SECONDS)
    queue = JobQueue(Job)
    with Session(engine) as session, session.begin():
        job_id = queue.add_job(session, topic, {"probe": True})
    deadline = time.monotonic() + 30
    while True:
        with engine.connect() as connection:
            waited = connection.execute(
                select(Job.started_at - Job.created_at).where(
                    Job.id == job_id, Job.state == JobState.COMPLETED.value
                )
            ).scalar_one_or_none()
        if isinstance(waited, timedelta):
            return job_id, waited.total_seconds()
        if time.monotonic() > deadline:
            raise AssertionError(f"probe job {job_id} not done within 30 s:\n{pool.logs()}")
        time.sleep(0.01)


# -- faults -----------------------------------------------------------------------------


def sigkill_a_worker(rng: random.Random, *, wait_for_delivery: bool, replace: bool = True) -> Fault:
    """SIGKILL a random worker; counts ``kills`` and ``stranded``.

    With ``wait_for_delivery`` (lease mode, where a delivery is recorded before it
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
        stranded = deliveries.in_flight(engine).get(victim.pid, 0)
        if replace:
            pool.spawn(1)
        return Counter(kills=1, stranded=stranded)

    return fault


def _choose_busy(pool: WorkerPool, engine: Engine, rng: random.Random) -> WorkerProcess:
    """A random live worker, frozen (SIGSTOP) while it holds an unfinished delivery.

    Freezing before looking closes the race in which the chosen worker finishes its
    deliveries between the look and the kill (jobs take milliseconds); SIGKILL ends
    a stopped process all the same. Any live worker after 10 s.
    """
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        busy = deliveries.in_flight(engine)
        candidates = [worker for worker in pool.alive() if busy.get(worker.pid)]
        if candidates:
            victim = rng.choice(candidates)
            os.kill(victim.pid, signal.SIGSTOP)
            time.sleep(0.01)  # let a commit already sent to the server land
            if deliveries.in_flight(engine).get(victim.pid):
                return victim
            os.kill(victim.pid, signal.SIGCONT)
        time.sleep(0.002)
    return pool.choose(rng)


def terminate_every_backend(url: str) -> Fault:
    """``pg_terminate_backend`` of every other backend of the database (the workers'
    pooled and LISTEN connections alike); counts ``terminations`` and ``backends``."""

    def fault(pool: WorkerPool, engine: Engine) -> Counter[str]:
        return Counter(terminations=1, backends=terminate_backends(url))

    return fault


def restart_server(server: EmbeddedPostgres, downtime: float) -> Fault:
    """Stop the embedded server, wait ``downtime`` seconds, start it; counts ``restarts``."""

    def fault(pool: WorkerPool, engine: Engine) -> Counter[str]:
        restart(server, downtime)
        return Counter(restarts=1)

    return fault


# -- judging ----------------------------------------------------------------------------


def assert_nothing_lost(report: DrainReport) -> None:
    """Every job of the drain (and every probe) is COMPLETED, and the ledger agrees."""
    expected = report.jobs + len(report.pickups)
    assert report.states == {JobState.COMPLETED.value: expected}, report.states
    if report.verdict is not None:
        assert not report.verdict.lost, f"{len(report.verdict.lost)} jobs never completed"
        assert not report.verdict.strangers, report.verdict.strangers


def worker_db_errors(report: DrainReport) -> int:
    """Database errors the workers logged and rode out (loop, passes, writes, ledger)."""
    return sum(
        report.counters[name]
        for name in (
            "claim_errors",
            "pass_errors",
            "transactions_lost",
            "commits_failed",
            "completions_lost",
            "failures_unrecorded",
            "ledger_retries",
        )
    )


def redelivered_jobs(report: DrainReport) -> int:
    """Jobs claimed more than once, by the jobs table's own ``attempts``."""
    return sum(count for attempts, count in report.attempts.items() if attempts > 1)
