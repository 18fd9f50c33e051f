"""The FastAPI example, driven over HTTP (httpx + ASGI) against the real test database.

A POST writes the order, enqueues its confirmation and reserves stock in one
transaction; a refused POST leaves no job — a duplicate order fails before the
enqueue, an out-of-stock one after the job's INSERT had run; the example's
``AsyncWorker`` (one ``run_once`` pass at a time) confirms the order and completes
the job. Once per async driver.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
import pytest_asyncio
from fastapi import FastAPI
from sqlalchemy import Engine, event, func, select, text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker, create_async_engine

from examples.fastapi_app.app import create_app
from examples.fastapi_app.models import CONFIRM_ORDER, Item, Job, Order, queue
from examples.fastapi_app.processing import confirmation_worker, setup_database, stock_items
from programma_sa import JobState, PassResult

from ..asyncio.urls import DRIVERS, async_url

pytestmark = [
    pytest.mark.asyncio,
    pytest.mark.postgresql_only("the example shop's PostgreSQL tables (OID, TRUNCATE)"),
]


@dataclass
class Shop:
    client: httpx.AsyncClient
    app: FastAPI
    statements: list[str] = field(default_factory=list)

    @property
    def sessions(self) -> async_sessionmaker[AsyncSession]:
        sessions: async_sessionmaker[AsyncSession] = self.app.state.sessions
        return sessions

    @staticmethod
    async def stock(session: AsyncSession, sku: str) -> int | None:
        item = await session.get(Item, sku, populate_existing=True)
        return None if item is None else item.in_stock

    async def confirmation_jobs(self) -> list[Any]:
        async with self.sessions() as session:
            table = Job.__table__
            rows = await session.execute(
                select(table.c.state, table.c.data).where(table.c.topic == CONFIRM_ORDER)
            )
            return [tuple(row) for row in rows]


@pytest.fixture
def shop_tables(engine: Engine) -> Iterator[None]:
    """The example's own tables are emptied here; ``engine`` empties the jobs table."""
    yield
    with engine.begin() as connection:
        connection.execute(text(f"TRUNCATE {Order.__tablename__}, {Item.__tablename__}"))


@pytest_asyncio.fixture(params=DRIVERS)
async def shop(
    request: pytest.FixtureRequest, database_url: str, shop_tables: None
) -> AsyncIterator[Shop]:
    engine = create_async_engine(async_url(database_url, request.param))
    await setup_database(engine)  # jobs table already migrated: a no-op for it
    app = create_app(engine)
    await stock_items(app.state.sessions, book=10, pen=10, mug=10, rare=1)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://shop") as client:
        shop = Shop(client, app)
        event.listen(
            engine.sync_engine,
            "before_cursor_execute",
            lambda _conn, _cursor, statement, *_: shop.statements.append(statement),
        )
        yield shop
    await engine.dispose()


async def test_post_writes_the_order_and_enqueues_its_job_together(shop: Shop) -> None:
    response = await shop.client.post("/orders", json={"id": 1, "item": "book"})
    assert response.status_code == 201, response.text
    body = response.json()
    assert body["id"] == 1
    async with shop.sessions() as session:
        order = await session.get(Order, 1)
        job = await queue.get_job(session, body["job_id"])
        assert await shop.stock(session, "book") == 9
    assert order is not None and (order.item, order.status) == ("book", "pending")
    assert job is not None
    assert (job.topic, job.data, job.state) == (CONFIRM_ORDER, {"order_id": 1}, JobState.CREATED)


async def test_a_duplicate_order_is_refused_and_enqueues_nothing(shop: Shop) -> None:
    assert (await shop.client.post("/orders", json={"id": 2, "item": "pen"})).status_code == 201

    duplicate = await shop.client.post("/orders", json={"id": 2, "item": "ink"})

    assert duplicate.status_code == 409
    assert duplicate.json() == {"detail": "order 2 exists"}
    assert await shop.confirmation_jobs() == [(JobState.CREATED.value, {"order_id": 2})]
    async with shop.sessions() as session:
        assert await session.scalar(select(func.count()).select_from(Order)) == 1
        order = await session.get(Order, 2)
        assert order is not None and order.item == "pen"
        assert await shop.stock(session, "pen") == 9


async def test_an_order_refused_after_the_enqueue_rolls_its_job_back(shop: Shop) -> None:
    assert (await shop.client.post("/orders", json={"id": 5, "item": "rare"})).status_code == 201
    shop.statements.clear()

    refused = await shop.client.post("/orders", json={"id": 6, "item": "rare"})

    assert refused.status_code == 409
    assert refused.json() == {"detail": "rare is out of stock"}
    # The job's INSERT did reach the server in the refused request...
    assert any(f"INSERT INTO {Job.__tablename__}" in sql for sql in shop.statements)
    # ...and was rolled back with the order: one job, the first order's.
    assert await shop.confirmation_jobs() == [(JobState.CREATED.value, {"order_id": 5})]
    async with shop.sessions() as session:
        assert await session.get(Order, 6) is None
        assert await shop.stock(session, "rare") == 0


async def test_processing_confirms_the_order_and_completes_the_job(shop: Shop) -> None:
    for order_id in (3, 4):
        response = await shop.client.post("/orders", json={"id": order_id, "item": "mug"})
        assert response.status_code == 201

    worker = confirmation_worker(shop.sessions, max_jobs=1)
    assert await worker.run_once() == PassResult(claimed=1, completed=1)
    assert await worker.run_once() == PassResult(claimed=1, completed=1)
    assert await worker.run_once() == PassResult()  # nothing left to do

    for order_id in (3, 4):
        response = await shop.client.get(f"/orders/{order_id}")
        assert response.json() == {"id": order_id, "item": "mug", "status": "confirmed"}
    assert sorted(await shop.confirmation_jobs(), key=lambda row: row[1]["order_id"]) == [
        (JobState.COMPLETED.value, {"order_id": 3}),
        (JobState.COMPLETED.value, {"order_id": 4}),
    ]


async def test_unknown_order_is_404(shop: Shop) -> None:
    assert (await shop.client.get("/orders/404")).status_code == 404
