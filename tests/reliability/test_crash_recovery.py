"""SIGKILL claiming processes mid-drain: nothing lost, nothing redelivered early.

The claiming processes are the simple :mod:`claim loop <.claim_loop>` on the core
queue API; the Worker-based version of these runs swaps only the argv.

* Lease mode (visibility timeout 2 s): a killed process's unfinished deliveries
  stay ACTIVE until their lease runs out, then another process takes them. Every
  job is completed; every redelivery is claimed at or after the previous lease's
  end, by the database's clock.
* Transaction mode: a killed process's transaction is rolled back by the server,
  so its jobs are free at once and every job is recorded exactly once.
"""

from __future__ import annotations

import random

import pytest
from sqlalchemy import Engine

from programma_sa import JobState

from . import claim_loop
from .conftest import Figures
from .drain import DrainReport, run_drain, sigkill_a_claiming_worker
from .scale import Scale

pytestmark = pytest.mark.reliability

LEASE_SECONDS = 2


def _drain_with_kills(
    engine: Engine, url: str, mode: str, scale: Scale, rng: random.Random
) -> DrainReport:
    topic = f"crash-{mode}"
    return run_drain(
        engine,
        topic=topic,
        jobs=scale.crash_jobs,
        argv=claim_loop.command(url, topic, mode=mode, concurrency=scale.crash_concurrency),
        workers=scale.crash_workers,
        faults=[
            sigkill_a_claiming_worker(rng, wait_for_delivery=mode == "lease")
            for _ in range(scale.crash_kills)
        ],
        retry_after_seconds=LEASE_SECONDS,
    )


def _assert_nothing_lost(report: DrainReport) -> None:
    verdict = report.verdict
    assert not verdict.lost, f"{len(verdict.lost)} jobs never completed"
    assert not verdict.strangers
    assert report.states == {JobState.COMPLETED.value: len(report.job_ids)}


def test_sigkill_in_lease_mode_redelivers_only_after_the_lease(
    private_engine: Engine,
    private_database_url: str,
    scale: Scale,
    rng: random.Random,
    figures: Figures,
) -> None:
    report = _drain_with_kills(private_engine, private_database_url, "lease", scale, rng)
    verdict = report.verdict

    _assert_nothing_lost(report)
    assert not verdict.early_redeliveries, verdict.early_redeliveries[:5]
    assert report.counters["kills"] == scale.crash_kills
    # The kills really struck mid-delivery, and those jobs were delivered again.
    assert report.counters["stranded"] >= 1
    assert len(verdict.redelivered) >= report.counters["stranded"]

    figures.add(
        "SIGKILL, lease mode",
        jobs=len(report.job_ids),
        workers=f"{scale.crash_workers}x{scale.crash_concurrency}",
        lease_s=LEASE_SECONDS,
        kills=report.counters["kills"],
        stranded_at_kill=report.counters["stranded"],
        redelivered=len(verdict.redelivered),
        early_redeliveries=len(verdict.early_redeliveries),
        completed_twice=len(verdict.completed_twice),
        lost=len(verdict.lost),
        seconds=round(report.seconds, 1),
    )


def test_sigkill_in_transaction_mode_records_every_job_exactly_once(
    private_engine: Engine,
    private_database_url: str,
    scale: Scale,
    rng: random.Random,
    figures: Figures,
) -> None:
    report = _drain_with_kills(private_engine, private_database_url, "transaction", scale, rng)
    verdict = report.verdict

    _assert_nothing_lost(report)
    assert not verdict.redelivered  # a killed transaction leaves no trace
    assert verdict.deliveries == len(report.job_ids)
    assert report.counters["kills"] == scale.crash_kills

    figures.add(
        "SIGKILL, transaction mode",
        jobs=len(report.job_ids),
        workers=f"{scale.crash_workers}x{scale.crash_concurrency}",
        kills=report.counters["kills"],
        duplicates=len(verdict.redelivered),
        lost=len(verdict.lost),
        seconds=round(report.seconds, 1),
    )
