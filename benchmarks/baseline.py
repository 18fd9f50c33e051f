"""The raw-SQL baseline: hand-written statements on the same jobs table, plain psycopg.

Every hand-written statement of the benchmarks lives here. They act on the table
the shipped migration creates (``programma_jobs``: same columns, same partial claim
index), so the difference between a library figure and its baseline is the
library's own cost — SQLAlchemy, validation, the statements it chooses — and not a
different schema.

The baseline is what a careful developer writes by hand:

* enqueue: ``INSERT … VALUES`` with the defaults doing the rest, one transaction
  per job; bulk: one ``INSERT … SELECT FROM unnest(%s::text[])`` (and, as a
  reference, one ``INSERT … SELECT FROM jsonb_array_elements(%s::jsonb)`` of the
  payloads joined into one JSON array: what the library sends);
* drain: ``UPDATE … WHERE id IN (SELECT … FOR UPDATE SKIP LOCKED LIMIT n)
  RETURNING id, data`` then one completion ``UPDATE … WHERE id = ANY(%s)`` per
  batch, each its own transaction (autocommit: the lease way — the claim commits
  before the work), batch 1 and batch 100;
* pickup latency: an idle connection blocked in ``LISTEN``; each job is inserted
  with ``pg_notify`` in the same statement (one transaction); the listener claims on
  wake-up.

psycopg prepares a statement after it has run five times on a connection
(``prepare_threshold``), so the loops run prepared statements, as a tuned hand-written
loop would.
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from typing import Any

import psycopg

from programma_sa.models import DEFAULT_TABLE_NAME

__all__ = [
    "RAW_CLAIM",
    "RAW_COMPLETE",
    "RAW_INSERT_JOB",
    "RAW_INSERT_ORDER",
    "SESSION_INSERT_JOB",
    "SESSION_INSERT_UNIQUE_JOB",
    "bulk_insert_jsonb",
    "bulk_insert_unnest",
    "bulk_insert_unnest_unique",
    "drain",
    "enqueue_loop",
    "insert_unnest",
    "load_due_jobs",
    "load_finished_jobs",
    "payload",
    "pickup_latencies",
    "vacuum_analyze",
]

_TABLE = DEFAULT_TABLE_NAME
CHANNEL = "bench_jobs"

#: The hand-written job INSERT for the ORM-session baseline (SQLAlchemy ``text()``
#: parameters): only what a job needs, the column defaults do the rest.
SESSION_INSERT_JOB = f"INSERT INTO {_TABLE} (topic, data) VALUES (:topic, CAST(:data AS jsonb))"

RAW_INSERT_JOB = f"INSERT INTO {_TABLE} (topic, data) VALUES (%s, %s::jsonb)"
RAW_INSERT_ORDER = "INSERT INTO bench_orders (id, note) VALUES (%s, %s)"

_INSERT_UNNEST = (
    f"INSERT INTO {_TABLE} (topic, data) SELECT %s, d::jsonb FROM unnest(%s::text[]) AS d"
)

# With a priority and a unique key per job, held while the job is unfinished: the
# uniqueness the library's ``unique_key`` gives, written by hand. A held key is left to
# its holder (ON CONFLICT … DO NOTHING, the arbiter being the partial unique index).
_HELD_WHILE_UNFINISHED = "'{created,active,processing}'::text[]"
_ON_KEY_CONFLICT_KEEP = "ON CONFLICT (unique_key) WHERE state = ANY (unique_states) DO NOTHING"
SESSION_INSERT_UNIQUE_JOB = (
    f"INSERT INTO {_TABLE} (topic, data, priority, unique_key, unique_states) "
    f"VALUES (:topic, CAST(:data AS jsonb), :priority, :unique_key, {_HELD_WHILE_UNFINISHED}) "
    f"{_ON_KEY_CONFLICT_KEEP}"
)
_INSERT_UNNEST_UNIQUE = (
    f"INSERT INTO {_TABLE} (topic, data, priority, unique_key, unique_states) "
    f"SELECT %s, d::jsonb, p, k, {_HELD_WHILE_UNFINISHED} "
    f"FROM unnest(%s::text[], %s::int[], %s::text[]) AS u(d, p, k) {_ON_KEY_CONFLICT_KEEP}"
)

_INSERT_JSONB = (
    f"INSERT INTO {_TABLE} (topic, data) SELECT %s, d FROM jsonb_array_elements(%s::jsonb) AS d"
)

# The same claim the library makes (higher priority first, then FIFO by start_after;
# lease = now + the job's visibility timeout, attempts counted), returning only what a
# handler needs. Written the way a careful developer would, in the order the claim
# index (topic, priority DESC, start_after, id) serves.
RAW_CLAIM = f"""
UPDATE {_TABLE} SET
    state = 'active',
    started_at = statement_timestamp(),
    attempts = attempts + 1,
    start_after = statement_timestamp() + retry_after_seconds * INTERVAL '1 second'
