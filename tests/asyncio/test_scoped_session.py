"""AsyncJobQueue through an ``async_scoped_session`` (``scopefunc=asyncio.current_task``).

A scoped session proxies ``execute``, ``flush`` and ``autoflush`` to the current
task's ``AsyncSession``, so the queue runs in that session's transaction exactly as
with a plain ``AsyncSession``: the caller commits or rolls back, the library never
does. Every test runs once per async driver (psycopg, asyncpg).

The file is also the typed usage of ``AsyncSessionLike``: every ``AsyncJobQueue``
method (and ``stats_async``/``prune_async``) is called here with an
``async_scoped_session[AsyncSession]``, and
:func:`test_this_file_passes_mypy_strict` type-checks the file with ``mypy --strict``.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio
from sqlalchemy import event, func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_scoped_session, async_sessionmaker
from sqlalchemy.orm import Session, SessionTransaction

from programma_sa import TTL, AsyncJobQueue, InvalidJobInput, JobState, Retention
from programma_sa.maintenance import prune_async, stats_async

from ..app import Job, Order
from ..helpers import job_count

pytestmark = pytest.mark.asyncio(loop_scope="session")

ROOT = Path(__file__).resolve().parents[2]

Scoped = async_scoped_session[AsyncSession]


class TransactionEnds:
    """Counts the commits and rollbacks of the current task's session of ``scoped``."""

    def __init__(self, scoped: Scoped) -> None:
        self.commits = 0
        self.rollbacks = 0
        sync_session = scoped().sync_session
        event.listen(sync_session, "after_commit", self._committed)
        event.listen(sync_session, "after_soft_rollback", self._rolled_back)

    def _committed(self, session: Session) -> None:
        self.commits += 1

    def _rolled_back(self, session: Session, previous: SessionTransaction) -> None:
        self.rollbacks += 1


@pytest_asyncio.fixture(loop_scope="session")
async def scoped(async_sessions: async_sessionmaker[AsyncSession]) -> AsyncIterator[Scoped]:
    """A task-scoped registry; each test removes its own task's session itself.

    (The fixture's teardown runs in another task than the test, so ``remove()`` here
    would only reach that task's scope: it closes what is left of every scope instead.)
    """
    registry = async_scoped_session(async_sessions, scopefunc=asyncio.current_task)
    yield registry
    # Any session a failed test left open: close it so its connection goes back.
    for session in list(registry.registry.registry.values()):
        await session.close()


async def committed_state(
    sessions: async_sessionmaker[AsyncSession], job_id: uuid.UUID
) -> JobState | None:
    """The job's state as another transaction sees it (``None``: no such row)."""
    async with sessions() as other:
        job = await AsyncJobQueue(Job).get_job(other, job_id)
    return None if job is None else job.state


async def test_enqueue_claim_complete_in_the_scoped_sessions_transaction(
    aqueue: AsyncJobQueue,
    scoped: Scoped,
    async_sessions: async_sessionmaker[AsyncSession],
) -> None:
    ends = TransactionEnds(scoped)
    try:
        job_id = await aqueue.add_job(scoped, "scoped", {"order": 1})
        # In the scoped session's open transaction, not committed by the queue.
        assert scoped().in_transaction()
        assert await committed_state(async_sessions, job_id) is None
        assert (ends.commits, ends.rollbacks) == (0, 0)
        await scoped.commit()  # the caller's commit
        assert await committed_state(async_sessions, job_id) is JobState.CREATED

        [claimed] = await aqueue.claim_jobs(scoped, "scoped")
        assert claimed.id == job_id and claimed.state is JobState.ACTIVE
        assert await aqueue.move_job_to_done(scoped, job_id)
        done = await aqueue.get_job(scoped, job_id)
        assert done is not None and done.state is JobState.COMPLETED
        # Still the caller's transaction: others see the job as it was committed.
        assert await committed_state(async_sessions, job_id) is JobState.CREATED
        assert ends.commits == 1  # only the caller's
        await scoped.commit()
        assert await committed_state(async_sessions, job_id) is JobState.COMPLETED
        assert (ends.commits, ends.rollbacks) == (2, 0)
    finally:
        await scoped.remove()


async def test_enqueue_rolled_back_with_the_business_row(
    aqueue: AsyncJobQueue,
    scoped: Scoped,
    async_sessions: async_sessionmaker[AsyncSession],
) -> None:
    ends = TransactionEnds(scoped)
    try:
        scoped.add(Order(id=11, note="rolled back"))  # pending: flushed by the queue
        job_id = await aqueue.add_job(scoped, "receipts", {"order": 11})
        orders = await scoped.scalar(select(func.count()).select_from(Order))
        assert orders == 1 and await scoped().run_sync(job_count) == 1
        assert ends.commits == 0
        await scoped.rollback()  # the request failed
    finally:
        await scoped.remove()
    assert ends.commits == 0
    async with async_sessions() as other:
        assert await other.get(Order, 11) is None
        assert await other.run_sync(job_count) == 0
    assert await committed_state(async_sessions, job_id) is None


