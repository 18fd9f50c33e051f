"""The ``harness`` fixture: each shared worker test runs once per flavour of :data:`FLAVOURS`.

A test narrows the flavours with :func:`tests.workers.harness.on`; ``make_harness``
gives harnesses of any flavours, for a test that runs several workers of its own.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable

import pytest
import pytest_asyncio
from sqlalchemy import Engine

from .harness import FLAVOURS, Harness, harnesses


@pytest_asyncio.fixture
async def make_harness(
    database_url: str, engine: Engine
) -> AsyncIterator[Callable[[str], Harness]]:
    """Harnesses by flavour; ``engine`` (the tests' own) empties the tables after the test."""
    async with harnesses(database_url, engine) as make:
        yield make


@pytest.fixture(params=FLAVOURS)
def harness(request: pytest.FixtureRequest, make_harness: Callable[[str], Harness]) -> Harness:
    return make_harness(request.param)
