"""Steering one job through AsyncJobQueue: moves, deletes, attributes, timeouts, start dates.

Mirrors ``tests/integration/test_lifecycle.py``, once per async driver.
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest
from sqlalchemy.ext.asyncio import AsyncSession

from programma_sa import AsyncJobQueue, JobState

from ..helpers import job_count

pytestmark = pytest.mark.asyncio(loop_scope="session")

SteeringCall = Callable[[AsyncJobQueue, AsyncSession, Any], Awaitable[bool]]


@pytest.mark.parametrize(
    ("move", "state"),
    [
        ("move_job_to_processing", JobState.PROCESSING),
        ("move_job_to_done", JobState.COMPLETED),
        ("move_job_to_failed", JobState.FAILED),
    ],
)
async def test_moves_set_the_state(
    aqueue: AsyncJobQueue, async_session: AsyncSession, move: str, state: JobState
) -> None:
    job_id = await aqueue.add_job(async_session, "t", {})
    assert await getattr(aqueue, move)(async_session, job_id) is True
    job = await aqueue.get_job(async_session, job_id)
    assert job is not None and job.state is state
    assert (job.finished_at is not None) is (state is not JobState.PROCESSING)


@pytest.mark.parametrize("move", ["move_job_to_done", "move_job_to_failed"])
async def test_finishing_with_delete_removes_the_row(
    aqueue: AsyncJobQueue, async_session: AsyncSession, move: str
) -> None:
    job_id = await aqueue.add_job(async_session, "t", {})
    assert await getattr(aqueue, move)(async_session, job_id, delete=True) is True
    assert await aqueue.get_job(async_session, job_id) is None
    assert await async_session.run_sync(job_count) == 0


async def test_delete_job(aqueue: AsyncJobQueue, async_session: AsyncSession) -> None:
    job_id = await aqueue.add_job(async_session, "t", {})
    assert await aqueue.delete_job(async_session, str(job_id)) is True
    assert await aqueue.delete_job(async_session, job_id) is False


UNKNOWN_ID_CALLS: list[SteeringCall] = [
    lambda q, s, i: q.move_job_to_processing(s, i),
    lambda q, s, i: q.move_job_to_done(s, i),
    lambda q, s, i: q.move_job_to_failed(s, i, delete=True),
    lambda q, s, i: q.delete_job(s, i),
    lambda q, s, i: q.set_attributes(s, i, {"a": 1}),
    lambda q, s, i: q.set_retry_after_seconds(s, i, 5),
    lambda q, s, i: q.set_job_start_date(s, i, datetime.now(timezone.utc)),
]


@pytest.mark.parametrize("call", UNKNOWN_ID_CALLS)
async def test_unknown_id_changes_nothing_and_returns_false(
    aqueue: AsyncJobQueue, async_session: AsyncSession, call: SteeringCall
) -> None:
    job_id = await aqueue.add_job(async_session, "t", {})
    before = await aqueue.get_job(async_session, job_id)
    assert await call(aqueue, async_session, uuid.uuid4()) is False
    assert await aqueue.get_job(async_session, job_id) == before
    assert await async_session.run_sync(job_count) == 1


async def test_set_attributes_merges_top_level_keys(
    aqueue: AsyncJobQueue, async_session: AsyncSession
) -> None:
    job_id = await aqueue.add_job(async_session, "t", {}, attributes={"attempts": 1, "keep": "me"})
    assert await aqueue.set_attributes(async_session, job_id, {"attempts": 2, "error": "boom"})
    job = await aqueue.get_job(async_session, job_id)
    assert job is not None
    assert job.attributes == {"attempts": 2, "keep": "me", "error": "boom"}


async def test_set_retry_after_seconds_re_measures_an_active_lease(
    aqueue: AsyncJobQueue, async_session: AsyncSession
) -> None:
    job_id = await aqueue.add_job(async_session, "t", {}, retry_after_seconds=30)
    [claimed] = await aqueue.claim_jobs(async_session, "t")
    assert await aqueue.set_retry_after_seconds(async_session, job_id, 300)
    job = await aqueue.get_job(async_session, job_id)
    assert job is not None and job.started_at is not None and job.start_after is not None
    assert job.start_after - job.started_at == timedelta(seconds=300)
    # Shortened to zero, the lease has run out: the job is claimable again.
    assert await aqueue.set_retry_after_seconds(async_session, job_id, 0)
    [again] = await aqueue.claim_jobs(async_session, "t")
    assert again.id == claimed.id and again.attempts == 2


async def test_set_job_start_date_delays_and_releases(
    aqueue: AsyncJobQueue, async_session: AsyncSession
) -> None:
    job_id = await aqueue.add_job(async_session, "t", {})
    later = datetime.now(timezone.utc) + timedelta(hours=1)
    assert await aqueue.set_job_start_date(async_session, job_id, later)
    assert await aqueue.claim_jobs(async_session, "t") == []
    assert await aqueue.set_job_start_date(async_session, job_id, "2001-01-01T00:00:00+00:00")
    assert [job.id for job in await aqueue.claim_jobs(async_session, "t")] == [job_id]


async def test_get_job_returns_every_column(
    aqueue: AsyncJobQueue, async_session: AsyncSession
) -> None:
    job_id = await aqueue.add_job(
        async_session, "detail", [1, "two"], attributes={"k": "v"}, retry_after_seconds=7
    )
    job = await aqueue.get_job(async_session, job_id)
    assert job is not None
    assert (job.id, job.topic, job.data, job.attributes) == (
        job_id,
        "detail",
        [1, "two"],
        {"k": "v"},
    )
    assert job.state is JobState.CREATED
    assert job.retry_after_seconds == 7 and job.attempts == 0
    assert job.created_at is not None and job.start_after is not None
    assert job.started_at is None and job.finished_at is None
