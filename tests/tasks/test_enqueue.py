"""Enqueueing tasks: a typed call, checked against the signature before anything is written."""

from __future__ import annotations

import dataclasses
import enum
import math
import uuid
from datetime import date, datetime, time, timezone
from decimal import Decimal
from typing import Any

import pydantic
import pytest
from sqlalchemy import Engine, select, text
from sqlalchemy.orm import Session

from programma_sa import (
    ConfigurationError,
    InvalidJobInput,
    JobQueue,
    PayloadTooLarge,
    RetryPolicy,
    TaskRegistry,
    Worker,
)

from ..app import Job, Order
from ..helpers import job_count


class Colour(enum.Enum):
    RED = "red"
    BLUE = "blue"


@dataclasses.dataclass(frozen=True)
class Window:
    start: datetime
    days: list[date]
    label: str = ""


class Address(pydantic.BaseModel):
    street: str
    since: date


WHEN = datetime(2024, 5, 6, 7, 8, 9, 123456, tzinfo=timezone.utc)


def _kitchen_sink(registry: TaskRegistry, received: list[dict[str, Any]]) -> Any:
    @registry.task(topic="sink")
    def sink(
        order: Order,
        when: datetime,
        day: date,
        at: time,
        ident: uuid.UUID,
        amount: Decimal,
        colour: Colour,
        window: Window,
        address: Address,
        ids: list[uuid.UUID],
        pair: tuple[int, str],
        weights: dict[str, float],
        tags: set[str],
        maybe: int | None,
        plain: Any,
        *extra: Decimal,
        **options: date,
    ) -> None:
        received.append(
            {
                "order": (type(order), order.id),
                "when": when,
                "day": day,
                "at": at,
                "ident": ident,
                "amount": amount,
                "colour": colour,
                "window": window,
                "address": address,
                "ids": ids,
                "pair": pair,
                "weights": weights,
                "tags": tags,
                "maybe": maybe,
                "plain": plain,
                "extra": extra,
                "options": options,
            }
        )

    return sink


SINK_ARGUMENTS: dict[str, Any] = {
    "when": WHEN,
    "day": date(2024, 2, 29),
    "at": time(23, 59, 1),
    "ident": uuid.UUID("12345678-1234-5678-1234-567812345678"),
    "amount": Decimal("10.10"),
    "colour": Colour.BLUE,
    "window": Window(WHEN, [date(2024, 1, 1), date(2024, 1, 2)], "q1"),
    "address": Address(street="Via Roma 1", since=date(2020, 3, 1)),
    "ids": [uuid.UUID(int=1), uuid.UUID(int=2)],
    "pair": (7, "seven"),
    "weights": {"a": 0.5, "b": 2},
    "tags": {"x", "y"},
    "maybe": None,
    "plain": {"nested": [1, 2.5, "three", None, True]},
}


def test_a_task_is_still_its_function(registry: TaskRegistry) -> None:
    @registry.task(topic="add")
    def add(a: int, b: int = 1) -> int:
        """Add two numbers."""
        return a + b

    assert add(2, b=3) == 5
    assert add.__name__ == "add" and add.__doc__ == "Add two numbers."
    assert add.topic == "add" and registry["add"] is add and registry.topics == ["add"]


def test_the_default_topic_is_the_module_and_qualified_name(registry: TaskRegistry) -> None:
    @registry.task
    def ship(order_id: int) -> None: ...

    assert ship.topic == (
        "tests.tasks.test_enqueue.test_the_default_topic_is_the_module_and_qualified_name"
        ".<locals>.ship"
    )


def test_enqueued_beside_a_rolled_back_write_there_is_no_job(
    engine: Engine, registry: TaskRegistry
) -> None:
    @registry.task(topic="ship")
    def ship(order: Order) -> None: ...

    with Session(engine) as session:
        session.begin()
        order = Order(id=1)
        session.add(order)
        ship.enqueue(session, order)  # flushes the pending order to learn its key
        session.rollback()
    with Session(engine) as session:
        assert job_count(session) == 0
        assert session.get(Order, 1) is None


def test_enqueued_beside_a_committed_write_the_worker_gets_the_same_values_and_types(
    engine: Engine, registry: TaskRegistry
) -> None:
    received: list[dict[str, Any]] = []
    sink = _kitchen_sink(registry, received)
    with Session(engine) as session, session.begin():
        order = Order(id=42)
        session.add(order)
        sink.enqueue(
            session,
            order,
            *SINK_ARGUMENTS.values(),
            Decimal("1.5"),
            Decimal("-2"),
            due=date(2025, 1, 1),
        )

    assert Worker(registry, engine, mode="transaction", listen=False).run_once().completed == 1

    (got,) = received
    expected = {
        "order": (Order, 42),
        **SINK_ARGUMENTS,
        "extra": (Decimal("1.5"), Decimal("-2")),
        "options": {"due": date(2025, 1, 1)},
    }
    assert got == expected
    for name, value in expected.items():
        assert type(got[name]) is type(value), name
    assert [type(item) for item in got["ids"]] == [uuid.UUID, uuid.UUID]


