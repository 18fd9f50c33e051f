"""The worker side, as a plain coroutine: claim confirmations and confirm the orders.

Transactional mode: the claim, the order's update and the job's completion commit
together; if confirming fails the transaction rolls back and the job is claimable
again at once. (programma_sa's ``AsyncWorker`` runs such a handler in a loop, woken by
LISTEN/NOTIFY; this function is the single pass.)
"""

from __future__ import annotations

import argparse
import asyncio
import os

from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)

from programma_sa import migrations

from .models import CONFIRM_ORDER, Base, Item, Order, queue


async def confirm_pending_orders(
    sessions: async_sessionmaker[AsyncSession], batch_size: int = 10
) -> int:
    """Confirm orders until no confirmation job is due; return how many were done."""
    done = 0
    while True:
        async with sessions.begin() as session:
            jobs = await queue.claim_jobs(session, CONFIRM_ORDER, max_jobs=batch_size)
            for job in jobs:
                order = await session.get(Order, job.data["order_id"])
                if order is not None:
                    order.status = "confirmed"
                await queue.move_job_to_done(session, job.id)
        if not jobs:
            return done
        done += len(jobs)


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
            count = await confirm_pending_orders(async_sessionmaker(engine))
            print(f"confirmed {count} order(s)")
    finally:
        await engine.dispose()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--setup", action="store_true", help="create the tables, stock a few items and exit"
    )
    asyncio.run(_main(parser.parse_args().setup))
