"""What planning costs a claim: the prepared claim's generic plan against planning it every call.

The claim's LIMITs are written into its text (``docs/priorities.md``), so once a
driver has prepared it PostgreSQL runs its generic plan and stops planning it on
every claim. This script measures what that saves, in one run on one table: single-
job claims (each in its own transaction, completed and committed off the clock)
through ``JobQueue.claim_jobs`` on psycopg 3 with the server's default
``plan_cache_mode`` (the generic plan, once chosen), the same with
``plan_cache_mode = force_custom_plan`` (planned every call, as every claim was while
its LIMIT was a parameter), and the raw psycopg claim of ``benchmarks.baseline``
(baseline; its LIMIT is a parameter). Rounds alternate the three, and which goes
first, so background noise falls on each alike::

    python -m benchmarks.claim_planning \\
        --database-url postgresql+psycopg://postgres@127.0.0.1:5432/postgres

``--database-url`` is an *admin* URL: a database is created beside it and dropped at
the end. Prints a markdown table: the median claim time of each, its ratio to the raw
claim, and how many of each's executions ran a generic plan.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from collections.abc import Callable

import psycopg
from sqlalchemy import Engine, create_engine, text
from sqlalchemy.orm import sessionmaker

from programma_sa import JobQueue, migrations
from programma_sa.testing import fresh_database

from . import baseline
from .app import Job
from .harness import TOPIC, Database

_WARMUP = 10  # claims before timing: psycopg prepares a statement on its 5th run
_GENERIC = (
    "SELECT sum(generic_plans) FROM pg_prepared_statements WHERE statement LIKE '%SKIP LOCKED%'"
)


def _library(engine: Engine) -> Callable[[], float]:
    queue = JobQueue(Job)
    sessions = sessionmaker(engine)

    def claim() -> float:
        with sessions.begin() as session:
            start = time.perf_counter()
            claimed = queue.claim_jobs(session, TOPIC, max_jobs=1)
            elapsed = time.perf_counter() - start
            queue.move_job_to_done(session, claimed[0].id)
        return elapsed

    return claim


def _raw(connection: psycopg.Connection[tuple[object, ...]]) -> Callable[[], float]:
    def claim() -> float:
        start = time.perf_counter()
        rows = connection.execute(baseline.RAW_CLAIM, (TOPIC, 1)).fetchall()
        elapsed = time.perf_counter() - start
        connection.execute(baseline.RAW_COMPLETE, ([rows[0][0]],))
        connection.commit()
        return elapsed

    return claim


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--database-url",
        default=os.environ.get(
            "PROGRAMMA_BENCH_DATABASE_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
        ),
    )
    parser.add_argument("--claims", type=int, default=500, help="timed claims per round each")
    parser.add_argument("--rounds", type=int, default=4)
    args = parser.parse_args(argv)
    if args.claims < 1 or args.rounds < 1:
        parser.error("--claims and --rounds must be at least 1")
    with fresh_database(args.database_url, prefix="programma_bench") as url:
        migrations.upgrade(url)
        database = Database(url)
        baseline.load_due_jobs(database.conninfo, TOPIC, 3 * args.rounds * (args.claims + _WARMUP))
        baseline.vacuum_analyze(database.conninfo)
        generic = create_engine(url, pool_size=1)
        custom = create_engine(
            url, pool_size=1, connect_args={"options": "-c plan_cache_mode=force_custom_plan"}
        )
        with psycopg.connect(database.conninfo) as raw:
            variants = {
                "raw psycopg claim, LIMIT a parameter (baseline)": _raw(raw),
                "claim_jobs, generic plan (planned once)": _library(generic),
                "claim_jobs, planned every call (force_custom_plan)": _library(custom),
            }
            names = list(variants)
            timings: dict[str, list[float]] = {name: [] for name in names}
            for round_ in range(args.rounds):
                for name in names[round_ % 3 :] + names[: round_ % 3]:
                    for n in range(-_WARMUP, args.claims):
                        elapsed = variants[name]()
                        if n >= 0:
                            timings[name].append(elapsed)
            generic_runs = {names[0]: raw.execute(_GENERIC).fetchone()}
        for name, engine in zip(names[1:], (generic, custom), strict=True):
            with engine.connect() as connection:
                generic_runs[name] = connection.execute(text(_GENERIC)).one()
            engine.dispose()
    reference = statistics.median(timings[names[0]])
    print("| claim of one job | median | ratio to raw | runs of a generic plan |")
    print("|---|---:|---:|---:|")
    for name in names:
        median = statistics.median(timings[name])
        runs = generic_runs[name]
        print(
            f"| {name} | {median * 1000:.3f} ms | {median / reference:.2f}x "
            f"| {(runs[0] if runs else None) or 0} |"
        )


if __name__ == "__main__":
    main()
