"""Retention: prune deletes exactly the expired finished jobs, in batches, beside claims.

Blocking is asserted with ``lock_timeout``: a statement that had to wait for a lock
would raise instead of returning, so no test measures time.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import uuid
from datetime import timedelta

import pytest
from sqlalchemy import Engine, create_engine, func, select, text
from sqlalchemy.ext.asyncio import AsyncSession, create_async_engine
from sqlalchemy.orm import DeclarativeBase, Session, sessionmaker

from programma_sa import (
    TTL,
    AsyncJobQueue,
    InvalidJobInput,
    JobMixin,
    JobQueue,
    JobSpec,
    JobState,
    Pruner,
    PruneResult,
    Retention,
    jobs_table,
)
from programma_sa.maintenance import prune, prune_async

from ..app import Job
from ..asyncio.urls import DRIVERS, async_url
from ..backends import LOCK_TIMEOUT_1S
from ..helpers import job_count
from .jobs import TABLE, db_now, finished, put, states

HOUR = timedelta(hours=1)
#: mail keeps completed jobs an hour and failed ones a day (the default); audit
#: keeps everything; short prunes completed jobs at once and failed ones after 60 s.
RETENTION = Retention(
    default=TTL(completed=HOUR, failed=timedelta(days=1)),
    topics={"audit": TTL(), "short": TTL(completed=0, failed=60)},
)


def _expired_and_kept(session: Session, queue: JobQueue) -> tuple[set[uuid.UUID], set[uuid.UUID]]:
    now = db_now(session)
    old = now - timedelta(days=365)
    expired = {
        *finished(session, queue, "mail", JobState.COMPLETED, 3, 2 * HOUR),
        *finished(session, queue, "mail", JobState.FAILED, 1, timedelta(days=2)),
        *finished(session, queue, "short", JobState.COMPLETED, 2, timedelta(seconds=1)),
    }
    kept = {
        *finished(session, queue, "mail", JobState.COMPLETED, 2, timedelta(minutes=10)),
        *finished(session, queue, "mail", JobState.FAILED, 1, 2 * HOUR),
        *finished(session, queue, "audit", JobState.COMPLETED, 2, timedelta(days=365)),
        *finished(session, queue, "audit", JobState.FAILED, 1, timedelta(days=365)),
        *finished(session, queue, "short", JobState.FAILED, 1, timedelta(seconds=30)),
        # Live jobs, as old as can be — even with a finished_at — are never pruned.
        put(session, queue, "mail", JobState.CREATED, start_after=old, finished_at=old),
        put(session, queue, "mail", JobState.ACTIVE, start_after=old, started_at=old),
        put(session, queue, "mail", JobState.ACTIVE, started_at=old, finished_at=old),
        put(session, queue, "mail", JobState.PROCESSING, started_at=old, finished_at=old),
        put(session, queue, "short", JobState.PROCESSING, started_at=old, finished_at=old),
    }
    return expired, kept


def test_prune_removes_exactly_the_expired_finished_jobs(queue: JobQueue, session: Session) -> None:
    expired, kept = _expired_and_kept(session, queue)
    before = states(session)
    assert prune(session, queue, RETENTION) == len(expired)
    assert states(session) == {job_id: before[job_id] for job_id in kept}
    assert prune(session, queue, RETENTION) == 0  # nothing left to do
    assert session.in_transaction()  # the caller's transaction, still open


def test_the_default_retention_prunes_nothing(queue: JobQueue, session: Session) -> None:
    _expired_and_kept(session, queue)
    count = job_count(session)
    assert prune(session, queue, Retention()) == 0
    assert job_count(session) == count


def test_prune_deletes_at_most_one_batch_per_call(queue: JobQueue, session: Session) -> None:
    finished(session, queue, "mail", JobState.COMPLETED, 12, 2 * HOUR)
    finished(session, queue, "short", JobState.COMPLETED, 13, HOUR)
    counts = [prune(session, queue, RETENTION, batch_size=10) for _ in range(4)]
    assert counts == [10, 10, 5, 0]
    assert job_count(session) == 0


def test_oldest_first_within_a_topic(queue: JobQueue, session: Session) -> None:
    newest = finished(session, queue, "mail", JobState.COMPLETED, 1, 2 * HOUR)
    oldest = finished(session, queue, "mail", JobState.COMPLETED, 1, 3 * HOUR)
    assert prune(session, queue, RETENTION, batch_size=1) == 1
    assert set(states(session)) == set(newest)
    assert oldest[0] not in states(session)


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        ({"batch_size": 0}, "batch_size must be at least 1, got 0"),
        ({"batch_size": "10"}, "batch_size must be an int, got '10'"),
        ({"batch_size": True}, "batch_size must be an int, got True"),
        ({"retention": TTL(completed=1)}, "retention must be a Retention, got TTL"),
    ],
)
def test_bad_arguments_are_refused_before_anything_is_deleted(
    queue: JobQueue, session: Session, arguments: dict[str, object], message: str
) -> None:
    finished(session, queue, "mail", JobState.COMPLETED, 2, 2 * HOUR)
    call: dict[str, object] = {"retention": RETENTION, **arguments}
    with pytest.raises(InvalidJobInput, match=message):
        prune(session, queue, **call)  # type: ignore[arg-type]
    assert job_count(session) == 2


def test_pruner_refuses_bad_settings(engine: Engine, queue: JobQueue) -> None:
    with pytest.raises(InvalidJobInput, match="max_batches must be None or an int >= 1, got 0"):
        Pruner(engine, queue, RETENTION, max_batches=0)
    with pytest.raises(InvalidJobInput, match="batch_size must be at least 1, got -5"):
        Pruner(engine, queue, RETENTION, batch_size=-5)
    with pytest.raises(InvalidJobInput, match="retention must be a Retention, got dict"):
        Pruner(engine, queue, {"mail": 60})  # type: ignore[arg-type]


# -- beside other transactions ---------------------------------------------------------


def _committed_expired(engine: Engine, queue: JobQueue, count: int) -> list[uuid.UUID]:
    with Session(engine) as session, session.begin():
        return finished(session, queue, "mail", JobState.COMPLETED, count, 2 * HOUR)


@pytest.mark.databases(
    "postgresql", "mariadb", reason="row locks (SQLite has one writer: docs/sqlite.md)"
)
def test_a_claim_during_a_prune_batch_is_not_blocked(engine: Engine, queue: JobQueue) -> None:
    _committed_expired(engine, queue, 50)
    with Session(engine) as session, session.begin():
        claimed_earlier = queue.add_job(session, "mail", "to complete")
    with Session(engine) as session, session.begin():
        assert [job.id for job in queue.claim_jobs(session, "mail")] == [claimed_earlier]
        due = queue.add_jobs(session, "mail", [JobSpec(data=n) for n in range(5)])
    factory = sessionmaker(engine)
    with factory() as pruning, pruning.begin():
        # The prune batch is deleted but not committed: its rows stay locked.
        assert prune(pruning, queue, RETENTION, batch_size=20) == 20
        with factory() as claiming, claiming.begin():
            claiming.execute(text(LOCK_TIMEOUT_1S))
            jobs = queue.claim_jobs(claiming, "mail", max_jobs=10)
            assert {job.id for job in jobs} == set(due)
            assert queue.move_job_to_done(claiming, claimed_earlier)
            queue.add_job(claiming, "mail", "enqueued during the prune")
    with Session(engine) as session:
        counts = session.execute(select(TABLE.c.state, func.count()).group_by(TABLE.c.state))
        # 50 - 20 pruned + the one completed during the prune; five claimed; one new.
        assert dict(counts.all()) == {"completed": 31, "active": 5, "created": 1}


@pytest.mark.databases(
    "postgresql", "mariadb", reason="row locks (SQLite has one writer: docs/sqlite.md)"
)
def test_a_prune_during_a_claim_is_not_blocked_and_leaves_claimed_jobs(
    engine: Engine, queue: JobQueue
) -> None:
    expired = _committed_expired(engine, queue, 5)
    with Session(engine) as session, session.begin():
        live = queue.add_job(session, "short", "claimed below")
    factory = sessionmaker(engine)
    with factory() as claiming, claiming.begin():
        assert [job.id for job in queue.claim_jobs(claiming, "short")] == [live]
        with factory() as pruning, pruning.begin():
            pruning.execute(text(LOCK_TIMEOUT_1S))
            assert prune(pruning, queue, RETENTION) == 5
    with Session(engine) as session:
        remaining = states(session)
    assert remaining == {live: "active"}
    assert not set(expired) & set(remaining)


@pytest.mark.databases(
    "postgresql", "mariadb", reason="row locks (SQLite has one writer: docs/sqlite.md)"
)
def test_rows_another_transaction_holds_locked_are_skipped_not_waited_for(
    engine: Engine, queue: JobQueue
) -> None:
    expired = _committed_expired(engine, queue, 5)
    factory = sessionmaker(engine)
    with factory() as holding, holding.begin():
        # E.g. an operator's transaction inspecting (or re-queueing) a finished job.
        holding.execute(select(TABLE.c.id).where(TABLE.c.id == expired[0]).with_for_update())
        with factory() as pruning, pruning.begin():
            pruning.execute(text(LOCK_TIMEOUT_1S))
            assert prune(pruning, queue, RETENTION) == 4
    with Session(engine) as session:
        assert set(states(session)) == {expired[0]}


# -- Pruner ---------------------------------------------------------------------------


def test_run_once_prunes_everything_in_batches(engine: Engine, queue: JobQueue) -> None:
    _committed_expired(engine, queue, 25)
    pruner = Pruner(engine, queue, RETENTION, batch_size=10)
    assert pruner.run_once() == PruneResult(deleted=25, batches=3, skipped_because_locked=False)
    assert pruner.run_once() == PruneResult(deleted=0, batches=1, skipped_because_locked=False)
    with Session(engine) as session:
        assert job_count(session) == 0


def test_max_batches_bounds_one_pass(engine: Engine, queue: JobQueue) -> None:
    _committed_expired(engine, queue, 25)
    pruner = Pruner(sessionmaker(engine), queue, RETENTION, batch_size=10, max_batches=2)
    assert pruner.run_once() == PruneResult(20, 2, False)
    assert pruner.run_once() == PruneResult(5, 1, False)


def test_a_retention_without_ttls_never_touches_the_database(queue: JobQueue) -> None:
    def no_sessions() -> Session:
        raise AssertionError("no session should be opened")

    assert Pruner(no_sessions, queue, Retention()).run_once() == PruneResult(0, 0, False)


@pytest.mark.postgresql_only("advisory locks")
def test_a_pruner_skips_while_another_holds_the_prune_lock(engine: Engine, queue: JobQueue) -> None:
    _committed_expired(engine, queue, 5)
    pruner = Pruner(engine, queue, RETENTION)
    with Session(engine) as other, other.begin():
        # What another pruner's batch holds while it deletes.
        other.execute(select(func.pg_advisory_xact_lock(pruner.lock_key)))
        assert pruner.run_once() == PruneResult(0, 0, skipped_because_locked=True)
        with Session(engine) as session:
            assert job_count(session) == 5
    assert pruner.run_once() == PruneResult(5, 1, False)


def test_pruners_of_one_table_share_the_lock_and_other_tables_do_not(queue: JobQueue) -> None:
    unbound = sessionmaker()
    key = Pruner(unbound, Job, RETENTION).lock_key
    assert Pruner(unbound, queue, RETENTION).lock_key == key
    assert Pruner(unbound, jobs_table(Job), RETENTION).lock_key == key
    assert Pruner(unbound, ElsewhereJob, RETENTION).lock_key != key


class _OtherBase(DeclarativeBase):
    pass


class ElsewhereJob(JobMixin, _OtherBase):
    """The same table name in another schema: another table, another lock."""

    programma_schema = "elsewhere"


def _prune_in_a_process(url: str, results: multiprocessing.Queue[PruneResult]) -> None:
    engine = create_engine(url)
    pruner = Pruner(engine, JobQueue(Job), RETENTION, batch_size=25, max_batches=None)
    total = PruneResult(0, 0, False)
    while True:
        result = pruner.run_once()
        total = PruneResult(
            total.deleted + result.deleted,
            total.batches + result.batches,
            total.skipped_because_locked or result.skipped_because_locked,
        )
        if not result.skipped_because_locked:
            break
    engine.dispose()
    results.put(total)


def test_two_processes_pruning_at_once_delete_everything_once(
    engine: Engine, queue: JobQueue, database_url: str
) -> None:
    _committed_expired(engine, queue, 1000)
    context = multiprocessing.get_context("spawn")
    results: multiprocessing.Queue[PruneResult] = context.Queue()
    processes = [
        context.Process(target=_prune_in_a_process, args=(database_url, results)) for _ in range(2)
    ]
    for process in processes:
        process.start()
    totals = [results.get(timeout=120) for _ in processes]
    for process in processes:
        process.join(timeout=30)
        assert process.exitcode == 0
    assert sum(total.deleted for total in totals) == 1000
    with Session(engine) as session:
        assert job_count(session) == 0


@pytest.mark.parametrize("driver", DRIVERS)
def test_prune_async(engine: Engine, queue: JobQueue, database_url: str, driver: str) -> None:
    _committed_expired(engine, queue, 7)

    async def run() -> list[int]:
        async_engine = create_async_engine(async_url(database_url, driver))
        try:
            async with AsyncSession(async_engine) as session, session.begin():
                return [
                    await prune_async(session, AsyncJobQueue(Job), RETENTION, batch_size=5)
                    for _ in range(3)
                ]
        finally:
            await async_engine.dispose()

    assert asyncio.run(run()) == [5, 2, 0]
    with Session(engine) as session:
        assert job_count(session) == 0


def test_cancelled_jobs_are_pruned_by_their_own_ttl(session: Session, queue: JobQueue) -> None:
    expired = set(finished(session, queue, "mail", JobState.CANCELLED, 2, 2 * HOUR))
    recent = set(finished(session, queue, "mail", JobState.CANCELLED, 1, timedelta(minutes=1)))
    audit = set(finished(session, queue, "audit", JobState.CANCELLED, 1, 2 * HOUR))
    completed = set(finished(session, queue, "mail", JobState.COMPLETED, 1, 2 * HOUR))
    # Without a TTL for them, cancelled jobs are kept.
    assert prune(session, queue, Retention(TTL(completed=HOUR * 3))) == 0
    retention = Retention(TTL(cancelled=HOUR), topics={"audit": TTL()})
    assert prune(session, queue, retention) == 2
    assert set(states(session)) == recent | audit | completed
    assert not expired & set(states(session))
