"""A task's priority and unique key: declared on the task, overridden per call, sync and async."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest
import pytest_asyncio
from sqlalchemy import Engine, select
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession
from sqlalchemy.orm import Session

from programma_sa import (
    ConfigurationError,
    DuplicateJob,
    InvalidJobInput,
    JobQueue,
    JobState,
    TaskRegistry,
    Unique,
    unique_key,
)

from ..app import Job, Order
from ..asyncio.urls import async_url
from ..backends import ASYNC_DRIVERS, make_async_engine
from ..helpers import job_count
from ..workers.support import get_job


def _job(session: Session, queue: JobQueue, job_id: Any) -> Any:
    job = queue.get_job(session, job_id)
    assert job is not None
    return job


# -- priority --------------------------------------------------------------------------


def test_a_task_s_priority_is_its_jobs_default_and_a_call_may_override_it(
    session: Session, registry: TaskRegistry, queue: JobQueue
) -> None:
    @registry.task(topic="mail", priority=5)
    def mail(to: str) -> None: ...

    @registry.task(topic="plain")
    def plain() -> None: ...

    default = mail.enqueue(session, "a")
    urgent = mail.using(priority=10).enqueue(session, "b")
    low = mail.using(priority=-1).enqueue_many(session, [("c",), ("d",)])

    assert _job(session, queue, default).priority == 5
    assert _job(session, queue, urgent).priority == 10
    assert [_job(session, queue, job_id).priority for job_id in low] == [-1, -1]
    assert _job(session, queue, plain.enqueue(session)).priority == 0
    assert mail.job.priority == 5  # using() returned a copy

    claimed = queue.claim_jobs(session, "mail", max_jobs=4)
    assert [job.data["to"] for job in claimed] == ["b", "a", "c", "d"]


# -- unique keys derived from chosen arguments -------------------------------------------


def test_a_unique_task_keeps_one_job_per_value_of_its_chosen_arguments(
    session: Session, registry: TaskRegistry, queue: JobQueue
) -> None:
    @registry.task(topic="receipt", unique=Unique(args=["order"]))
    def receipt(order: int, note: str = "") -> None: ...

    first = receipt.enqueue(session, 7, note="hello")
    again = receipt.enqueue(session, 7, note="other note")
    other = receipt.enqueue(session, 8)

    assert again == first and other != first
    job = _job(session, queue, first)
    assert job.unique_key == unique_key("receipt", {"order": 7})
    assert job.data == {"order": 7, "note": "hello"}  # "keep": the first call's job
    assert job.unique_states == (JobState.CREATED, JobState.ACTIVE, JobState.PROCESSING)
    assert job_count(session) == 2


def test_without_args_every_argument_counts_and_defaults_apply(
    session: Session, registry: TaskRegistry, queue: JobQueue
) -> None:
    @registry.task(topic="sync", unique=Unique())
    def sync(account: int, full: bool = False, *extra: int, **flags: str) -> None: ...

    plain = sync.enqueue(session, 1)
    assert sync.enqueue(session, 1, False) == plain  # the default, passed
    assert sync.enqueue(session, account=1, full=False) == plain
    assert sync.enqueue(session, 1, True) != plain
    assert sync.enqueue(session, 1, False, 3) != plain  # *extra counts
    assert sync.enqueue(session, 1, mode="x") != plain  # so do **flags keywords
    assert _job(session, queue, plain).unique_key == unique_key(
        "sync", {"account": 1, "full": False, "extra": []}
    )


def test_a_period_gives_one_job_per_period(
    session: Session, registry: TaskRegistry, queue: JobQueue
) -> None:
    @registry.task(topic="digest", unique=Unique(args=["user"], period=timedelta(hours=1)))
    def digest(user: int) -> None: ...

    before = datetime.now(timezone.utc)
    first = digest.enqueue(session, 3)
    again = digest.enqueue(session, 3)
    after = datetime.now(timezone.utc)

    keys = {unique_key("digest", {"user": 3}, period=3600, at=moment) for moment in (before, after)}
    assert _job(session, queue, first).unique_key in keys
    if len(keys) == 1:  # both calls in one clock hour (unless this ran across one)
        assert again == first
    assert unique_key("digest", {"user": 3}) not in keys  # the period is in the key


def test_replace_updates_the_waiting_holder(
    session: Session, registry: TaskRegistry, queue: JobQueue
) -> None:
    @registry.task(topic="refresh", unique=Unique(args=["page"], on_conflict="replace"))
    def refresh(page: str, version: int) -> None: ...

    first = refresh.enqueue(session, "home", 1)
    assert refresh.using(priority=4).enqueue(session, "home", 2) == first
    job = _job(session, queue, first)
    assert job.data == {"page": "home", "version": 2} and job.priority == 4


@pytest.mark.databases(
    "postgresql",
    "mariadb",
    reason="PostgreSQL and MariaDB name the held key; SQLite does not (test_sqlite.py)",
)
def test_raise_refuses_a_held_key_with_duplicate_job(
    session: Session, registry: TaskRegistry
) -> None:
    @registry.task(topic="charge", unique=Unique(args=["invoice"], on_conflict="raise"))
    def charge(invoice: int) -> None: ...

    charge.enqueue(session, 1)
    with pytest.raises(DuplicateJob) as refused, session.begin_nested():
        charge.enqueue(session, 1)
    assert refused.value.unique_key == unique_key("charge", {"invoice": 1})
    assert job_count(session) == 1


def test_the_declared_states_are_the_jobs_unique_states(
    session: Session, registry: TaskRegistry, queue: JobQueue
) -> None:
    @registry.task(topic="poll", unique=Unique(states=["created"]))
    def poll() -> None: ...

    first = poll.enqueue(session)
    assert _job(session, queue, first).unique_states == (JobState.CREATED,)
    queue.claim_jobs(session, "poll")  # claimed: "at most one waiting" lets the next in
    assert poll.enqueue(session) != first


def test_a_call_s_unique_key_wins_over_the_derived_one(
    session: Session, registry: TaskRegistry, queue: JobQueue
) -> None:
    @registry.task(topic="export", unique=Unique(args=["table"]))
    def export(table: str) -> None: ...

    @registry.task(topic="free")
    def free(n: int) -> None: ...

    keyed = export.using(unique_key="export:nightly")
    first = keyed.enqueue(session, "a")
    assert keyed.enqueue(session, "b") == first
    assert _job(session, queue, first).unique_key == "export:nightly"
    assert export.enqueue(session, "a") != first  # the derived key is another one

    # A task that declares no uniqueness takes a key per call, with its policy.
    once = free.using(unique_key="free:1", unique_states=["created"])
    assert once.enqueue(session, 1) == once.enqueue(session, 2)
    with pytest.raises(DuplicateJob), session.begin_nested():
        once.using(on_conflict="raise").enqueue(session, 3)


def test_enqueue_many_derives_a_key_per_call(
    session: Session, registry: TaskRegistry, queue: JobQueue
) -> None:
    @registry.task(topic="index", unique=Unique(args=["doc"]))
    def index(doc: int, reason: str) -> None: ...

    held = index.enqueue(session, 2, "earlier")
    ids = index.enqueue_many(session, [(1, "a"), (1, "b"), (2, "c"), {"doc": 3, "reason": "d"}])

    assert ids[0] == ids[1] and ids[2] == held and len(set(ids)) == 3
    assert _job(session, queue, ids[0]).data == {"doc": 1, "reason": "a"}  # keep: the first
    assert job_count(session) == 3


# -- bad input, named, before anything is written ----------------------------------------


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"priority": "1"}, "priority must be an int, got '1'"),
        (
            {"priority": 2**31},
            "priority must be between -2147483648 and 2147483647, got 2147483648",
        ),
        ({"unique": ["order"]}, "unique must be a Unique or None, got ['order']"),
        (
            {"unique": Unique(args="order")},
            "task 't': unique: args must be a non-empty list of parameter names, got 'order'",
        ),
        (
            {"unique": Unique(args=[])},
            "task 't': unique: args must be a non-empty list of parameter names, got []",
        ),
        (
            {"unique": Unique(args=["order", "nope"])},
            "task 't': unique: args: 'nope' is not a parameter of the function",
        ),
        (
            {"unique": Unique(args=["flags"])},
            "task 't': unique: args: 'flags' is the **kwargs parameter; choose named "
            "parameters (or args=None: every argument)",
        ),
        (
            {"unique": Unique(period=0)},
            "task 't': unique: period must be a positive number of seconds or a timedelta, got 0",
        ),
        (
            {"unique": Unique(on_conflict="skip")},  # type: ignore[arg-type]
            "task 't': on_conflict must be one of keep, replace, raise, got 'skip'",
        ),
        (
            {"unique": Unique(states=["active"])},
            "task 't': unique_states must include created and, with each state, the one "
            "before it (created → active → processing → completed | failed | cancelled), so "
            "that a job never takes its key back once it left them; got ['active'], missing "
            "created (before active)",
        ),
    ],
    ids=[
        "priority-type",
        "priority-range",
        "unique-type",
        "args-text",
        "args-empty",
        "args-unknown",
        "args-kwargs",
        "period",
        "on-conflict",
        "states",
    ],
)
def test_a_bad_declaration_is_refused(
    registry: TaskRegistry, options: dict[str, Any], message: str
) -> None:
    def t(order: int, **flags: str) -> None: ...

    with pytest.raises(ConfigurationError) as refused:
        registry.task(topic="t", **options)(t)
    assert str(refused.value) == message
    assert "t" not in registry.topics


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"priority": 1.5}, "task 'ship': priority must be an int, got 1.5"),
        (
            {"on_conflict": "skip"},
            "task 'ship': on_conflict must be one of keep, replace, raise, got 'skip'",
        ),
        ({"unique_key": ""}, "task 'ship': unique_key must not be empty"),
        (
            {"unique_states": "created"},
            "task 'ship': unique_states must be a collection of job states, got 'created'",
        ),
    ],
    ids=["priority", "on-conflict", "empty-key", "states"],
)
def test_a_bad_call_option_is_refused_by_using(
    registry: TaskRegistry, options: dict[str, Any], message: str
) -> None:
    @registry.task(topic="ship")
    def ship(order: int) -> None: ...

    with pytest.raises(InvalidJobInput) as refused:
        ship.using(**options)
    assert str(refused.value) == message


@pytest.mark.parametrize(
    ("many", "message"),
    [
        (False, "task 'ship': unique_states needs a unique_key"),
        (True, "task 'ship': job spec #0: unique_states needs a unique_key"),
    ],
    ids=["enqueue", "enqueue_many"],
)
def test_states_without_a_key_are_refused_before_anything_is_written(
    session: Session, registry: TaskRegistry, many: bool, message: str
) -> None:
    @registry.task(topic="ship")
    def ship(order: int) -> None: ...

    configured = ship.using(unique_states=["created"])  # the task derives no key
    with pytest.raises(InvalidJobInput) as refused:
        if many:
            configured.enqueue_many(session, [(1,), (2,)])
        else:
            configured.enqueue(session, 1)

    assert str(refused.value) == message
    assert job_count(session) == 0
    session.add(Order(id=99))  # the transaction is still usable
    session.flush()
    assert session.execute(select(Order.id).where(Order.id == 99)).scalar_one() == 99


# -- async ------------------------------------------------------------------------------


@pytest_asyncio.fixture
async def async_engine(database_url: str, engine: Engine) -> AsyncIterator[AsyncEngine]:
    """An async engine (psycopg; aiosqlite on SQLite); ``engine`` (sync) truncates the
    tables after the test."""
    async_engine = make_async_engine(async_url(database_url, ASYNC_DRIVERS[0]), pool_size=2)
    yield async_engine
    await async_engine.dispose()


@pytest.mark.asyncio
async def test_async_calls_take_the_priority_and_the_unique_key(
    engine: Engine, async_engine: AsyncEngine, registry: TaskRegistry, queue: JobQueue
) -> None:
    @registry.task(topic="ping", priority=3, unique=Unique(args=["host"]))
    async def ping(host: str, attempt: int = 0) -> None: ...

    async with AsyncSession(async_engine) as session, session.begin():
        first = await ping.enqueue_async(session, "a", 1)
        again = await ping.using(priority=9).enqueue_async(session, "a", 2)
        many = await ping.enqueue_many_async(session, [("b",), ("a",), {"host": "b"}])
        keyed = await ping.using(unique_key="ping:all", priority=1).enqueue_many_async(
            session, [("c",), ("d",)]
        )

    assert again == first and many[1] == first and many[0] == many[2] != first
    assert keyed[0] == keyed[1]
    job = get_job(engine, queue, first)
    assert job.priority == 3 and job.unique_key == unique_key("ping", {"host": "a"})
    assert job.data == {"host": "a", "attempt": 1}
    assert get_job(engine, queue, many[0]).priority == 3
    keyed_job = get_job(engine, queue, keyed[0])
    assert keyed_job.unique_key == "ping:all" and keyed_job.priority == 1
    with Session(engine) as session:
        assert job_count(session) == 3


@pytest.mark.asyncio
async def test_async_calls_refuse_bad_options_before_anything_is_written(
    engine: Engine, async_engine: AsyncEngine, registry: TaskRegistry
) -> None:
    @registry.task(topic="ping")
    async def ping(host: str) -> None: ...

    async with AsyncSession(async_engine) as session, session.begin():
        with pytest.raises(InvalidJobInput) as refused:
            await ping.using(unique_states=["created"]).enqueue_async(session, "a")
        assert str(refused.value) == "task 'ping': unique_states needs a unique_key"
        with pytest.raises(InvalidJobInput) as refused:
            await ping.using(unique_states=["created"]).enqueue_many_async(session, [("a",)])
        assert str(refused.value) == "task 'ping': job spec #0: unique_states needs a unique_key"
        assert (await session.execute(select(Job.id))).first() is None
