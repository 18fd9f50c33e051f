"""SIGKILL real Worker processes mid-drain: nothing lost, nothing redelivered early.

A random worker (seeded) is killed ``crash_kills`` times at random points of a
drain, and a new process is started in its place each time, as a supervisor
would.

* Lease mode (visibility timeout 2 s): the victim is killed while it holds a
  recorded, unfinished delivery. Its jobs stay ACTIVE until their lease runs
  out, then another worker takes them. Every job is completed; every redelivery
  is claimed at or after the previous lease's end, by the database's clock.
* Transaction mode: the server rolls the victim's transactions back, so its jobs
  are free at once and every job is recorded exactly once — and claimed exactly
  once as far as the jobs table's ``attempts`` can tell, since a rolled-back
  claim leaves no count.

In both, the survivors and the replacements are the processes alive at the end,
and each stops gracefully on SIGTERM.
"""

from __future__ import annotations

import random

import pytest
from sqlalchemy import Engine

from . import worker_process
from .conftest import Figures
from .drain import (
    DrainReport,
    assert_nothing_lost,
    redelivered_jobs,
    run_drain,
    sigkill_a_worker,
)
from .scale import Scale

pytestmark = pytest.mark.reliability

LEASE_SECONDS = 2


def _drain_with_kills(
    engine: Engine, url: str, mode: str, scale: Scale, rng: random.Random
) -> DrainReport:
    topic = f"crash-{mode}"
    report = run_drain(
        engine,
        topic=topic,
        jobs=scale.crash_jobs,
        argv=worker_process.command(url, topic, mode=mode, concurrency=scale.crash_concurrency),
        workers=scale.crash_workers,
        faults=[
            sigkill_a_worker(rng, wait_for_delivery=mode == "lease")
            for _ in range(scale.crash_kills)
        ],
        retry_after_seconds=LEASE_SECONDS,
        rng=rng,
    )
    assert report.counters["kills"] == scale.crash_kills
    # Only the victims died: as many processes as at the start, none of the victims.
    assert len(report.final_pids) == scale.crash_workers
    return report


def test_sigkill_in_lease_mode_redelivers_only_after_the_lease(
    private_engine: Engine,
    private_database_url: str,
    scale: Scale,
    rng: random.Random,
    figures: Figures,
) -> None:
    report = _drain_with_kills(private_engine, private_database_url, "lease", scale, rng)
    verdict = report.verdict
    assert verdict is not None

    assert_nothing_lost(report)
    assert not verdict.early_redeliveries, verdict.early_redeliveries[:5]
    # The kills really struck mid-delivery, and those jobs were delivered again.
    assert report.counters["stranded"] >= 1
    assert len(verdict.redelivered) >= report.counters["stranded"]
    # Claimed-but-not-started jobs of a victim come back too (no ledger row for
    # their first claim): the jobs table counts every claim.
    assert redelivered_jobs(report) >= len(verdict.redelivered)

    figures.add(
        "SIGKILL, lease mode (Worker)",
        jobs=scale.crash_jobs,
        workers=f"{scale.crash_workers}x{scale.crash_concurrency}",
        lease_s=LEASE_SECONDS,
        kills=report.counters["kills"],
        stranded_at_kill=report.counters["stranded"],
        redelivered=len(verdict.redelivered),
        reclaimed=redelivered_jobs(report),
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
    assert verdict is not None

    assert_nothing_lost(report)
    assert not verdict.redelivered  # a killed transaction leaves no trace
    assert verdict.deliveries == scale.crash_jobs
    assert report.attempts == {1: scale.crash_jobs}

    figures.add(
        "SIGKILL, transaction mode (Worker)",
        jobs=scale.crash_jobs,
        workers=f"{scale.crash_workers}x{scale.crash_concurrency}",
        kills=report.counters["kills"],
        duplicates=len(verdict.redelivered),
        lost=len(verdict.lost),
        seconds=round(report.seconds, 1),
    )
