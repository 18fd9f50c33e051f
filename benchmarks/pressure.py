"""Throughput and claim latency while long REPEATABLE READ snapshots keep dead rows alive.

A steady stream of jobs is enqueued and drained by one Worker at its defaults, for
two phases of equal length in one fresh database: *clean*, then *pressured* — the
same stream while ``--readers`` sessions each hold one REPEATABLE READ transaction
open and count the jobs table in a loop (a reporting query, an analytics export).
Their snapshots stop VACUUM (and index-scan hints) from clearing the versions every
claim and completion leaves behind, so each claim may step over more dead index
entries as the phase goes on::

    python -m benchmarks.pressure --mode lease --seconds 60
    python -m benchmarks.pressure --mode transaction --seconds 60

Prints, per phase: jobs completed per second (against the enqueue rate), the claim
statement's latency (p50 / p99 / max, timed on the worker's engine by SQLAlchemy's
cursor events, so exactly the claim's round trip), and the backlog at the phase's
end; then the pressured phase's throughput as a fraction of the clean one's.
``--reader-transaction-seconds`` ends and restarts each reader's transaction that
often (default: held for the whole phase, the worst case).
"""

from __future__ import annotations

import argparse
import os
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Engine, create_engine, event, func, select
from sqlalchemy.orm import sessionmaker

from programma_sa import JobQueue, JobSpec, Worker, migrations
from programma_sa._drivers import statements_for
from programma_sa.testing import fresh_database

from .app import Job
from .harness import DEFAULT_ADMIN_URL, percentile

TOPIC = "bench"
#: How often the producer enqueues a batch (seconds).
_TICK = 0.05


@dataclass
class Phase:
    """What one phase measured."""

    name: str
    seconds: float = 0.0
    enqueued: int = 0
    completed: int = 0
    claims_ms: list[float] = field(default_factory=list)
    backlog_at_end: int = 0

    def row(self, rate: float) -> str:
        per_s = self.completed / self.seconds if self.seconds else 0.0
        claims = self.claims_ms or [0.0]
        return (
            f"| {self.name} | {per_s:,.0f} | {rate:,.0f} | {percentile(claims, 0.5):.2f} "
            f"| {percentile(claims, 0.99):.2f} | {max(claims):.1f} | {len(self.claims_ms):,} "
            f"| {self.backlog_at_end:,} |"
        )


