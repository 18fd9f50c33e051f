"""A worker serving a registry: dispatch by topic, mapped instances reloaded, outcomes."""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import AsyncIterator
from typing import Any

import pytest
import pytest_asyncio
from sqlalchemy import Engine
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
from sqlalchemy.orm import Session

from programma_sa import (
    AsyncWorker,
    ConfigurationError,
    JobQueue,
    JobState,
    RetryPolicy,
    TaskRegistry,
    Worker,
)

from ..app import Order
from ..asyncio.urls import async_url
from ..backends import ASYNC_DRIVERS
from ..workers.support import get_job

MODES = ("lease", "transaction")


@pytest_asyncio.fixture
async def async_engine(database_url: str, engine: Engine) -> AsyncIterator[AsyncEngine]:
    """A psycopg async engine; ``engine`` (sync) truncates the tables after the test."""
    async_engine = create_async_engine(async_url(database_url, ASYNC_DRIVERS[0]), pool_size=5)
    yield async_engine
    await async_engine.dispose()


def _order(engine: Engine, order_id: int, note: str = "") -> None:
    with Session(engine) as session, session.begin():
        session.add(Order(id=order_id, note=note))


def _note(engine: Engine, order_id: int) -> str:
    with Session(engine) as session:
        order = session.get(Order, order_id)
        assert order is not None
        return order.note


@pytest.mark.parametrize("mode", MODES)
def test_a_mapped_instance_is_reloaded_and_its_change_commits(
    engine: Engine, registry: TaskRegistry, queue: JobQueue, mode: str
) -> None:
    sessions: list[Session | None] = []

    @registry.task(topic="ship")
    def ship(order: Order, note: str) -> None:
        sessions.append(Session.object_session(order))
        order.note = note

    _order(engine, 1)
    with Session(engine) as session, session.begin():
        job_id = ship.enqueue(session, session.get(Order, 1), "shipped")

    worker = Worker(registry, engine, mode=mode, listen=False)  # type: ignore[arg-type]
    assert worker.run_once().completed == 1

    assert _note(engine, 1) == "shipped"
    assert get_job(engine, queue, job_id).state is JobState.COMPLETED
    assert sessions[0] is not None  # loaded in a session: the claim's, or the task's own


@pytest.mark.parametrize("mode", MODES)
def test_a_failing_task_s_change_to_its_instance_rolls_back(
    engine: Engine, registry: TaskRegistry, queue: JobQueue, mode: str
) -> None:
    @registry.task(topic="ship")
    def ship(order: Order) -> None:
        order.note = "half done"
        raise RuntimeError("carrier down")

    _order(engine, 1, "before")
    with Session(engine) as session, session.begin():
        job_id = ship.enqueue(session, session.get(Order, 1))

    result = Worker(registry, engine, mode=mode, listen=False).run_once()  # type: ignore[arg-type]

    assert result.retried == 1
    assert _note(engine, 1) == "before"
    job = get_job(engine, queue, job_id)
    assert job.attributes["last_error"]["type"] == "RuntimeError"


def test_in_transaction_mode_the_instance_is_loaded_in_the_claim_s_session(
    engine: Engine, registry: TaskRegistry
) -> None:
    from programma_sa import JobContext

    seen: dict[str, Any] = {}

    @registry.task(topic="ship")
    def ship(order: Order) -> None:
        seen["session"] = Session.object_session(order)

    _order(engine, 1)
    with Session(engine) as session, session.begin():
        ship.enqueue(session, session.get(Order, 1))
    worker = Worker(registry, engine, mode="transaction", listen=False)
    handler = worker.handler

    def spy(ctx: JobContext) -> None:
        seen["claim"] = ctx.session
        handler(ctx)

    worker.handler = spy
    worker.run_once()

    assert seen["session"] is seen["claim"] is not None


@pytest.mark.parametrize("mode", MODES)
def test_a_deleted_row_fails_the_job_at_once(
    engine: Engine, registry: TaskRegistry, queue: JobQueue, mode: str
) -> None:
    ran: list[int] = []

    @registry.task(topic="ship", retry=RetryPolicy(max_attempts=5))
    def ship(order: Order) -> None:
        ran.append(order.id)

    _order(engine, 1)
    with Session(engine) as session, session.begin():
        job_id = ship.enqueue(session, session.get(Order, 1))
    with Session(engine) as session, session.begin():
        session.delete(session.get(Order, 1))

    result = Worker(registry, engine, mode=mode, listen=False).run_once()  # type: ignore[arg-type]

    assert result.failed == 1 and not ran
    job = get_job(engine, queue, job_id)
    assert job.state is JobState.FAILED and job.attempts == 1
    assert job.attributes["last_error"]["type"] == "programma_sa.exceptions.InstanceNotFound"
    assert job.attributes["last_error"]["message"] == (
        "task 'ship': argument 'order': no Order has the primary key 1"
    )