async def test_every_method_runs_on_a_scoped_session_and_never_ends_its_transaction(
    aqueue: AsyncJobQueue,
    scoped: Scoped,
    async_sessions: async_sessionmaker[AsyncSession],
) -> None:
    ends = TransactionEnds(scoped)
    try:
        first = await aqueue.add_job(scoped, "every", {"n": 1})
        second, third = await aqueue.add_jobs(scoped, "every", [{"data": 2}, {"data": 3}])
        assert await aqueue.set_attributes(scoped, first, {"k": "v"})
        assert await aqueue.set_retry_after_seconds(scoped, first, 120)
        assert await aqueue.set_job_start_date(scoped, third, "2000-01-01T00:00:00Z")
        claimed = await aqueue.claim_jobs(scoped, "every", max_jobs=3)
        assert [job.id for job in claimed] == [third, first, second]
        assert await aqueue.move_job_to_processing(scoped, first)
        assert await aqueue.move_job_to_failed(scoped, second)
        assert await aqueue.move_job_to_done(scoped, third)
        detail = await aqueue.get_job(scoped, first)
        assert detail is not None and detail.state is JobState.PROCESSING
        assert (detail.attributes, detail.retry_after_seconds) == ({"k": "v"}, 120)
        snapshot = (await aqueue.stats(scoped, "every")).topic("every")
        assert (snapshot.processing, snapshot.failed, snapshot.completed) == (1, 1, 1)
        same = (await stats_async(scoped, aqueue, "every")).topic("every")
        assert same.counts == snapshot.counts
        assert await aqueue.delete_job(scoped, first)
        assert await aqueue.get_job(scoped, first) is None
        assert scoped().in_transaction() and (ends.commits, ends.rollbacks) == (0, 0)
        await scoped.commit()  # the finished jobs must be committed before a prune

        prune_all = Retention(default=TTL(completed=0, failed=0))
        assert await aqueue.prune(scoped, prune_all, batch_size=1) == 1
        assert await prune_async(scoped, aqueue, prune_all) == 1
        assert await committed_state(async_sessions, second) is JobState.FAILED
        assert ends.commits == 1  # the deletions wait for the caller's commit
        await scoped.commit()
        assert await committed_state(async_sessions, second) is None
        assert await committed_state(async_sessions, third) is None
        assert (ends.commits, ends.rollbacks) == (2, 0)
    finally:
        await scoped.remove()


async def test_bad_input_raises_before_the_scoped_session_is_touched(
    aqueue: AsyncJobQueue, scoped: Scoped
) -> None:
    try:
        with pytest.raises(InvalidJobInput, match="topic"):
            await aqueue.add_job(scoped, "", {"n": 1})
        with pytest.raises(InvalidJobInput, match="max_jobs"):
            await aqueue.claim_jobs(scoped, "t", max_jobs=0)
        # Validation comes first: the session did not even begin a transaction.
        assert not scoped().in_transaction()
    finally:
        await scoped.remove()


@pytest.mark.databases(
    "postgresql", "mariadb", reason="two claiming transactions open at once (SQLite has one writer)"
)
async def test_each_task_claims_through_its_own_scoped_session(
    aqueue: AsyncJobQueue,
    scoped: Scoped,
    async_sessions: async_sessionmaker[AsyncSession],
) -> None:
    async with async_sessions.begin() as session:
        ids = set(await aqueue.add_jobs(session, "tasks", [{"data": n} for n in range(2)]))
    claims: list[uuid.UUID] = []
    both_claimed = asyncio.Event()

    async def claim_one() -> tuple[AsyncSession, uuid.UUID]:
        # current_task scoping: this task's own session, connection and transaction.
        try:
            [job] = await aqueue.claim_jobs(scoped, "tasks")
            claims.append(job.id)
            if len(claims) == 2:
                both_claimed.set()
            # Both claims are open at once, so SKIP LOCKED hands each task another job.
            await both_claimed.wait()
            await scoped.commit()
            return scoped(), job.id
        finally:
            await scoped.remove()

    (one, first), (two, second) = await asyncio.gather(claim_one(), claim_one())
    assert one is not two
    assert {first, second} == ids


async def test_this_file_passes_mypy_strict(tmp_path: Path) -> None:
    """The scoped session type-checks wherever the queue takes a session.

    (With ``AsyncSession`` alone in the signatures, every queue call above is an
    ``arg-type`` error.) A cache of its own: other mypy runs may share the project's.
    """
    pytest.importorskip("mypy")
    command = [sys.executable, "-m", "mypy", "--strict", "--cache-dir", str(tmp_path), __file__]
    result = await asyncio.to_thread(
        subprocess.run, command, cwd=ROOT, capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr
