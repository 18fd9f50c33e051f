"""Where an idle Worker's pickup latency goes, beside designs it could have had.

::

    python -m benchmarks.pickup_breakdown [--jobs 200] [--rounds 3] [--database-url URL]

``latency.worker.notify`` (in :mod:`benchmarks.run`) compares the idle Worker with a
raw psycopg listener that claims on its own LISTEN connection. This script takes the
difference apart. Every variant waits idle for jobs enqueued one at a time, 20 ms
apart, each by a raw psycopg producer with ``pg_notify`` in the same statement (the
same producer for all), and reports the median milliseconds from the producer's
commit returning to the job being in hand:

* ``raw, listen + claim on one connection`` — the baseline's structure: the thread
  that LISTENs claims with a hand-written ``UPDATE … SKIP LOCKED`` on the same
  connection;
* ``raw, claim on a 2nd connection after a thread hop`` — a listening thread wakes a
  claiming thread, which claims on a connection of its own (the Worker's structure,
  without SQLAlchemy);
* ``library claim direct (psycopg), on the LISTEN connection`` — the library's claim
  statement as the Worker's direct claim executes it (``direct_claim``: psycopg,
  prepared, the rows read into ``ClaimedJob`` objects) by the listening thread on
  its own connection: what the statement itself costs beside the raw one;
* ``library claim direct (psycopg), 2nd connection after a thread hop`` — the same
  in the Worker's structure, without the rest of the Worker;
* ``library claim via SQLAlchemy, on the LISTEN connection`` — the library's claim
  statement executed through SQLAlchemy Core (as the Worker executes it) on the
  listening connection itself, by the listening thread: the best case of any design
  that claims through SQLAlchemy;
* ``library claim via SQLAlchemy, pooled, after a thread hop`` — what the Worker does
  when woken, without the rest of the Worker;
* ``Worker`` — the real thing at its defaults, to the handler's first line: it
  claims directly (psycopg, a kept connection: ``direct_claim``);
* ``Worker claiming through SQLAlchemy`` — the same with ``direct_claim=False``, with
  its timeline from SQLAlchemy's engine events: when the claim's statement was
  handed to the driver and when it returned.

Rounds interleave the variants, each in a fresh database (migrated by the shipped
chain), so background noise falls on all alike; each figure is the median over the
rounds of each round's median. Prints a markdown table; ratios are to the first row.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import psycopg
from psycopg import sql
from sqlalchemy import Connection, Engine, create_engine, event

from programma_sa import JobContext, JobQueue, Worker, migrations
from programma_sa._drivers import statements_for
from programma_sa._drivers.postgresql import notify_channel
from programma_sa._execute import execute, execute_direct
from programma_sa.testing import fresh_database

from . import baseline
from .app import Job
from .harness import DEFAULT_ADMIN_URL, Database
from .run import URL_ENV
from .workloads.worker import wait_listening

TOPIC = "breakdown"
INTERVAL_S = 0.020
_QUEUE = JobQueue(Job)
_CHANNEL = notify_channel(_QUEUE.table)
#: The dialect the direct claim is compiled for (PostgreSQL + psycopg 3).
_DIALECT = create_engine("postgresql+psycopg://").dialect
_ENQUEUE = sql.SQL(
    "WITH job AS (INSERT INTO programma_jobs (id, topic, data) VALUES (%s, %s, %s::jsonb)"
    " RETURNING topic) SELECT pg_notify({}, topic) FROM job"
).format(sql.Literal(_CHANNEL))


@dataclass
class Timeline:
    """``perf_counter`` stamps by job id: committed, and the milestones after it."""

    committed: dict[uuid.UUID, float] = field(default_factory=dict)
    in_hand: dict[uuid.UUID, float] = field(default_factory=dict)
    #: The Worker only: the claim statement's send and return, per claim.
    sent: list[float] = field(default_factory=list)
    returned: list[float] = field(default_factory=list)

    def took_ms(self) -> float:
        missing = set(self.committed) - set(self.in_hand)
        if missing:
            raise RuntimeError(f"{len(missing)} jobs never picked up")
        return statistics.median(
            (self.in_hand[key] - committed) * 1000 for key, committed in self.committed.items()
        )

    def first_after_commit_ms(self, stamps: list[float]) -> float:
        """Median delay from each commit to the first of ``stamps`` after it."""
        ordered = sorted(stamps)
        delays = []
        for committed in self.committed.values():
            later = [stamp for stamp in ordered if stamp >= committed]
            if later:
                delays.append((later[0] - committed) * 1000)
        return statistics.median(delays)


def produce(db: Database, jobs: int, timeline: Timeline) -> None:
    with psycopg.connect(db.conninfo, autocommit=True) as connection:
        for n in range(jobs):
            job_id = uuid.uuid4()
            connection.execute(_ENQUEUE, (job_id, TOPIC, json.dumps(baseline.payload(n))))
            timeline.committed[job_id] = time.perf_counter()
            time.sleep(INTERVAL_S)


def listen(connection: psycopg.Connection[Any]) -> None:
    connection.execute(sql.SQL("LISTEN {}").format(sql.Identifier(_CHANNEL)))


def wait_for_notification(connection: psycopg.Connection[Any]) -> None:
    for _notification in connection.notifies(timeout=0.2, stop_after=1):
        pass


def raw_claim(connection: psycopg.Connection[Any], timeline: Timeline) -> bool:
    rows = connection.execute(baseline.RAW_CLAIM, (TOPIC, 100)).fetchall()
    now = time.perf_counter()
    for job_id, _data in rows:
        timeline.in_hand[job_id] = now
    return bool(rows)


def library_claim(connection: Connection, timeline: Timeline) -> bool:
    jobs = execute(connection, _QUEUE.operations.claim_jobs(TOPIC, 100))
    now = time.perf_counter()
    for job in jobs:
        timeline.in_hand[job.id] = now
    return bool(jobs)


def direct_claim(connection: psycopg.Connection[Any], timeline: Timeline) -> bool:
    operation = _QUEUE.operations.claim_jobs(TOPIC, 100)
    jobs = execute_direct(connection.cursor(), _DIALECT, operation)
    now = time.perf_counter()
    for job in jobs:
        timeline.in_hand[job.id] = now
    return bool(jobs)


def autocommit(engine: Engine) -> Engine:
    return engine.execution_options(isolation_level="AUTOCOMMIT")


@contextmanager
def in_background(target: Callable[[], None]) -> Iterator[None]:
    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    try:
        yield
    finally:
        thread.join(30)


def measure(
    db: Database, jobs: int, timeline: Timeline, stop: threading.Event, consumer: Callable[[], None]
) -> Timeline:
    """Run ``consumer`` in the background while the producer enqueues ``jobs``."""
    with in_background(consumer):
        time.sleep(0.3)  # let it reach its first wait
        produce(db, jobs, timeline)
        time.sleep(0.3)  # let it take the last job
        stop.set()
    return timeline


def with_hop(
    db: Database, stop: threading.Event, claim: Callable[[], object]
) -> Callable[[], None]:
    """A listening thread that wakes a claiming thread (``claim`` until it is empty)."""
    wakeups = threading.Condition()
    generation = [0]

    def claimer() -> None:
        seen = [0]

        def woken() -> bool:
            return generation[0] != seen[0] or stop.is_set()

        while not stop.is_set():
            with wakeups:
                wakeups.wait_for(woken, timeout=0.2)
                seen[0] = generation[0]
            while claim():
                pass

    def listener() -> None:
        with psycopg.connect(db.conninfo, autocommit=True) as connection:
            listen(connection)
            with in_background(claimer):
                while not stop.is_set():
                    for _notification in connection.notifies(timeout=0.2, stop_after=1):
                        with wakeups:
                            generation[0] += 1
                            wakeups.notify()

    return listener


#: A claim on a psycopg connection, noting what it took in the timeline; True if any.
Claim = Callable[[psycopg.Connection[Any], Timeline], bool]


def on_listen_connection(db: Database, jobs: int, claim: Claim) -> Timeline:
    """The listening thread claims on its own connection."""
    timeline, stop = Timeline(), threading.Event()

    def listener() -> None:
        with psycopg.connect(db.conninfo, autocommit=True) as connection:
            listen(connection)
            while not stop.is_set():
                wait_for_notification(connection)
                while claim(connection, timeline):
                    pass

    return measure(db, jobs, timeline, stop, listener)


def after_a_hop(db: Database, jobs: int, claim: Claim) -> Timeline:
    """A listening thread wakes a claiming thread, which claims on a 2nd connection."""
    timeline, stop = Timeline(), threading.Event()
    with psycopg.connect(db.conninfo, autocommit=True) as claiming:
        listener = with_hop(db, stop, lambda: claim(claiming, timeline))
        return measure(db, jobs, timeline, stop, listener)


def run_raw_same_connection(db: Database, jobs: int) -> Timeline:
    return on_listen_connection(db, jobs, raw_claim)


def run_raw_hop(db: Database, jobs: int) -> Timeline:
    return after_a_hop(db, jobs, raw_claim)


def run_direct_on_listen_connection(db: Database, jobs: int) -> Timeline:
    return on_listen_connection(db, jobs, direct_claim)


def run_direct_hop(db: Database, jobs: int) -> Timeline:
    return after_a_hop(db, jobs, direct_claim)


def run_library_on_listen_connection(db: Database, jobs: int) -> Timeline:
    timeline, stop = Timeline(), threading.Event()
    engine = db.engine()

    def listener() -> None:
        with autocommit(engine).connect() as connection:
            driver = connection.connection.driver_connection
            assert isinstance(driver, psycopg.Connection)
            listen(driver)
            while not stop.is_set():
                wait_for_notification(driver)
                while library_claim(connection, timeline):
                    pass
            connection.invalidate()  # still LISTENing: not back into the pool

    try:
        return measure(db, jobs, timeline, stop, listener)
    finally:
        engine.dispose()


def run_library_pooled_hop(db: Database, jobs: int) -> Timeline:
    timeline, stop = Timeline(), threading.Event()
    engine = db.engine()

    def claim() -> bool:
        with autocommit(engine).connect() as connection:
            return library_claim(connection, timeline)

    try:
        return measure(db, jobs, timeline, stop, with_hop(db, stop, claim))
    finally:
        engine.dispose()


def run_worker(db: Database, jobs: int) -> Timeline:
    """The Worker at its defaults, nothing listening on its engine: it claims directly."""
    return _worker_run(db, jobs, Timeline(), db.engine())


def run_worker_through_sqlalchemy(db: Database, jobs: int) -> Timeline:
    """The Worker claiming through SQLAlchemy (``direct_claim=False``), timed by engine
    events (whose listeners alone would keep it from claiming directly)."""
    timeline = Timeline()
    engine = db.engine()
    claim = statements_for("postgresql", _QUEUE.table).claim

    def is_claim(context: Any) -> bool:
        return getattr(context.compiled, "statement", None) is claim

    def sent(conn: Any, cursor: Any, statement: Any, params: Any, context: Any, many: Any) -> None:
        if is_claim(context):
            timeline.sent.append(time.perf_counter())

    def returned(
        conn: Any, cursor: Any, statement: Any, params: Any, context: Any, many: Any
    ) -> None:
        if is_claim(context):
            timeline.returned.append(time.perf_counter())

    event.listen(engine, "before_cursor_execute", sent)
    event.listen(engine, "after_cursor_execute", returned)
    return _worker_run(db, jobs, timeline, engine, direct_claim=False)


def _worker_run(
    db: Database, jobs: int, timeline: Timeline, engine: Engine, *, direct_claim: bool = True
) -> Timeline:
    def handler(ctx: JobContext) -> None:
        timeline.in_hand[ctx.job.id] = time.perf_counter()

    worker = Worker(_QUEUE, engine, TOPIC, handler, heartbeat=10.0, direct_claim=direct_claim)
    try:
        worker.start()
        wait_listening(worker)
        time.sleep(0.3)
        produce(db, jobs, timeline)
        time.sleep(0.3)
        worker.stop()
        if not worker.join(30):
            raise RuntimeError("the Worker did not stop")
        if worker.listener is not None:  # closed before its database is dropped
            worker.listener.stop(timeout=5)
    finally:
        engine.dispose()
    return timeline


VARIANTS: dict[str, Callable[[Database, int], Timeline]] = {
    "raw, listen + claim on one connection (the baseline)": run_raw_same_connection,
    "raw, claim on a 2nd connection after a thread hop": run_raw_hop,
    "library claim direct (psycopg), on the LISTEN connection": run_direct_on_listen_connection,
    "library claim direct (psycopg), 2nd connection after a thread hop": run_direct_hop,
    "library claim via SQLAlchemy, on the LISTEN connection": run_library_on_listen_connection,
    "library claim via SQLAlchemy, pooled, after a thread hop": run_library_pooled_hop,
    "Worker (to the handler)": run_worker,
    "Worker claiming through SQLAlchemy (direct_claim=False)": run_worker_through_sqlalchemy,
}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.pickup_breakdown", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--database-url", default=None, help=f"admin URL (default ${URL_ENV})")
    parser.add_argument("--jobs", type=int, default=200, help="jobs per run (default 200)")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds (default 3)")
    parser.add_argument("--only", nargs="+", help="variants whose names start with these")
    args = parser.parse_args(argv)
    if args.jobs < 1 or args.rounds < 1:
        parser.error("--jobs and --rounds must be at least 1")
    variants = {
        name: run
        for name, run in VARIANTS.items()
        if not args.only or any(name.startswith(prefix) for prefix in args.only)
    }
    if not variants:
        parser.error(f"no variant starts with {args.only}; the variants: {list(VARIANTS)}")
    admin_url = args.database_url or os.environ.get(URL_ENV, DEFAULT_ADMIN_URL)
    medians: dict[str, list[float]] = {name: [] for name in variants}
    sent: list[float] = []
    returned: list[float] = []
    for round_number in range(args.rounds):
        for name, run in variants.items():
            with fresh_database(admin_url, prefix="programma_bench") as url:
                migrations.upgrade(url)
                timeline = run(Database(url), args.jobs)
            medians[name].append(timeline.took_ms())
            if timeline.sent:
                sent.append(timeline.first_after_commit_ms(timeline.sent))
                returned.append(timeline.first_after_commit_ms(timeline.returned))
            print(f"[round {round_number + 1}] {name}: {medians[name][-1]:.2f} ms", flush=True)
    base = statistics.median(next(iter(medians.values())))
    print("\n| from the commit to the job in hand | median | ratio |\n|---|---:|---:|")
    for name, values in medians.items():
        value = statistics.median(values)
        print(f"| {name} | {value:.2f} ms | {value / base:.2f}x |")
    if sent:
        print(
            f"\nWorker timeline (median after the commit): claim statement handed to the "
            f"driver at {statistics.median(sent):.2f} ms, returned at "
            f"{statistics.median(returned):.2f} ms."
        )


if __name__ == "__main__":
    main()
