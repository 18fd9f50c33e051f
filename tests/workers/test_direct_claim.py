"""The sync Worker's direct claim (``direct_claim``, docs/worker.md).

When the engine has no listener of the per-statement events, the idle loop hands its
one-topic lease claim to psycopg itself on a connection it keeps: these tests show
it is used then, read the same jobs, is not used while a ``before_cursor_execute``
listener exists (which then sees every claim) or when turned off, recovers from its
connection's death without losing or repeating a job, and gives the connection
back when the worker stops.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import Engine, create_engine, event, make_url, text

from programma_sa import JobContext, JobQueue, JobState, Worker

from .private import DirectClaimSpy, claim_statement, kept_claim_backend
from .support import all_completed, blocking_wait_for, enqueue, get_job

pytestmark = pytest.mark.postgresql_only("the direct claim runs on PostgreSQL with psycopg 3")

TOPIC = "direct"


@pytest.fixture
def worker_engine(database_url: str) -> Iterator[Engine]:
    """The worker's own engine, with nothing listening on it."""
    if make_url(database_url).get_driver_name() != "psycopg":
        pytest.skip("the direct claim runs on psycopg 3 only")
    engine = create_engine(database_url)
    yield engine
    engine.dispose()


class Recorder:
    """A handler that records each job it runs (and the job as the database has it)."""

    def __init__(self, engine: Engine, queue: JobQueue) -> None:
        self._engine = engine
        self._queue = queue
        self._lock = threading.Lock()
        self.runs: list[Any] = []
        self.mismatches: list[tuple[Any, Any]] = []

    def __call__(self, ctx: JobContext) -> None:
        stored = get_job(self._engine, self._queue, ctx.job.id)
        with self._lock:
            self.runs.append(ctx.job.id)
            if stored != ctx.job:
                self.mismatches.append((ctx.job, stored))


def started(worker: Worker) -> Worker:
    worker.start()
    blocking_wait_for(lambda: worker.listener is not None and worker.listener.wait_listening(0))
    return worker


def stopped(worker: Worker) -> None:
    worker.stop()
    assert worker.join(10)


def picked_up_one_by_one(engine: Engine, queue: JobQueue, count: int, **options: Any) -> list[Any]:
    """Enqueue ``count`` jobs, each once the one before it completed; their ids."""
    ids: list[Any] = []
    for _ in range(count):
        ids += enqueue(engine, queue, TOPIC, **options)
        blocking_wait_for(lambda: all_completed(engine, queue, ids))  # noqa: B023 (used at once)
    return ids


def test_an_idle_worker_claims_directly_and_reads_the_same_jobs(
    worker_engine: Engine, engine: Engine, queue: JobQueue, monkeypatch: pytest.MonkeyPatch
) -> None:
    spy = DirectClaimSpy(monkeypatch)
    handler = Recorder(engine, queue)
    worker = started(Worker(queue, worker_engine, TOPIC, handler, heartbeat=5.0))
    try:
        # Every column a claim returns, set: attributes, a unique key and its states.
        ids = picked_up_one_by_one(
            engine, queue, 3, attributes={"a": [1, "x"]}, priority=3, unique_key=None
        )
        ids += picked_up_one_by_one(engine, queue, 1, unique_key="k", unique_states=["created"])
    finally:
        stopped(worker)
    assert sorted(handler.runs) == sorted(ids)
    assert handler.mismatches == []
    assert sorted(spy.claimed) == sorted(ids)
    assert spy.calls >= len(ids)


def test_a_cursor_listener_sees_every_claim_and_keeps_the_claims_in_sqlalchemy(
    worker_engine: Engine, engine: Engine, queue: JobQueue, monkeypatch: pytest.MonkeyPatch
) -> None:
    spy = DirectClaimSpy(monkeypatch)
    handler = Recorder(engine, queue)
    claim = claim_statement(queue.table)
    seen: list[str] = []

    def before_cursor_execute(
        conn: Any, cursor: Any, statement: str, params: Any, context: Any, many: bool
    ) -> None:
        if getattr(context.compiled, "statement", None) is claim:
            seen.append(statement)

    worker = started(Worker(queue, worker_engine, TOPIC, handler, heartbeat=5.0))
    try:
        direct_ids = picked_up_one_by_one(engine, queue, 2)
        assert sorted(spy.claimed) == sorted(direct_ids)
        assert kept_claim_backend(worker) is not None
        # Added while the worker runs: from its next claim on, through SQLAlchemy.
        event.listen(worker_engine, "before_cursor_execute", before_cursor_execute)
        traced_ids = picked_up_one_by_one(engine, queue, 2)
        claims_seen = len(seen)
        assert kept_claim_backend(worker) is None  # given back to the pool
    finally:
        stopped(worker)
    assert sorted(handler.runs) == sorted(direct_ids + traced_ids)
    assert sorted(spy.claimed) == sorted(direct_ids)  # none of the traced ones
    assert claims_seen >= len(traced_ids)


def test_direct_claim_false_claims_through_sqlalchemy(
    worker_engine: Engine, engine: Engine, queue: JobQueue, monkeypatch: pytest.MonkeyPatch
) -> None:
    spy = DirectClaimSpy(monkeypatch)
    handler = Recorder(engine, queue)
    worker = Worker(queue, worker_engine, TOPIC, handler, heartbeat=5.0, direct_claim=False)
    started(worker)
    try:
        ids = picked_up_one_by_one(engine, queue, 2)
        assert worker.direct_claims is None
    finally:
        stopped(worker)
    assert sorted(handler.runs) == sorted(ids)
    assert spy.calls == 0


def test_the_kept_connections_death_loses_no_job_and_runs_none_twice(
    worker_engine: Engine,
    engine: Engine,
    queue: JobQueue,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    spy = DirectClaimSpy(monkeypatch)
    handler = Recorder(engine, queue)
    worker = started(Worker(queue, worker_engine, TOPIC, handler, heartbeat=5.0))
    try:
        before = picked_up_one_by_one(engine, queue, 1)
        killed = kept_claim_backend(worker)
        assert killed is not None
        with engine.connect() as connection:
            assert connection.scalar(text("SELECT pg_terminate_backend(:pid)"), {"pid": killed})
        with caplog.at_level(logging.WARNING, logger="programma_sa.worker"):
            # Several at once, then one by one: each claim after the death succeeds.
            after = enqueue(engine, queue, TOPIC, n=5)
            blocking_wait_for(lambda: all_completed(engine, queue, after))
            after += picked_up_one_by_one(engine, queue, 2)
        assert kept_claim_backend(worker) not in (None, killed)
    finally:
        stopped(worker)
    ids = before + after
    assert sorted(handler.runs) == sorted(ids)  # each job ran exactly once
    for job_id in ids:
        job = get_job(engine, queue, job_id)
        assert (job.state, job.attempts) == (JobState.COMPLETED, 1)
    assert sorted(spy.claimed) == sorted(ids)
    # The claim on the dead connection was made again on a fresh one at once:
    # nothing for the loop to back off from.
    assert [record.getMessage() for record in caplog.records] == []


def test_the_kept_connection_goes_back_to_the_pool_when_the_worker_stops(
    worker_engine: Engine, engine: Engine, queue: JobQueue
) -> None:
    worker = started(Worker(queue, worker_engine, TOPIC, Recorder(engine, queue)))
    try:
        picked_up_one_by_one(engine, queue, 1)
        assert kept_claim_backend(worker) is not None
    finally:
        stopped(worker)
    assert worker.direct_claims is None
    assert worker_engine.pool.checkedout() == 0  # type: ignore[attr-defined]