def test_the_document_is_plain_json_by_parameter_name_without_defaults(
    session: Session, registry: TaskRegistry, queue: JobQueue
) -> None:
    @registry.task(topic="ship")
    def ship(order: Order, when: datetime, note: str = "", *, urgent: bool = False) -> None: ...

    order = Order(id=7)
    session.add(order)
    job_id = ship.using(run_after_seconds=60, attributes={"tenant": 3}).enqueue(
        session, order, WHEN, urgent=True
    )

    job = queue.get_job(session, job_id)
    assert job is not None
    assert job.topic == "ship"
    assert job.data == {"order": 7, "when": "2024-05-06T07:08:09.123456+00:00", "urgent": True}
    assert job.attributes == {"tenant": 3}
    assert job.retry_after_seconds == 30
    assert job.start_after is not None and job.start_after > job.created_at


def test_task_settings_apply_to_its_jobs(session: Session, queue: JobQueue) -> None:
    registry = TaskRegistry(queue, retry_after_seconds=90)

    @registry.task(topic="slow", retry_after_seconds=600)
    def slow() -> None: ...

    @registry.task(topic="quick")
    def quick() -> None: ...

    slow_job = queue.get_job(session, slow.enqueue(session))
    quick_job = queue.get_job(session, quick.enqueue(session))
    assert slow_job is not None and slow_job.retry_after_seconds == 600
    assert quick_job is not None and quick_job.retry_after_seconds == 90


def test_enqueue_many_writes_every_call_in_order(
    session: Session, registry: TaskRegistry, queue: JobQueue
) -> None:
    @registry.task(topic="greet")
    def greet(name: str, loud: bool = False) -> None: ...

    ids = greet.enqueue_many(session, [("ada",), {"name": "bob", "loud": True}, ("cy", False)])

    data = [queue.get_job(session, job_id).data for job_id in ids]  # type: ignore[union-attr]
    assert data == [{"name": "ada"}, {"name": "bob", "loud": True}, {"name": "cy", "loud": False}]


class Opaque:
    pass


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda t, s: t.enqueue(s), "task 'ship': missing a required argument: 'order'"),
        (
            lambda t, s: t.enqueue(s, Order(id=1), colour="red"),
            "task 'ship': got an unexpected keyword argument 'colour'",
        ),
        (
            lambda t, s: t.enqueue(s, Order(id=1), WHEN, "n", 4.0, 5),
            "task 'ship': too many positional arguments",
        ),
        (
            lambda t, s: t.enqueue(s, _in(s, Order(id=1)), "2024-05-06"),
            "task 'ship': argument 'when': expected datetime, got str",
        ),
        (
            lambda t, s: t.enqueue(s, _in(s, Order(id=1)), note=WHEN),
            "task 'ship': argument 'note': a value of type datetime is not plain JSON: annotate "
            "the parameter with its type to store it (see the supported types in docs/tasks.md)",
        ),
        (
            lambda t, s: t.enqueue(s, _in(s, Order(id=1)), weight=math.nan),
            "task 'ship': argument 'weight': nan has no JSON form",
        ),
        (
            lambda t, s: t.enqueue(s, Order(id=1)),
            "task 'ship': argument 'order': the Order has no primary key yet: add it to the "
            "session first (session.add)",
        ),
        (
            lambda t, s: t.enqueue(s, Opaque()),
            "task 'ship': argument 'order': expected Order, got Opaque",
        ),
        (
            lambda t, s: t.enqueue_many(s, [("x",), ("y",)]),
            "task 'ship', call #0: argument 'order': expected Order, got str",
        ),
        (
            lambda t, s: t.enqueue_many(s, [{}, ["y"]]),
            "task 'ship', call #0: missing a required argument: 'order'",
        ),
        (
            lambda t, s: t.enqueue_many(s, [["y"]]),
            "task 'ship', call #0: a call is a tuple of positional arguments or a mapping of "
            "keyword arguments, got list",
        ),
        (
            lambda t, s: t.using(timeout=3),
            "task 'ship': using() takes attributes, run_after_seconds, run_after_date, "
            "retry_after_seconds, priority, unique_key, unique_states, on_conflict; not timeout",
        ),
        (
            lambda t, s: t.using(run_after_seconds=-1).enqueue(s, _in(s, Order(id=2))),
            "task 'ship': run_after_seconds must not be negative, got -1",
        ),
    ],
    ids=[
        "missing",
        "unknown",
        "too-many",
        "wrong-type",
        "not-plain-json",
        "nan",
        "transient-instance",
        "not-an-instance",
        "many-wrong-type",
        "many-missing",
        "many-not-a-call",
        "unknown-option",
        "bad-option",
    ],
)
def test_a_wrong_call_is_refused_before_anything_is_written(
    session: Session, registry: TaskRegistry, call: Any, message: str
) -> None:
    @registry.task(topic="ship")
    def ship(order: Order, when: datetime = WHEN, note: Any = "", weight: float = 1.0) -> None: ...

    with pytest.raises(InvalidJobInput) as refused:
        call(ship, session)

    assert str(refused.value) == message
    assert job_count(session) == 0
    # The transaction is still usable: no statement failed in it.
    session.add(Order(id=99))
    session.flush()
    assert session.execute(select(Order.id).where(Order.id == 99)).scalar_one() == 99