WHERE id IN (
    SELECT id FROM {_TABLE}
    WHERE topic = %s AND state IN ('created', 'active') AND start_after <= statement_timestamp()
    ORDER BY priority DESC, start_after, id
    LIMIT %s
    FOR UPDATE SKIP LOCKED
)
RETURNING id, data
"""

RAW_COMPLETE = (
    f"UPDATE {_TABLE} SET state = 'completed', finished_at = statement_timestamp() "
    "WHERE id = ANY(%s)"
)

_INSERT_AND_NOTIFY = f"""
WITH job AS (INSERT INTO {_TABLE} (topic, data) VALUES (%s, %s::jsonb) RETURNING id, topic)
SELECT id, pg_notify('{CHANNEL}', topic) FROM job
"""

# Due jobs for the drain and scale workloads, in one statement (untimed setup):
# distinct start_after values one microsecond apart, all in the past, their
# priorities spread evenly over the given number of levels (0 …).
_LOAD_DUE = f"""
INSERT INTO {_TABLE} (topic, data, start_after, priority)
SELECT %s, jsonb_build_object('n', g), now() - INTERVAL '1 hour' + g * INTERVAL '1 microsecond',
       g %% %s
FROM generate_series(1, %s) AS g
"""

# Finished rows for the scale workload: COMPLETED a day ago, with synthetic,
# increasing ids (like the library's time-ordered ids, all older than any real one).
_LOAD_FINISHED = f"""
INSERT INTO {_TABLE}
    (id, topic, data, state, start_after, started_at, created_at, finished_at, attempts)
SELECT
    ('00000000-0000-7000-8000-' || lpad(to_hex(g), 12, '0'))::uuid,
    %s, jsonb_build_object('n', g), 'completed', NULL,
    now() - INTERVAL '1 day', now() - INTERVAL '1 day',
    now() - INTERVAL '1 day' + g * INTERVAL '1 millisecond', 1