def test_a_raw_job_with_a_matching_document_runs_the_task(
    engine: Engine, registry: TaskRegistry, queue: JobQueue
) -> None:
    @registry.task(topic="ship")
    def ship(order: Order, note: str = "raw") -> None:
        order.note = note

    _order(engine, 3)
    with Session(engine) as session, session.begin():
        job_id = queue.add_job(session, "ship", {"order": 3})

    assert Worker(registry, engine, mode="transaction", listen=False).run_once().completed == 1
    assert _note(engine, 3) == "raw"
    assert get_job(engine, queue, job_id).state is JobState.COMPLETED


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({}, "task 'ship': the job's data has no argument 'order_id'"),
        ({"order_id": 1, "x": 2}, "task 'ship': the job's data has an unexpected argument 'x'"),
        ({"order_id": "one"}, "task 'ship': argument 'order_id': expected int, got str"),
        ([1], "task 'ship': the job's data must be an object of arguments by name, got list"),
    ],
    ids=["missing", "unexpected", "wrong-type", "not-an-object"],
)
def test_a_document_that_does_not_bind_fails_without_retries(
    engine: Engine, registry: TaskRegistry, queue: JobQueue, data: Any, message: str
) -> None:
    @registry.task(topic="ship")
    def ship(order_id: int) -> None: ...

    with Session(engine) as session, session.begin():
        job_id = queue.add_job(session, "ship", data)

    assert Worker(registry, engine, listen=False).run_once().failed == 1

    job = get_job(engine, queue, job_id)
    assert job.state is JobState.FAILED and job.attempts == 1
    assert job.attributes["last_error"]["type"] == "programma_sa.exceptions.TaskDocumentError"
    assert job.attributes["last_error"]["message"] == message


def test_a_job_whose_topic_no_task_claims_waits_untouched(
    engine: Engine, registry: TaskRegistry, queue: JobQueue
) -> None:
    @registry.task(topic="known")
    def known() -> None: ...

    with Session(engine) as session, session.begin():
        orphan = queue.add_job(session, "unknown", {})
        known.enqueue(session)

    result = Worker(registry, engine, listen=False).run_once()

    assert result.claimed == 1 and result.completed == 1
    job = get_job(engine, queue, orphan)
    assert job.state is JobState.CREATED and job.attempts == 0


@pytest.mark.asyncio
@pytest.mark.parametrize("mode", MODES)
async def test_an_async_worker_serves_async_and_plain_tasks_side_by_side(
    engine: Engine, async_engine: AsyncEngine, registry: TaskRegistry, mode: str
) -> None:
    threads: dict[str, str] = {}

    @registry.task(topic="plain")
    def plain(order: Order, note: str) -> None:
        threads["plain"] = threading.current_thread().name
        order.note = note

    @registry.task(topic="coroutine")
    async def coroutine(order: Order, note: str) -> None:
        threads["coroutine"] = threading.current_thread().name
        await asyncio.sleep(0)
        order.note = note

    @registry.task(topic="no-session")
    def no_session(n: int) -> None:
        threads["no-session"] = threading.current_thread().name

    for order_id in (1, 2):
        _order(engine, order_id)
    with Session(engine) as session, session.begin():
        plain.enqueue(session, session.get(Order, 1), "by a thread")
        coroutine.enqueue(session, session.get(Order, 2), "on the loop")
        no_session.enqueue(session, 3)

    worker = AsyncWorker(registry, async_engine, mode=mode, listen=False)  # type: ignore[arg-type]
    assert worker.settings.topics == ("plain", "coroutine", "no-session")
    assert (await worker.run_once()).completed == 3

    assert _note(engine, 1) == "by a thread"
    assert _note(engine, 2) == "on the loop"
    loop_thread = threading.current_thread().name
    assert threads["coroutine"] == loop_thread
    assert threads["plain"] != loop_thread and threads["no-session"] != loop_thread


@pytest.mark.asyncio
async def test_an_async_worker_fails_a_deleted_row_at_once(
    engine: Engine, async_engine: AsyncEngine, registry: TaskRegistry, queue: JobQueue
) -> None:
    @registry.task(topic="ship")
    async def ship(order: Order) -> None: ...

    _order(engine, 1)
    with Session(engine) as session, session.begin():
        job_id = ship.enqueue(session, session.get(Order, 1))
        session.delete(session.get(Order, 1))

    assert (await AsyncWorker(registry, async_engine, listen=False).run_once()).failed == 1
    assert get_job(engine, queue, job_id).state is JobState.FAILED