def _in(session: Session, order: Order) -> Order:
    session.add(order)
    return order


def test_a_payload_over_the_queue_limit_is_refused_naming_the_task(session: Session) -> None:
    registry = TaskRegistry(JobQueue(Job, max_payload_bytes=32))

    @registry.task(topic="big")
    def big(text: str) -> None: ...

    with pytest.raises(
        PayloadTooLarge, match=r"^task 'big': data is 44 bytes as JSON; the limit is 32 bytes$"
    ):
        big.enqueue(session, "x" * 33)
    assert job_count(session) == 0


def test_an_instance_pending_in_another_session_is_refused(
    engine: Engine, session: Session, registry: TaskRegistry
) -> None:
    @registry.task(topic="ship")
    def ship(order: Order) -> None: ...

    with Session(engine) as other:
        pending = Order(id=5)
        other.add(pending)
        with pytest.raises(
            InvalidJobInput,
            match=r"^task 'ship': a mapped instance has no primary key after the session "
            r"flushed: it is pending in another session$",
        ):
            ship.enqueue(session, pending)
    assert job_count(session) == 0


@pytest.mark.parametrize(
    ("declare", "message"),
    [
        (
            lambda r: r.task(topic="")(lambda: None),
            "topic must not be empty",
        ),
        (
            lambda r: r.task(retry=3)(lambda: None),
            "retry must be a RetryPolicy or None, got 3",
        ),
        (
            lambda r: r.task(mode="eager")(lambda: None),
            "mode must be lease, transaction or None, got 'eager'",
        ),
        (
            lambda r: r.task(retry_after_seconds=1.5)(lambda: None),
            "retry_after_seconds must be whole seconds, got 1.5",
        ),
        (
            lambda r: r.task(topic="t")(3),
            "a task is a function, got 3",
        ),
    ],
    ids=["empty-topic", "retry", "mode", "visibility", "not-callable"],
)
def test_a_bad_task_declaration_is_refused(
    registry: TaskRegistry, declare: Any, message: str
) -> None:
    with pytest.raises(ConfigurationError) as refused:
        declare(registry)
    assert str(refused.value) == message


def test_a_topic_is_one_task_s(registry: TaskRegistry) -> None:
    @registry.task(topic="t")
    def first() -> None: ...

    with pytest.raises(ConfigurationError, match=r"^topic 't' is already <Task t>'s$"):
        registry.task(topic="t")(lambda: None)


def test_an_annotation_no_job_can_store_is_refused_at_the_first_enqueue(
    session: Session, registry: TaskRegistry
) -> None:
    @registry.task(topic="t")
    def t(opaque: Opaque) -> None: ...

    with pytest.raises(
        ConfigurationError,
        match=r"^task 't': parameter 'opaque': Opaque is not a type a job can store",
    ):
        t.enqueue(session, Opaque())
    assert job_count(session) == 0


def test_a_registry_takes_a_queue(registry: TaskRegistry) -> None:
    with pytest.raises(
        ConfigurationError, match="a TaskRegistry needs a JobQueue or an AsyncJobQueue"
    ):
        TaskRegistry("jobs")  # type: ignore[arg-type]
    assert registry.async_queue.table is registry.queue.table
    assert TaskRegistry(JobQueue(Job), retry=RetryPolicy(max_attempts=2)) is not None


def test_enqueue_in_a_session_bound_to_a_connection(engine: Engine, registry: TaskRegistry) -> None:
    @registry.task(topic="t")
    def t(n: int) -> None: ...

    with engine.connect() as connection, Session(bind=connection) as session:
        t.enqueue(session, 1)
        assert connection.execute(text("SELECT count(*) FROM programma_jobs")).scalar_one() == 1
        connection.rollback()
