"""``queue.stats(session, …)`` and ``queue.prune(session, …)`` on JobQueue and AsyncJobQueue.

Thin delegates to :mod:`programma_sa.maintenance`: the same numbers and the same
deletions as the functions, in the caller's transaction, with the same errors.
"""

from __future__ import annotations

import uuid
from datetime import timedelta

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession
from sqlalchemy.orm import Session

from programma_sa import TTL, AsyncJobQueue, InvalidJobInput, JobQueue, JobState, Retention

from ..maintenance.jobs import finished, states

RETENTION = Retention(default=TTL(completed=timedelta(hours=1)))


def _mail(session: Session, queue: JobQueue) -> tuple[list[uuid.UUID], list[uuid.UUID]]:
    """Three expired COMPLETED mail jobs, one recent one, one CREATED: (expired, kept)."""
    expired = finished(session, queue, "mail", JobState.COMPLETED, 3, timedelta(hours=2))
    kept = finished(session, queue, "mail", JobState.COMPLETED, 1, timedelta(seconds=1))
    kept.append(queue.add_job(session, "mail", {}))
    return expired, kept


def test_job_queue_stats_and_prune(queue: JobQueue, session: Session) -> None:
    _, kept = _mail(session, queue)

    snapshot = queue.stats(session, "mail", window_seconds=120)
    assert snapshot.window_seconds == 120.0
    mail = snapshot.topic("mail")
    assert (mail.created, mail.completed, mail.completed_recently) == (1, 4, 1)
    assert [topic.topic for topic in queue.stats(session).topics] == ["mail"]

    assert queue.prune(session, RETENTION, batch_size=2) == 2
    assert queue.prune(session, RETENTION) == 1
    assert set(states(session)) == set(kept)
    assert session.in_transaction()  # the caller's transaction, still open
    with pytest.raises(InvalidJobInput, match="batch_size must be at least 1, got 0"):
        queue.prune(session, RETENTION, batch_size=0)
    with pytest.raises(InvalidJobInput, match="window_seconds must not be negative"):
        queue.stats(session, window_seconds=-1)


@pytest.mark.asyncio
async def test_async_job_queue_stats_and_prune(
    queue: JobQueue, aqueue: AsyncJobQueue, async_engine: AsyncEngine
) -> None:
    async with AsyncSession(async_engine) as session:
        await session.begin()
        _, kept = await session.run_sync(_mail, queue)
        mail = (await aqueue.stats(session, "mail", window_seconds=60)).topic("mail")
        assert (mail.created, mail.completed, mail.completed_recently) == (1, 4, 1)
        assert await aqueue.prune(session, RETENTION, batch_size=2) == 2
        assert await aqueue.prune(session, RETENTION) == 1
        assert set(await session.run_sync(states)) == set(kept)
        assert session.in_transaction()
        with pytest.raises(InvalidJobInput, match="batch_size must be an int, got '2'"):
            await aqueue.prune(session, RETENTION, batch_size="2")  # type: ignore[arg-type]
        await session.rollback()
