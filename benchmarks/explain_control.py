"""The plans of the control statements (issue #15) with a million finished rows.

One fresh database, built by the shipped migrations, filled once: 1,000,000 finished
jobs of topic ``bulk`` (97% COMPLETED, 2% FAILED, 1% CANCELLED), a live backlog of
``bulk`` (1,000 CREATED, 100 ACTIVE, 10 PROCESSING), and 200 finished jobs of a rare
topic ``rare`` created before them — then VACUUM ANALYZE. Each statement is run under
``EXPLAIN (ANALYZE, BUFFERS)`` (writes inside a transaction that is rolled back), and
one line per statement says which indexes it read, whether it scanned the table
sequentially, the buffers it touched and its time::

    python -m benchmarks.explain_control \\
        --database-url postgresql+psycopg://postgres@127.0.0.1:5432/postgres

``--database-url`` is an *admin* URL: the database is created beside it and dropped
at the end. ``--rows`` changes the number of finished rows.
"""

from __future__ import annotations

import argparse
import os
import uuid
from collections.abc import Iterator
from typing import Any

from sqlalchemy import Connection, Engine, Executable, create_engine, text

from programma_sa import jobs_table, migrations
from programma_sa._drivers import statements_for
from programma_sa._drivers.base import JobsShape
from programma_sa.testing import fresh_database

from .app import Job

TABLE = jobs_table(Job)
STATEMENTS = statements_for("postgresql", TABLE)


def _fill(connection: Connection, rows: int) -> None:
    connection.execute(
        text(
            """
            INSERT INTO programma_jobs (topic, data, state, start_after, started_at,
                                        finished_at, attempts, attributes, created_at)
            SELECT 'rare', '{}', 'failed', NULL, now() - interval '3 days',
                   now() - interval '3 days', 5,
                   '{"last_error": {"type": "app.Timeout"}}', now() - interval '3 days'
            FROM generate_series(1, 200)
            """
        )
    )
    connection.execute(
        text(
            """
            INSERT INTO programma_jobs (topic, data, state, start_after, started_at,
                                        finished_at, attempts, attributes)
            SELECT 'bulk', jsonb_build_object('n', n),
                   CASE WHEN n % 100 = 0 THEN 'cancelled'
                        WHEN n % 50 = 0 THEN 'failed' ELSE 'completed' END,
                   NULL, now() - interval '2 days', now() - n * interval '100 ms', 1,
                   CASE WHEN n % 50 = 0 THEN '{"last_error": {"type": "app.Boom"}}'::jsonb
                        ELSE '{}'::jsonb END
            FROM generate_series(1, :rows) AS n
            """
        ),
        {"rows": rows},
    )
    connection.execute(
        text(
            """
            INSERT INTO programma_jobs (topic, data, state, start_after, started_at)
            SELECT 'bulk', '{}', state, now() - interval '1 minute', now()
            FROM (SELECT 'created' FROM generate_series(1, 1000)
                  UNION ALL SELECT 'active' FROM generate_series(1, 100)
                  UNION ALL SELECT 'processing' FROM generate_series(1, 10)) AS live(state)
            """
        )
    )


def _nodes(plan: dict[str, Any]) -> Iterator[dict[str, Any]]:
    yield plan
    for child in plan.get("Plans", []):
        yield from _nodes(child)


def _explain(engine: Engine, statement: Executable, params: dict[str, Any]) -> str:
    # EXPLAIN ANALYZE runs the statement: a write is rolled back with its transaction.
    with engine.connect() as connection:
        compiled = statement.compile(dialect=connection.dialect)  # type: ignore[attr-defined]
        result = connection.exec_driver_sql(
            f"EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) {compiled}", {**compiled.params, **params}
        )
        document = result.scalar_one()[0]
        connection.rollback()
    nodes = list(_nodes(document["Plan"]))
    indexes = sorted({node["Index Name"] for node in nodes if "Index Name" in node})
    seq = any(
        node["Node Type"] == "Seq Scan" and node.get("Relation Name") == TABLE.name
        for node in nodes
    )
    top = document["Plan"]
    buffers = top.get("Shared Hit Blocks", 0) + top.get("Shared Read Blocks", 0)
    return (
        f"{', '.join(name.replace('programma_jobs', '') for name in indexes) or '-'} | "
        f"{'**yes**' if seq else 'no'} | {buffers} | {top['Actual Rows']} | "
        f"{document['Execution Time']:.2f}"
    )


