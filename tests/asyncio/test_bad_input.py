"""AsyncJobQueue refuses exactly what JobQueue refuses, with the same errors and messages.

The cases are the sync suite's own tables (``tests/integration/test_bad_input.py``),
so a case added there is checked here too. Each test writes a business row first,
makes the bad call, then checks the caller's transaction is still usable and holds
the business row and no job. Also: a missing jobs table is reported as
:class:`SchemaNotReady` by both async drivers.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import pytest
import pytest_asyncio
from sqlalchemy import exc as sa_exc
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from sqlalchemy.orm import DeclarativeBase

from programma_sa import AsyncJobQueue, InvalidJobInput, JobMixin, JobSpec, PayloadTooLarge
from programma_sa.exceptions import SchemaNotReady

from ..app import Job, Order
from ..helpers import job_count
from ..integration.test_bad_input import (
    BAD_ADD_JOB,
    BAD_JOB_IDS,
    BAD_MAX_JOBS,
    BAD_SETTER_CALLS,
    BAD_SPECS,
    JOB_ID_CALLS,
)

pytestmark = pytest.mark.asyncio(loop_scope="session")


@pytest_asyncio.fixture(loop_scope="session")
async def session_with_order(async_session: AsyncSession) -> AsyncSession:
    async_session.add(Order(id=99, note="business write before the bad call"))
    await async_session.flush()
    return async_session


async def _assert_untouched(session: AsyncSession) -> None:
    assert await session.run_sync(job_count) == 0
    assert await session.get(Order, 99) is not None
    await session.flush()  # the transaction is still usable


@pytest.mark.parametrize(("override", "message"), BAD_ADD_JOB)
async def test_add_job_refuses(
    aqueue: AsyncJobQueue,
    session_with_order: AsyncSession,
    override: dict[str, Any],
    message: str,
) -> None:
    arguments: dict[str, Any] = {"topic": "t", "data": {"ok": True}, **override}
    topic, data = arguments.pop("topic"), arguments.pop("data")
    with pytest.raises(InvalidJobInput, match="^" + re.escape(message)):
        await aqueue.add_job(session_with_order, topic, data, **arguments)
    await _assert_untouched(session_with_order)


async def test_add_jobs_refuses_the_whole_batch_for_one_bad_spec(
    aqueue: AsyncJobQueue, session_with_order: AsyncSession
) -> None:
    specs = [JobSpec(data=1), JobSpec(data=2, run_after_seconds=-1), JobSpec(data=3)]
    with pytest.raises(
        InvalidJobInput, match=r"^job spec #1: run_after_seconds must not be negative"
    ):
        await aqueue.add_jobs(session_with_order, "t", specs)
    await _assert_untouched(session_with_order)


@pytest.mark.parametrize(("spec", "message"), BAD_SPECS)
async def test_add_jobs_refuses_malformed_specs(
    aqueue: AsyncJobQueue, session_with_order: AsyncSession, spec: object, message: str
) -> None:
    with pytest.raises(InvalidJobInput, match=message):
        await aqueue.add_jobs(session_with_order, "t", [spec])  # type: ignore[list-item]
    await _assert_untouched(session_with_order)


async def test_payload_over_the_limit_is_refused(session_with_order: AsyncSession) -> None:
    small = AsyncJobQueue(Job, max_payload_bytes=100)
    with pytest.raises(
        PayloadTooLarge, match=r"^data is 1\d\d bytes as JSON; the limit is 100 bytes"
    ):
        await small.add_job(session_with_order, "t", "x" * 120)
    with pytest.raises(PayloadTooLarge, match=r"^attributes is"):
        await small.add_job(session_with_order, "t", {}, attributes={"k": "y" * 200})
    await _assert_untouched(session_with_order)


@pytest.mark.parametrize(("job_id", "message"), BAD_JOB_IDS)
@pytest.mark.parametrize("call", JOB_ID_CALLS)
async def test_malformed_job_id_is_refused(
    aqueue: AsyncJobQueue,
    session_with_order: AsyncSession,
    call: str,
    job_id: object,
    message: str,
) -> None:
    with pytest.raises(InvalidJobInput, match="^" + re.escape(message)):
        await getattr(aqueue, call)(session_with_order, job_id)
    await _assert_untouched(session_with_order)


@pytest.mark.parametrize(("call", "message"), BAD_SETTER_CALLS)
async def test_setters_refuse_bad_values(
    aqueue: AsyncJobQueue,
    async_session: AsyncSession,
    call: Callable[[Any, Any, Any], Any],
    message: str,
) -> None:
    job_id = await aqueue.add_job(async_session, "t", {"v": 1})
    before = await aqueue.get_job(async_session, job_id)
    with pytest.raises(InvalidJobInput, match=message):
        await call(aqueue, async_session, job_id)
    assert await aqueue.get_job(async_session, job_id) == before


@pytest.mark.parametrize(("max_jobs", "message"), BAD_MAX_JOBS)
async def test_claim_refuses_bad_max_jobs(
    aqueue: AsyncJobQueue, async_session: AsyncSession, max_jobs: object, message: str
) -> None:
    job_id = await aqueue.add_job(async_session, "t", {})
    with pytest.raises(InvalidJobInput, match=message):
        await aqueue.claim_jobs(async_session, "t", max_jobs=max_jobs)  # type: ignore[arg-type]
    job = await aqueue.get_job(async_session, job_id)
    assert job is not None and job.attempts == 0


class _OtherBase(DeclarativeBase):
    pass


class _NeverMigrated(JobMixin, _OtherBase):
    __tablename__ = "never_migrated_jobs"


async def test_missing_table_is_schema_not_ready_on_every_driver(
    async_sessions: async_sessionmaker[AsyncSession],
) -> None:
    queue = AsyncJobQueue(_NeverMigrated)
    async with async_sessions() as session:
        with pytest.raises(SchemaNotReady, match="run the programma migrations") as raised:
            await queue.claim_jobs(session, "t")
        assert isinstance(raised.value.__cause__, sa_exc.DBAPIError)
        await session.rollback()
