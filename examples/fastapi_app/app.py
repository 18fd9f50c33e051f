"""The HTTP side: one endpoint writes a business row and enqueues a job, atomically.

``create_app`` takes the ``AsyncEngine`` so tests (and applications with their own
settings) decide the URL and pool; ``app_from_env`` builds one from ``DATABASE_URL``
for ``uvicorn --factory``.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Annotated

from fastapi import Depends, FastAPI, HTTPException, Request
from pydantic import BaseModel
from sqlalchemy import update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)

from .models import CONFIRM_ORDER, Item, Order, queue


class NewOrder(BaseModel):
    id: int
    item: str


class OrderCreated(BaseModel):
    id: int
    job_id: uuid.UUID


class OrderStatus(BaseModel):
    id: int
    item: str
    status: str


class OutOfStock(Exception):
    """No unit of the item is left."""


async def reserve_one(session: AsyncSession, sku: str) -> bool:
    """Take one unit of ``sku`` from stock; ``False`` when none is left."""
    # One conditional UPDATE: its row lock makes concurrent orders for the last
    # unit queue up, and the second one then sees in_stock = 0 and reserves nothing.
    reserved = await session.execute(
        update(Item).where(Item.sku == sku, Item.in_stock > 0).values(in_stock=Item.in_stock - 1)
    )
    return bool(reserved.rowcount)  # type: ignore[attr-defined]  # CursorResult


async def get_session(request: Request) -> AsyncIterator[AsyncSession]:
    sessions: async_sessionmaker[AsyncSession] = request.app.state.sessions
    async with sessions() as session:
        yield session


SessionDep = Annotated[AsyncSession, Depends(get_session)]


def create_app(engine: AsyncEngine) -> FastAPI:
    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        yield
        await engine.dispose()

    app = FastAPI(title="programma_sa shop example", lifespan=lifespan)
    app.state.sessions = async_sessionmaker(engine, expire_on_commit=False)

    @app.post("/orders", status_code=201)
    async def create_order(order: NewOrder, session: SessionDep) -> OrderCreated:
        try:
            # One transaction: the order, its confirmation job and the stock
            # reservation commit together, or none of them does.
            async with session.begin():
                session.add(Order(id=order.id, item=order.item))
                # Autoflush writes the order first: a duplicate id fails right here.
                job_id = await queue.add_job(session, CONFIRM_ORDER, {"order_id": order.id})
                if not await reserve_one(session, order.item):
                    # Raising inside the block rolls back the order *and* the job
                    # already enqueued: no confirmation for an order that was refused.
                    raise OutOfStock(order.item)
        except IntegrityError:
            raise HTTPException(status_code=409, detail=f"order {order.id} exists") from None
        except OutOfStock as refused:
            raise HTTPException(status_code=409, detail=f"{refused} is out of stock") from None
        return OrderCreated(id=order.id, job_id=job_id)

    @app.get("/orders/{order_id}")
    async def read_order(order_id: int, session: SessionDep) -> OrderStatus:
        order = await session.get(Order, order_id)
        if order is None:
            raise HTTPException(status_code=404, detail=f"no order {order_id}")
        return OrderStatus(id=order.id, item=order.item, status=order.status)

    return app


def app_from_env() -> FastAPI:
    """``uvicorn --factory examples.fastapi_app.app:app_from_env`` (reads ``DATABASE_URL``)."""
    return create_app(create_async_engine(os.environ["DATABASE_URL"]))
