"""The AsyncWorker's INFO line per finished job (the decision is the sync worker's)."""

from __future__ import annotations

import logging

import pytest
from sqlalchemy import Engine

from programma_sa import AsyncJobContext, JobQueue, PermanentFailure

from ..worker.test_job_log import enqueue_data, finished_lines
from .conftest import MakeAsyncWorker

pytestmark = pytest.mark.asyncio


async def _handler(ctx: AsyncJobContext) -> None:
    if ctx.job.data["do"] == "give up":
        raise PermanentFailure("no")


@pytest.mark.parametrize("mode", ["lease", "transaction"])
async def test_one_info_line_per_finished_job(
    engine: Engine,
    queue: JobQueue,
    make_worker: MakeAsyncWorker,
    caplog: pytest.LogCaptureFixture,
    mode: str,
) -> None:
    ok, give_up = enqueue_data(engine, queue, {"do": "ok"}, {"do": "give up"})

    with caplog.at_level(logging.INFO, logger="programma_sa.worker"):
        assert (await make_worker(_handler, mode=mode).run_once()).claimed == 2

    outcomes = {
        record.job_id: (record.outcome, record.error_type)  # type: ignore[attr-defined]
        for record in finished_lines(caplog)
    }
    assert outcomes == {
        str(ok): ("completed", None),
        str(give_up): ("failed", "programma_sa.exceptions.PermanentFailure"),
    }
