"""The shared worker tests' ``harness`` fixture, on the asyncio flavours only."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
import pytest_asyncio
from sqlalchemy import Engine

from ..workers.harness import ASYNC_FLAVOURS, Harness, harnesses


@pytest_asyncio.fixture(params=ASYNC_FLAVOURS)
async def harness(
    request: pytest.FixtureRequest, database_url: str, engine: Engine
) -> AsyncIterator[Harness]:
    """An AsyncWorker harness per asyncio driver; ``engine`` empties the tables afterwards."""
    async with harnesses(database_url, engine) as make:
        yield make(request.param)
