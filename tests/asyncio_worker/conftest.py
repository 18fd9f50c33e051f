"""Fixtures for AsyncWorker tests: async engines over both drivers, workers stopped after each test.

Each test gets its own ``AsyncEngine`` (function scope, in the test's own event
loop), so no test depends on another's loop. The sync ``engine`` fixture empties
the tables afterwards and serves the tests' own reads and writes.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
import pytest_asyncio
from sqlalchemy import Engine
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from programma_sa import AsyncJobQueue, AsyncWorker

from ..app import Job
from ..asyncio.urls import DRIVERS, async_url

MakeAsyncWorker = Callable[..., AsyncWorker]


@pytest.fixture(params=DRIVERS)
def driver(request: pytest.FixtureRequest) -> str:
    driver: str = request.param
    return driver


@pytest_asyncio.fixture
async def async_engine(
    database_url: str, driver: str, engine: Engine
) -> AsyncIterator[AsyncEngine]:
    """An engine of ``driver``; ``engine`` (sync) truncates the tables after the test."""
    async_engine = create_async_engine(async_url(database_url, driver), pool_size=10)
    yield async_engine
    await async_engine.dispose()


@pytest.fixture
def aqueue() -> AsyncJobQueue:
    return AsyncJobQueue(Job)


@pytest_asyncio.fixture
async def make_worker(
    aqueue: AsyncJobQueue, async_engine: AsyncEngine
) -> AsyncIterator[MakeAsyncWorker]:
    """Build AsyncWorkers on the test database (lease mode, polling only unless asked)."""
    workers: list[AsyncWorker] = []

    def make(
        handler: Callable[..., Any],
        topics: object = "t",
        *,
        bind: object = async_engine,
        **settings: Any,
    ) -> AsyncWorker:
        settings.setdefault("listen", False)
        worker = AsyncWorker(aqueue, bind, topics, handler, **settings)  # type: ignore[arg-type]
        workers.append(worker)
        return worker

    yield make
    for worker in workers:
        worker.stop()
    for worker in workers:
        assert await worker.join(10), "a worker did not stop"