@pytest.mark.asyncio
async def test_async_enqueue_in_an_async_session(
    engine: Engine, async_engine: AsyncEngine, registry: TaskRegistry, queue: JobQueue
) -> None:
    from sqlalchemy.ext.asyncio import AsyncSession

    @registry.task(topic="ship")
    async def ship(order: Order, note: str) -> None:
        order.note = note

    async with AsyncSession(async_engine) as session, session.begin():
        order = Order(id=8)
        session.add(order)  # pending: enqueue_async flushes it to learn its key
        one = await ship.enqueue_async(session, order, "one")
        many = await ship.enqueue_many_async(
            session, [(order, "two"), {"order": order, "note": "3"}]
        )

    data = [get_job(engine, queue, job_id).data for job_id in (one, *many)]
    assert data == [
        {"order": 8, "note": "one"},
        {"order": 8, "note": "two"},
        {"order": 8, "note": "3"},
    ]


def test_a_sync_worker_refuses_async_tasks(registry: TaskRegistry, engine: Engine) -> None:
    @registry.task(topic="plain")
    def plain() -> None: ...

    @registry.task(topic="coroutine")
    async def coroutine() -> None: ...

    with pytest.raises(ConfigurationError) as refused:
        Worker(registry, engine, listen=False)
    assert str(refused.value) == (
        "tasks coroutine are async def: serve them with an AsyncWorker (it runs plain tasks "
        "too), or name the topics this Worker serves"
    )
    assert Worker(registry, engine, "plain", listen=False).settings.topics == ("plain",)


def test_the_worker_mode_comes_from_the_tasks_unless_given(
    registry: TaskRegistry, engine: Engine, caplog: pytest.LogCaptureFixture
) -> None:
    @registry.task(topic="in-transaction", mode="transaction")
    def in_transaction() -> None: ...

    @registry.task(topic="either")
    def either() -> None: ...

    worker = Worker(registry, engine, listen=False)
    assert worker.settings.mode == "transaction"
    assert worker.settings.topics == ("in-transaction", "either")

    with caplog.at_level(logging.INFO, logger="programma_sa.tasks"):
        lease = Worker(registry, engine, mode="lease", listen=False)
    assert lease.settings.topics == ("either",)
    assert "tasks in-transaction are left to a transaction-mode worker" in caplog.messages

    @registry.task(topic="leased", mode="lease")
    def leased() -> None: ...

    with pytest.raises(ConfigurationError, match="the tasks ask for both lease and transaction"):
        Worker(registry, engine, listen=False)
    with pytest.raises(
        ConfigurationError, match=r"^task 'leased' needs a lease-mode worker, not transaction$"
    ):
        Worker(registry, engine, ["leased"], mode="transaction", listen=False)


@pytest.mark.parametrize(
    ("build", "message"),
    [
        (
            lambda r, e: Worker(r, e, "nope", listen=False),
            "topic 'nope' is not the topic of a task here",
        ),
        (
            lambda r, e: Worker(r, e, handler=print, listen=False),
            "a worker given a task registry takes no handler: the registry dispatches each "
            "job to the task of its topic",
        ),
        (
            lambda r, e: Worker(r.queue, e, listen=False),
            "a worker needs topics and a handler (or a task registry in place of its queue)",
        ),
        (
            lambda r, e: Worker(TaskRegistry(r.queue), e, listen=False),
            "the registry has no task to serve",
        ),
    ],
    ids=["unknown-topic", "handler", "no-topics", "empty"],
)
def test_a_registry_worker_built_wrongly_is_refused(
    registry: TaskRegistry, engine: Engine, build: Any, message: str
) -> None:
    @registry.task(topic="t")
    def t() -> None: ...

    with pytest.raises(ConfigurationError) as refused:
        build(registry, engine)
    assert str(refused.value) == message


def test_each_task_s_retry_policy_applies_to_its_jobs(
    engine: Engine, registry: TaskRegistry, queue: JobQueue
) -> None:
    @registry.task(topic="once", retry=RetryPolicy(max_attempts=1))
    def once() -> None:
        raise ValueError("no")

    @registry.task(topic="often")
    def often() -> None:
        raise ValueError("no")

    with Session(engine) as session, session.begin():
        once_id = once.enqueue(session)
        often_id = often.enqueue(session)

    worker = Worker(registry, engine, listen=False, retry=RetryPolicy(max_attempts=3))
    assert dict(worker.settings.topic_retry) == {"once": RetryPolicy(max_attempts=1)}
    result = worker.run_once()

    assert (result.failed, result.retried) == (1, 1)
    assert get_job(engine, queue, once_id).state is JobState.FAILED
    assert get_job(engine, queue, often_id).state is JobState.ACTIVE
