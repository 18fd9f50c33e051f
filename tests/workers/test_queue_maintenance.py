"""``queue.stats(session, …)`` and ``queue.prune(session, …)`` on JobQueue and AsyncJobQueue.

Thin delegates to :mod:`programma_sa.maintenance`: the same numbers and the same
deletions as the functions, in the caller's transaction, with the same errors. Runs
on each flavour's queue and session (``harness.queue``, ``harness.transaction()``).
"""

from __future__ import annotations

import uuid
from datetime import timedelta

import pytest
from sqlalchemy.orm import Session

from programma_sa import TTL, InvalidJobInput, JobQueue, JobState, Retention

from ..app import Job
from ..maintenance.jobs import finished, states
from .harness import Harness, awaited

pytestmark = pytest.mark.asyncio

RETENTION = Retention(default=TTL(completed=timedelta(hours=1)))


def _mail(session: Session) -> tuple[list[uuid.UUID], list[uuid.UUID]]:
    """Three expired COMPLETED mail jobs, one recent one, one CREATED: (expired, kept)."""
    queue = JobQueue(Job)
    expired = finished(session, queue, "mail", JobState.COMPLETED, 3, timedelta(hours=2))
    kept = finished(session, queue, "mail", JobState.COMPLETED, 1, timedelta(seconds=1))
    kept.append(queue.add_job(session, "mail", {}))
    return expired, kept


async def test_job_queue_stats_and_prune(harness: Harness) -> None:
    """The queue's stats and prune count and delete in the caller's open transaction."""
    queue = harness.queue
    async with harness.transaction() as session:
        _, kept = await harness.run_sync(session, _mail)

        snapshot = await awaited(queue.stats(session, "mail", window_seconds=120))
        assert snapshot.window_seconds == 120.0
        mail = snapshot.topic("mail")
        assert (mail.created, mail.completed, mail.completed_recently) == (1, 4, 1)
        assert [topic.topic for topic in (await awaited(queue.stats(session))).topics] == ["mail"]

        assert await awaited(queue.prune(session, RETENTION, batch_size=2)) == 2
        assert await awaited(queue.prune(session, RETENTION)) == 1
        assert set(await harness.run_sync(session, states)) == set(kept)
        assert session.in_transaction()  # the caller's transaction, still open
        with pytest.raises(InvalidJobInput, match="batch_size must be at least 1, got 0"):
            await awaited(queue.prune(session, RETENTION, batch_size=0))
        with pytest.raises(InvalidJobInput, match="batch_size must be an int, got '2'"):
            await awaited(queue.prune(session, RETENTION, batch_size="2"))  # type: ignore[arg-type]
        with pytest.raises(InvalidJobInput, match="window_seconds must not be negative"):
            await awaited(queue.stats(session, window_seconds=-1))
