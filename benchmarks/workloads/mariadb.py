"""The drain on MariaDB: the core API and the Worker against a hand-written PyMySQL
claim loop, in the same run.

Each drains the same jobs (as many as SQLite's drain) from a fresh MariaDB database
migrated by the shipped chain, one process, batch 100, lease-style, READ COMMITTED
(docs/mariadb.md). The raw loop claims with ``SELECT … ORDER BY priority DESC,
start_after, id LIMIT 100 FOR UPDATE SKIP LOCKED`` on the claim index then ``UPDATE
… WHERE id IN (…)``, commits, and completes the batch with one ``UPDATE … WHERE id
IN (…)``; it leaves out what the library's claim adds (the picked rows re-read by key,
the claimed rows read back). The core API and the Worker drain as on SQLite
(:func:`.sqlite.core_drain`, :func:`.sqlite.worker_drain`).

The server: ``$PROGRAMMA_BENCH_MARIADB_URL``, else the test suite's account on the
local socket (``.ci/run`` creates it), which may create the ``programma_test*``
databases each run uses and drops.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy.engine import make_url

from programma_sa.testing import fresh_database

from ..harness import TOPIC, RunContext
from .sqlite import BATCH, check_completed, drain_rows, migrate_and_load

MARIADB_URL_ENV = "PROGRAMMA_BENCH_MARIADB_URL"
_DEFAULT_URL = (
    "mysql+pymysql://programma:programma@localhost/programma_test"
    "?unix_socket=/run/mysqld/mysqld.sock"
)
_NOW = "UTC_TIMESTAMP(6)"
#: The raw loop's pick: the claim index (claim_topic holds the topic of claimable
#: jobs only), the topic not paused, rows other claims hold skipped.
RAW_PICK = f"""
SELECT id FROM programma_jobs
WHERE claim_topic = %s AND state IN ('created', 'active') AND start_after <= {_NOW}
  AND NOT EXISTS (SELECT 1 FROM programma_jobs_paused WHERE topic = %s)
ORDER BY priority DESC, start_after, id LIMIT %s
FOR UPDATE SKIP LOCKED
"""
RAW_TAKE = f"""
UPDATE programma_jobs
SET state = 'active', attempts = attempts + 1, started_at = {_NOW},
    start_after = TIMESTAMPADD(MICROSECOND, ROUND(retry_after_seconds * 1000000), {_NOW})
WHERE id IN ({{ids}})
"""
RAW_COMPLETE = (
    f"UPDATE programma_jobs SET state = 'completed', finished_at = {_NOW} WHERE id IN ({{ids}})"
)


@contextmanager
def _database(jobs: int) -> Iterator[str]:
    """A fresh migrated MariaDB database with ``jobs`` due jobs (loaded off the clock)."""
    with fresh_database(os.environ.get(MARIADB_URL_ENV, _DEFAULT_URL)) as url:
        migrate_and_load(url, jobs)
        yield url


def raw(ctx: RunContext) -> dict[str, float]:
    import pymysql  # the mariadb extra's (the workloads require it)

    jobs = ctx.sizes.drain
    with _database(jobs) as url:
        parsed = make_url(url)
        connection = pymysql.connect(
            user=parsed.username,
            password=parsed.password or "",
            host=parsed.host or "localhost",
            database=parsed.database,
            unix_socket=str(parsed.query.get("unix_socket", "")) or None,
            autocommit=False,
        )
        try:
            with connection.cursor() as cursor:
                cursor.execute("SET SESSION TRANSACTION ISOLATION LEVEL READ COMMITTED")
                done = 0
                start = time.perf_counter()
                while True:
                    cursor.execute(RAW_PICK, (TOPIC, TOPIC, BATCH))
                    ids = [row[0] for row in cursor.fetchall()]
                    if not ids:
                        connection.commit()
                        break
                    marks = ",".join(["%s"] * len(ids))
                    cursor.execute(RAW_TAKE.format(ids=marks), ids)
                    connection.commit()
                    cursor.execute(RAW_COMPLETE.format(ids=marks), ids)
                    connection.commit()
                    done += len(ids)
                seconds = time.perf_counter() - start
        finally:
            connection.close()
        check_completed(url, jobs)
        return {"jobs_per_s": done / seconds}


WORKLOADS = drain_rows(
    "mariadb",
    "MariaDB",
    raw,
    "raw PyMySQL, SKIP LOCKED, batch 100 (baseline)",
    _database,
    requires=("pymysql",),
)
