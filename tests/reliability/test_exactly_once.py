"""Exactly once within the window: real Worker processes drain a topic, no faults.

Several ``Worker`` processes (each with ``concurrency`` handler threads, LISTEN
on) drain one topic; every handler records its delivery in the ledger.

* Transaction mode: every job recorded exactly once — the ledger row commits with
  the job's completion, so a second row would be a second completed run.
* Lease mode, with a lease far longer than the drain: no job delivered twice at
  all, so in particular none while its lease was live.

The jobs table agrees independently: every job COMPLETED after exactly one claim
(``attempts`` = 1). Every process took a share, none logged an error, and each
stopped gracefully on SIGTERM.
"""

from __future__ import annotations

import pytest
from sqlalchemy import Engine

from . import worker_process
from .conftest import Figures
from .drain import assert_nothing_lost, run_drain, worker_db_errors
from .scale import Scale

pytestmark = pytest.mark.reliability

#: Far longer than any drain here: a redelivery could only be a broken promise.
LEASE_SECONDS = 3_600


@pytest.mark.parametrize("mode", worker_process.MODES)
def test_every_job_is_delivered_exactly_once(
    private_engine: Engine, private_database_url: str, scale: Scale, mode: str, figures: Figures
) -> None:
    topic = f"exactly-once-{mode}"
    report = run_drain(
        private_engine,
        topic=topic,
        jobs=scale.exact_jobs,
        argv=worker_process.command(
            private_database_url, topic, mode=mode, concurrency=scale.exact_concurrency
        ),
        workers=scale.exact_workers,
        retry_after_seconds=LEASE_SECONDS,
    )
    verdict = report.verdict
    assert verdict is not None

    assert_nothing_lost(report)
    assert verdict.deliveries == scale.exact_jobs
    assert not verdict.redelivered
    assert not verdict.early_redeliveries
    assert not verdict.completed_twice
    assert report.attempts == {1: scale.exact_jobs}
    # Every process took part, and all of them are the ones started.
    assert set(verdict.per_worker) == set(report.started_pids)
    assert report.final_pids == report.started_pids
    assert worker_db_errors(report) == 0
    assert report.counters["tracebacks"] == 0

    figures.add(
        f"exactly once, {mode} mode (Worker)",
        jobs=scale.exact_jobs,
        workers=f"{scale.exact_workers}x{scale.exact_concurrency}",
        deliveries=verdict.deliveries,
        per_worker=sorted(verdict.per_worker.values()),
        duplicates=len(verdict.redelivered),
        early_redeliveries=len(verdict.early_redeliveries),
        lost=len(verdict.lost),
        seconds=round(report.seconds, 1),
    )