class ClaimTimer:
    """Times the claim statement on ``engine`` (identified by its statement object)."""

    def __init__(self, engine: Engine, queue: JobQueue) -> None:
        self.claim = statements_for("postgresql", queue.table).claim
        self.phase: Phase | None = None
        self._started = threading.local()
        event.listen(engine, "before_cursor_execute", self._before)
        event.listen(engine, "after_cursor_execute", self._after)

    def _is_claim(self, context: Any) -> bool:
        compiled = getattr(context, "compiled", None)
        return compiled is not None and compiled.statement is self.claim

    def _before(self, conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        if self._is_claim(args[1]):
            self._started.at = time.perf_counter()

    def _after(self, conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        if self._is_claim(args[1]) and self.phase is not None:
            self.phase.claims_ms.append((time.perf_counter() - self._started.at) * 1000)


@contextmanager
def readers(
    engine: Engine, count: int, restart_every: float | None, pause: float
) -> Iterator[None]:
    """``count`` threads, each counting the jobs table in a loop (``pause`` seconds
    between counts) inside one REPEATABLE READ transaction (restarted every
    ``restart_every`` seconds)."""
    stop = threading.Event()
    count_jobs = select(func.count()).select_from(Job.__table__)

    def read() -> None:
        with engine.connect() as connection:
            connection = connection.execution_options(isolation_level="REPEATABLE READ")
            while not stop.is_set():
                began = time.monotonic()
                with connection.begin():
                    while not stop.is_set() and (
                        restart_every is None or time.monotonic() - began < restart_every
                    ):
                        connection.execute(count_jobs)
                        stop.wait(pause)

    threads = [threading.Thread(target=read, daemon=True) for _ in range(count)]
    for thread in threads:
        thread.start()
    try:
        yield
    finally:
        stop.set()
        for thread in threads:
            thread.join(30)


def run_phase(
    phase: Phase, engine: Engine, queue: JobQueue, rate: float, seconds: float, done: list[int]
) -> None:
    """Enqueue ``rate`` jobs a second for ``seconds``; count what the worker completed."""
    sessions = sessionmaker(engine)
    per_tick = max(1, round(rate * _TICK))
    start = time.perf_counter()
    completed_before = done[0]
    tick = 0
    while (now := time.perf_counter()) - start < seconds:
        with sessions.begin() as session:
            queue.add_jobs(session, TOPIC, [JobSpec(data={"n": n}) for n in range(per_tick)])
        phase.enqueued += per_tick
        tick += 1
        time.sleep(max(0.0, start + tick * _TICK - time.perf_counter()))
    phase.seconds = now - start
    phase.completed = done[0] - completed_before
    phase.backlog_at_end = sum(p.enqueued for p in PHASES) - done[0]


PHASES: list[Phase] = []


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.pressure", description=__doc__)
    parser.add_argument(
        "--database-url",
        default=os.environ.get("PROGRAMMA_BENCH_DATABASE_URL", DEFAULT_ADMIN_URL),
        help="admin SQLAlchemy URL (a fresh database is created beside it)",
    )
    parser.add_argument("--mode", choices=["lease", "transaction"], default="lease")
    parser.add_argument("--seconds", type=float, default=60.0, help="length of each phase")
    parser.add_argument("--rate", type=float, default=1000.0, help="jobs enqueued per second")
    parser.add_argument("--readers", type=int, default=4)
    parser.add_argument("--reader-transaction-seconds", type=float, default=None)
    parser.add_argument(
        "--reader-pause",
        type=float,
        default=0.1,
        help="seconds each reader waits between counts (0: a tight loop, which on a "
        "small machine measures CPU starvation more than dead rows)",
    )
    args = parser.parse_args(argv)
    if args.seconds <= 0 or args.rate <= 0 or args.readers < 1 or args.reader_pause < 0:
        parser.error("--seconds and --rate must be > 0, --readers >= 1, --reader-pause >= 0")

    queue = JobQueue(Job)
    done = [0]
    lock = threading.Lock()

    def handler(ctx: Any) -> None:
        with lock:
            done[0] += 1

    PHASES.clear()
    with fresh_database(args.database_url, prefix="programma_pressure") as url:
        migrations.upgrade(url)
        worker_engine = create_engine(url)
        engine = create_engine(url, pool_size=args.readers + 2)
        timer = ClaimTimer(worker_engine, queue)
        worker = Worker(queue, worker_engine, TOPIC, handler, mode=args.mode)
        worker.start()
        try:
            for name, with_readers in [("clean", False), ("pressured", True)]:
                phase = Phase(name)
                PHASES.append(phase)
                timer.phase = phase
                if with_readers:
                    with readers(
                        engine, args.readers, args.reader_transaction_seconds, args.reader_pause
                    ):
                        run_phase(phase, engine, queue, args.rate, args.seconds, done)
                else:
                    run_phase(phase, engine, queue, args.rate, args.seconds, done)
        finally:
            worker.stop()
            worker.join(60)
            if worker.listener is not None:
                worker.listener.stop(timeout=5)
            worker_engine.dispose()
            engine.dispose()
    clean, pressured = PHASES
    held = args.reader_transaction_seconds
    print(
        f"Worker mode {args.mode}, defaults otherwise; {args.rate:,.0f} jobs/s enqueued; "
        f"{args.seconds:.0f} s per phase; {args.readers} REPEATABLE READ readers in the "
        f"pressured phase, {args.reader_pause:g} s between counts, transactions "
        f"{'held for the phase' if held is None else f'of {held:g} s'}; "
        f"load average {os.getloadavg()[0]:.2f} at the end\n"
    )
    print(
        "| phase | completed/s | enqueued/s | claim p50 ms | claim p99 ms | max ms "
        "| claims | backlog |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for phase in PHASES:
        print(phase.row(phase.enqueued / phase.seconds))
    if clean.completed:
        ratio = (pressured.completed / pressured.seconds) / (clean.completed / clean.seconds)
        print(f"\npressured throughput / clean: {ratio:.1%}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
