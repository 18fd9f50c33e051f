"""The worker side: an ``AsyncWorker`` confirms the orders.

Transactional mode: the claim, the order's update and the job's completion commit
together. If confirming raises, the handler's writes roll back to its savepoint,
the error is recorded on the job and it is retried after a backoff; if the process
dies, the whole transaction rolls back and the job is claimable again at once.

Run it (after ``--setup``) until Ctrl-C / SIGTERM::

    python -m examples.fastapi_app.processing

or through the command line, which runs an ``async def`` handler on an AsyncWorker::

    programma-sa worker examples.fastapi_app.processing:confirm_order \\
        --topic confirm-order --mode transaction
"""

from __future__ import annotations

import argparse
import asyncio
import os
from typing import Any

from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)

from programma_sa import AsyncJobContext, AsyncWorker, migrations

from .models import CONFIRM_ORDER, Base, Item, Order, queue


async def confirm_order(ctx: AsyncJobContext) -> None:
    """Confirm the job's order, in the claim's transaction (the worker completes the job)."""
    assert ctx.session is not None, "run in transaction mode"
    order = await ctx.session.get(Order, ctx.job.data["order_id"])
    if order is not None:
        order.status = "confirmed"


def confirmation_worker(sessions: async_sessionmaker[AsyncSession], **settings: Any) -> AsyncWorker:
    """The worker of ``confirm-order`` jobs; ``settings`` are further AsyncWorker settings."""
    return AsyncWorker(
        queue, sessions, CONFIRM_ORDER, confirm_order, mode="transaction", **settings
    )


async def setup_database(engine: AsyncEngine) -> None:
    """Apply programma's migrations (the jobs table) and create the shop's tables.

    The jobs table belongs to programma's migration chain; ``create_all`` is told to
    leave it alone.
    """
    async with engine.begin() as connection:
        await connection.run_sync(lambda sync: migrations.upgrade(connection=sync))
        shop_tables = [Base.metadata.tables[model.__tablename__] for model in (Item, Order)]
        await connection.run_sync(Base.metadata.create_all, tables=shop_tables)


async def stock_items(sessions: async_sessionmaker[AsyncSession], **in_stock: int) -> None:
    """Set the stock of each item (``book=10``), adding the items that are new."""
    async with sessions.begin() as session:
        for sku, count in in_stock.items():
            await session.merge(Item(sku=sku, in_stock=count))


async def _main(setup: bool) -> None:
    engine = create_async_engine(os.environ["DATABASE_URL"])
    try:
        if setup:
            await setup_database(engine)
            await stock_items(async_sessionmaker(engine), book=10, pen=10, mug=10)
        else:
            worker = confirmation_worker(async_sessionmaker(engine))
            print(f"stopped: {await worker.run(install_signal_handlers=True)}")
    finally:
        await engine.dispose()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--setup", action="store_true", help="create the tables, stock a few items and exit"
    )
    asyncio.run(_main(parser.parse_args().setup))