FROM generate_series(1, %s) AS g
"""


def payload(n: int) -> dict[str, Any]:
    """The job data every enqueue workload uses (a small, realistic object)."""
    return {"order_id": n, "action": "send-receipt"}


def enqueue_loop(conninfo: str, topic: str, jobs: int) -> float:
    """Seconds to insert ``jobs`` jobs, one autocommitted INSERT (transaction) each."""
    with psycopg.connect(conninfo, autocommit=True) as conn:
        start = time.perf_counter()
        for n in range(jobs):
            conn.execute(RAW_INSERT_JOB, (topic, json.dumps(payload(n))))
        return time.perf_counter() - start


def insert_unnest(conn: psycopg.Connection[Any], topic: str, jobs: int) -> None:
    """Serialise ``jobs`` payloads and insert them in one statement (not committed)."""
    conn.execute(_INSERT_UNNEST, (topic, [json.dumps(payload(n)) for n in range(jobs)]))


def bulk_insert_unnest(conninfo: str, topic: str, jobs: int) -> float:
    """Seconds to serialise and insert ``jobs`` jobs in one statement, and commit."""
    with psycopg.connect(conninfo) as conn:
        start = time.perf_counter()
        insert_unnest(conn, topic, jobs)
        conn.commit()
        return time.perf_counter() - start


def bulk_insert_unnest_unique(conninfo: str, topic: str, jobs: int, levels: int) -> float:
    """:func:`bulk_insert_unnest` with a priority (``levels`` of them) and a new unique
    key per job, a held key left to its holder."""
    with psycopg.connect(conninfo) as conn:
        start = time.perf_counter()
        conn.execute(
            _INSERT_UNNEST_UNIQUE,
            (
                topic,
                [json.dumps(payload(n)) for n in range(jobs)],
                [n % levels for n in range(jobs)],
                [f"k-{n}" for n in range(jobs)],
            ),
        )
        conn.commit()
        return time.perf_counter() - start


def bulk_insert_jsonb(conninfo: str, topic: str, jobs: int) -> float:
    """Seconds to serialise ``jobs`` payloads, join them into one JSON array and
    insert them with one statement, and commit (psycopg sends the array as one text,
    where a ``text[]`` has every element escaped in Python)."""
    with psycopg.connect(conninfo) as conn:
        start = time.perf_counter()
        document = "[" + ",".join([json.dumps(payload(n)) for n in range(jobs)]) + "]"
        conn.execute(_INSERT_JSONB, (topic, document))
        conn.commit()
        return time.perf_counter() - start


def load_due_jobs(conninfo: str, topic: str, jobs: int, levels: int = 1) -> None:
    """``jobs`` due jobs of ``topic``, over ``levels`` priorities (1: all priority 0)."""
    with psycopg.connect(conninfo) as conn:
        conn.execute(_LOAD_DUE, (topic, levels, jobs))


def load_finished_jobs(conninfo: str, topic: str, rows: int) -> None:
    with psycopg.connect(conninfo) as conn:
        conn.execute(_LOAD_FINISHED, (topic, rows))


def vacuum_analyze(conninfo: str) -> None:
    """Bring the table to the steady state autovacuum would: visibility map, statistics."""
    with psycopg.connect(conninfo, autocommit=True) as conn:
        conn.execute(f"VACUUM ANALYZE {_TABLE}")


def drain(conninfo: str, topic: str, batch: int) -> tuple[int, float]:
    """Claim and complete every due job; return (jobs, seconds)."""
    done = 0
    with psycopg.connect(conninfo, autocommit=True) as conn:
        start = time.perf_counter()
        while True:
            rows = conn.execute(RAW_CLAIM, (topic, batch)).fetchall()
            if not rows:
                break
            for _job_id, _data in rows:  # the no-op handler
                pass
            conn.execute(RAW_COMPLETE, ([row[0] for row in rows],))
            done += len(rows)
        return done, time.perf_counter() - start


def pickup_latencies(conninfo: str, topic: str, jobs: int, interval: float) -> list[float]:
    """Milliseconds from each job's commit to the idle listener's claim returning it.

    The listener blocks in ``LISTEN``; on each wake-up it claims until the topic is
    empty (and completes what it claimed, off the clock). The producer inserts one
    job every ``interval`` seconds with ``pg_notify`` in the same statement and
    notes when its commit returned. Both clocks are ``time.perf_counter`` in one
    process.
    """
    committed: dict[uuid.UUID, float] = {}
    claimed: dict[uuid.UUID, float] = {}
    listening = threading.Event()
    failure: list[BaseException] = []

    def listen() -> None:
        try:
            with psycopg.connect(conninfo, autocommit=True) as conn:
                conn.execute(f"LISTEN {CHANNEL}")
                listening.set()
                deadline = time.monotonic() + jobs * interval + 30
                while len(claimed) < jobs and time.monotonic() < deadline:
                    for _notify in conn.notifies(timeout=1.0, stop_after=1):
                        pass
                    while rows := conn.execute(RAW_CLAIM, (topic, 100)).fetchall():
                        now = time.perf_counter()
                        for job_id, _data in rows:
                            claimed[job_id] = now
                        conn.execute(RAW_COMPLETE, ([row[0] for row in rows],))
        except BaseException as error:  # reported by the producer thread
            failure.append(error)
            listening.set()

    listener = threading.Thread(target=listen, name="baseline-listener", daemon=True)
    listener.start()
    listening.wait()
    with psycopg.connect(conninfo, autocommit=True) as conn:
        for n in range(jobs):
            row = conn.execute(_INSERT_AND_NOTIFY, (topic, json.dumps(payload(n)))).fetchone()
            committed[row[0]] = time.perf_counter()  # type: ignore[index]
            time.sleep(interval)
    listener.join(timeout=jobs * interval + 60)
    if failure:
        raise failure[0]
    missing = set(committed) - set(claimed)
    if missing:
        raise RuntimeError(f"the baseline listener never claimed {len(missing)} jobs")
    return [(claimed[job_id] - committed[job_id]) * 1000 for job_id in committed]