def _cases(newest: uuid.UUID) -> list[tuple[str, Executable, dict[str, Any]]]:
    page = {"p_limit": 101}
    bulk = {**page, "p_topic": "bulk"}
    rare = {**page, "p_topic": "rare"}
    return [
        ("claim 10 (bulk)", STATEMENTS.claim, {"p_topic": "bulk", "p_max_jobs": 10}),
        ("list: every topic", STATEMENTS.list_jobs(JobsShape()), page),
        (
            "list: every topic, page 2",
            STATEMENTS.list_jobs(JobsShape(cursor=True)),
            {**page, "p_cursor": newest},
        ),
        ("list: topic bulk, any state", STATEMENTS.list_jobs(JobsShape(topic=True)), bulk),
        ("list: topic rare, any state", STATEMENTS.list_jobs(JobsShape(topic=True)), rare),
        (
            "list: bulk, completed",
            STATEMENTS.list_jobs(JobsShape(states=("completed",), topic=True)),
            bulk,
        ),
        (
            "list: bulk, failed",
            STATEMENTS.list_jobs(JobsShape(states=("failed",), topic=True)),
            bulk,
        ),
        (
            "list: bulk, created",
            STATEMENTS.list_jobs(JobsShape(states=("created",), topic=True)),
            bulk,
        ),
        (
            "list: bulk, failed, error type",
            STATEMENTS.list_jobs(JobsShape(states=("failed",), topic=True, error_type=True)),
            {**bulk, "p_error_type": "app.Boom"},
        ),
        ("list: failed, every topic", STATEMENTS.list_jobs(JobsShape(states=("failed",))), page),
        (
            "re-run 1000 failed of bulk",
            STATEMENTS.rerun_jobs(JobsShape(states=("failed",), topic=True)),
            {"p_limit": 1000, "p_topic": "bulk"},
        ),
        (
            "re-run failed+cancelled of rare, by type",
            STATEMENTS.rerun_jobs(
                JobsShape(states=("failed", "cancelled"), topic=True, error_type=True)
            ),
            {"p_limit": 1000, "p_topic": "rare", "p_error_type": "app.Timeout"},
        ),
        ("cancel one job", STATEMENTS.cancel_job, {"p_job_id": newest}),
        ("re-run one job", STATEMENTS.rerun_job, {"p_job_id": newest}),
        ("pause a topic", STATEMENTS.pause_topic, {"p_topic": "bulk"}),
        ("stats, every topic", STATEMENTS.stats_all, {"p_window_seconds": 300.0}),
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--database-url",
        default=os.environ.get("PROGRAMMA_TEST_DATABASE_URL"),
        help="admin URL of the PostgreSQL server (default: $PROGRAMMA_TEST_DATABASE_URL)",
    )
    parser.add_argument("--rows", type=int, default=1_000_000, help="finished rows of bulk")
    args = parser.parse_args()
    if not args.database_url:
        parser.error("--database-url is required (or set PROGRAMMA_TEST_DATABASE_URL)")
    if args.rows < 1:
        parser.error("--rows must be at least 1")
    with fresh_database(args.database_url, prefix="programma_bench_explain") as url:
        migrations.upgrade(url)
        engine = create_engine(url)
        try:
            with engine.begin() as connection:
                _fill(connection, args.rows)
            with engine.connect() as connection:
                autocommit = connection.execution_options(isolation_level="AUTOCOMMIT")
                autocommit.execute(text("VACUUM ANALYZE programma_jobs"))
                version = connection.execute(text("SHOW server_version")).scalar_one()
                newest = connection.execute(
                    text("SELECT id FROM programma_jobs ORDER BY id DESC LIMIT 1")
                ).scalar_one()
                print(
                    f"PostgreSQL {version}; {args.rows:,} finished rows of topic bulk, "
                    "1,110 live ones, 200 finished of topic rare; after VACUUM ANALYZE.\n"
                )
            print("| statement | indexes read | seq scan | buffers | rows | ms |")
            print("|---|---|---|---:|---:|---:|")
            for name, statement, params in _cases(newest):
                print(f"| {name} | {_explain(engine, statement, params)} |")
        finally:
            engine.dispose()


if __name__ == "__main__":
    main()
