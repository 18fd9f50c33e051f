"""Claim cost with 0 vs 200,000 COMPLETED rows in the table, as a ratio in one run.

The claim's partial index (``ix_<table>_claim``) holds only CREATED and ACTIVE
rows, so a claim should cost the same however many finished rows the table keeps.
This script measures it: one fresh database per table size (each built by the
shipped migrations, then filled with that many COMPLETED rows and VACUUM ANALYZEd,
the state autovacuum keeps a table in), the same pending jobs in each, and then
rounds that alternate between the databases (and which goes first) — so background
noise falls on every size alike — each timing one claim + complete, one transaction, per job::

    python benchmarks/scale_finished_rows.py \\
        --database-url postgresql+psycopg://postgres@127.0.0.1:5432/postgres

``--database-url`` is an *admin* URL: the databases are created beside it and
dropped at the end. Prints a markdown table: median and p95 latency per size and
the median's ratio to the empty table's.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass

from sqlalchemy import Engine, create_engine, text
from sqlalchemy.orm import DeclarativeBase, Session, sessionmaker

from programma_sa import JobMixin, JobQueue, JobSpec, migrations
from programma_sa.testing import fresh_database

TOPIC = "bench"


class _Base(DeclarativeBase):
    pass


class _Job(JobMixin, _Base):
    pass


@dataclass
class _Size:
    finished_rows: int
    engine: Engine
    sessions: sessionmaker[Session]
    latencies: list[float]


def _fill(engine: Engine, finished_rows: int, pending: int) -> None:
    """``finished_rows`` COMPLETED jobs (about 150 bytes of data each) and ``pending``
    due ones, then VACUUM ANALYZE."""
    with engine.begin() as connection:
        connection.execute(
            text(
                """
                INSERT INTO programma_jobs (topic, data, state, start_after, started_at,
                                            finished_at, attempts)
                SELECT :topic, jsonb_build_object('order', n, 'note', repeat('x', 120)),
                       'completed', NULL, now() - interval '1 day',
                       now() - n * interval '100 milliseconds', 1
                FROM generate_series(1, :rows) AS n
                """
            ),
            {"topic": TOPIC, "rows": finished_rows},
        )
    with Session(engine) as session, session.begin():
        JobQueue(_Job).add_jobs(
            session, TOPIC, [JobSpec(data={"order": n, "note": "x" * 120}) for n in range(pending)]
        )
    with engine.connect() as connection:
        connection.execution_options(isolation_level="AUTOCOMMIT").execute(
            text("VACUUM ANALYZE programma_jobs")
        )


def _claim_and_complete(queue: JobQueue, sessions: sessionmaker[Session]) -> float:
    started = time.perf_counter()
    with sessions.begin() as session:
        jobs = queue.claim_jobs(session, TOPIC)
        if len(jobs) != 1:
            raise RuntimeError("the benchmark ran out of pending jobs")
        queue.move_job_to_done(session, jobs[0].id)
    return time.perf_counter() - started


@contextmanager
def _sizes(admin_url: str, sizes: list[int], pending: int) -> Iterator[list[_Size]]:
    with ExitStack() as stack:
        prepared = []
        for finished_rows in sizes:
            url = stack.enter_context(fresh_database(admin_url, prefix="programma_bench_scale"))
            migrations.upgrade(url)
            engine = create_engine(url, pool_size=1, max_overflow=0)
            stack.callback(engine.dispose)
            _fill(engine, finished_rows, pending)
            prepared.append(_Size(finished_rows, engine, sessionmaker(engine), []))
        yield prepared


def _percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--database-url",
        default=os.environ.get("PROGRAMMA_TEST_DATABASE_URL"),
        help="admin URL of the PostgreSQL server (default: $PROGRAMMA_TEST_DATABASE_URL)",
    )
    parser.add_argument(
        "--sizes",
        default="0,200000",
        help="comma-separated numbers of COMPLETED rows; the first is the reference",
    )
    parser.add_argument("--claims", type=int, default=1000, help="timed claims per size")
    parser.add_argument("--round", type=int, default=50, help="claims per size per round")
    parser.add_argument("--warmup", type=int, default=50, help="untimed claims per size")
    args = parser.parse_args()
    if not args.database_url:
        parser.error("--database-url is required (or set PROGRAMMA_TEST_DATABASE_URL)")
    sizes = [int(size) for size in args.sizes.split(",")]
    queue = JobQueue(_Job)
    with _sizes(args.database_url, sizes, args.warmup + args.claims) as prepared:
        for size in prepared:
            for _ in range(args.warmup):
                _claim_and_complete(queue, size.sessions)
        done = rounds = 0
        while done < args.claims:
            batch = min(args.round, args.claims - done)
            # Alternate sizes, and which goes first, so noise falls on every size alike.
            order = prepared if rounds % 2 == 0 else prepared[::-1]
            for size in order:
                size.latencies.extend(
                    _claim_and_complete(queue, size.sessions) for _ in range(batch)
                )
            done += batch
            rounds += 1
        with prepared[0].engine.connect() as connection:
            version = connection.execute(text("SHOW server_version")).scalar_one()
    reference = statistics.median(prepared[0].latencies)
    print(
        f"PostgreSQL {version}; {args.claims} claims per size (claim 1 + complete, one "
        f"transaction each) after {args.warmup} warm-up claims, in rounds of {args.round}.\n"
    )
    print("| COMPLETED rows | median ms | p95 ms | median / empty |")
    print("|---:|---:|---:|---:|")
    for size in prepared:
        median = statistics.median(size.latencies)
        print(
            f"| {size.finished_rows:,} | {median * 1000:.3f} "
            f"| {_percentile(size.latencies, 0.95) * 1000:.3f} | {median / reference:.2f} |"
        )


if __name__ == "__main__":
    main()
