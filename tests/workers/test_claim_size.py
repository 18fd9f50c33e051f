"""The adaptive claim size (``max_jobs=None``, the default) against a real database.

Each pass's claim is read from the database's side: the jobs a pass moved out of
CREATED, and the rows left. Quick handlers make the claims larger; slow handlers
make them smaller. Runs on the sync Worker and on the AsyncWorker over both
asyncio drivers, in both modes (the size is decided once, in ``WorkerCore``).
"""

from __future__ import annotations

import pytest
from sqlalchemy import Engine, func, select
from sqlalchemy.orm import Session

from programma_sa import JobQueue, JobState

from ..app import Job
from .harness import Context, Harness, awaited, noop
from .support import enqueue

pytestmark = pytest.mark.asyncio

MODES = ["lease", "transaction"]


def _created(engine: Engine) -> int:
    """Jobs no claim has taken yet."""
    with Session(engine) as session:
        return session.scalar(
            select(func.count()).select_from(Job).where(Job.state == JobState.CREATED)
        )


async def _claim_sizes(harness: Harness, engine: Engine, worker: object, total: int) -> list[int]:
    """Run passes until every job is taken; each pass's claim, counted in the table."""
    sizes: list[int] = []
    left = total
    while left:
        result = await harness.run_once(worker)  # type: ignore[arg-type]
        now = _created(engine)
        assert result.claimed == left - now  # what the pass says it claimed, it took
        sizes.append(left - now)
        left = now
    return sizes


@pytest.mark.parametrize("mode", MODES)
async def test_quick_handlers_make_the_claims_larger(
    engine: Engine, queue: JobQueue, harness: Harness, mode: str
) -> None:
    """The first claim takes 10; full claims of quick jobs step up (20, 50, …)."""
    enqueue(engine, queue, n=300)
    worker = harness.worker(noop, mode=mode)

    sizes = await _claim_sizes(harness, engine, worker, 300)

    assert sizes[0] == 10
    assert max(sizes) >= 50, sizes
    # A size is a step of the series, or what was left of the queue (the last).
    assert set(sizes[:-1]) <= {1, 2, 5, 10, 20, 50, 100, 200, 500, 1000}, sizes


async def test_a_slow_handler_makes_the_claims_smaller(
    engine: Engine, queue: JobQueue, harness: Harness
) -> None:
    """10 jobs of 0.15 s take 1.5 s (or more: never less), over the 1 s a claim aims
    at: 6.7 jobs/s at best, so the next claim asks for 5 (the series' step at or
    below 6) — or fewer on a machine so loaded that the batch took over 2 s."""
    enqueue(engine, queue, n=20)

    async def slow(ctx: Context) -> None:
        await awaited(harness.sleep(0.15))

    worker = harness.worker(slow)
    first = await harness.run_once(worker)
    assert first.claimed == first.completed == 10
    assert _created(engine) == 10

    second = await harness.run_once(worker)
    assert second.claimed == second.completed
    assert second.claimed in (1, 2, 5)
    assert _created(engine) == 10 - second.claimed


async def test_an_explicit_max_jobs_keeps_a_fixed_size(
    engine: Engine, queue: JobQueue, harness: Harness
) -> None:
    enqueue(engine, queue, n=30)
    worker = harness.worker(noop, max_jobs=7)

    assert await _claim_sizes(harness, engine, worker, 30) == [7, 7, 7, 7, 2]
    assert worker.claim_size is None
