"""Real Worker processes ride out database faults during a drain.

* Every backend of the test database is terminated (``pg_terminate_backend``)
  twice during a drain: the pooled connections mid-transaction or idle, and each
  Worker's LISTEN connection.
* The embedded PostgreSQL server the test owns is stopped and started again
  during a drain.

In both modes the workers log the errors, back off, reconnect and finish: no job
is lost, no redelivery comes while a lease is live, and in transaction mode none
is recorded twice. The workers stay alive throughout — the processes at the end
are the ones started (a crash loop would show up as fewer, or different, pids).
Afterwards every worker LISTENs again on exactly one connection, and a new
enqueue wakes an idle worker within 2 s although the heartbeat is 10 s.
"""

from __future__ import annotations

import random
from collections.abc import Iterator

import pytest
from sqlalchemy import Engine, create_engine

from programma_sa._embedded import EmbeddedPostgres

from . import worker_process
from .conftest import Figures
from .drain import (
    DrainReport,
    Fault,
    assert_nothing_lost,
    restart_server,
    run_drain,
    terminate_every_backend,
    worker_db_errors,
)
from .scale import Scale

pytestmark = pytest.mark.reliability

LEASE_SECONDS = 2
HEARTBEAT_SECONDS = 10.0
#: A wake-up by NOTIFY takes milliseconds; without LISTEN it would take up to a heartbeat.
PICKUP_LIMIT_SECONDS = 2.0
WAKE_PROBES = 3
RESTART_DOWNTIME_SECONDS = 1.0


def _drain_through(
    engine: Engine, url: str, mode: str, scale: Scale, faults: list[Fault], rng: random.Random
) -> DrainReport:
    topic = f"faults-{mode}"
    report = run_drain(
        engine,
        topic=topic,
        jobs=scale.fault_jobs,
        argv=worker_process.command(
            url,
            topic,
            mode=mode,
            concurrency=scale.fault_concurrency,
            heartbeat=HEARTBEAT_SECONDS,
        ),
        workers=scale.fault_workers,
        faults=faults,
        retry_after_seconds=LEASE_SECONDS,
        rng=rng,
        wake_probes=WAKE_PROBES,
    )
    verdict = report.verdict
    assert verdict is not None
    assert_nothing_lost(report)
    assert not verdict.early_redeliveries, verdict.early_redeliveries[:5]
    if mode == "transaction":
        assert not verdict.redelivered
        assert not verdict.completed_twice
    # No crash loop: the very processes started are alive at the end (and then
    # stop gracefully on SIGTERM).
    assert report.final_pids == report.started_pids
    # A new enqueue wakes an idle worker: LISTEN is back.
    assert len(report.pickups) == WAKE_PROBES
    assert max(report.pickups) < PICKUP_LIMIT_SECONDS, report.pickups
    # The first fault cut every worker's LISTEN connection; a later one may find a
    # listener still reconnecting after the one before. Each listener came back: its
    # first connection, and one after each loss.
    least_losses = scale.fault_workers + len(faults) - 1
    assert report.counters["listener_losses"] >= least_losses
    assert report.counters["listener_connects"] >= scale.fault_workers + least_losses
    return report


def _figures(report: DrainReport) -> dict[str, object]:
    assert report.verdict is not None
    return {
        "worker_db_errors": worker_db_errors(report),
        "listener_reconnects": report.counters["listener_connects"] - len(report.started_pids),
        "redelivered": len(report.verdict.redelivered),
        "early_redeliveries": len(report.verdict.early_redeliveries),
        "duplicates_completed": len(report.verdict.completed_twice),
        "lost": len(report.verdict.lost),
        "pids_kept": report.final_pids == report.started_pids,
        "max_pickup_ms": round(max(report.pickups) * 1000),
        "seconds": round(report.seconds, 1),
    }


@pytest.mark.parametrize("mode", worker_process.MODES)
def test_workers_ride_out_terminated_backends(
    private_engine: Engine,
    private_database_url: str,
    scale: Scale,
    mode: str,
    rng: random.Random,
    figures: Figures,
) -> None:
    terminate = terminate_every_backend(private_database_url)
    report = _drain_through(
        private_engine, private_database_url, mode, scale, [terminate, terminate], rng
    )
    assert report.counters["terminations"] == 2
    # Every worker's listener at the first termination; at the second, a listener may
    # still be between connections (reconnecting after the first), so the killer can
    # find fewer. That every listener was cut each time is asserted from the workers'
    # side (listener_losses, in _drain_through).
    assert report.counters["backends"] >= scale.fault_workers + 1
    figures.add(
        f"pg_terminate_backend x2, {mode} mode (Worker)",
        jobs=scale.fault_jobs,
        workers=f"{scale.fault_workers}x{scale.fault_concurrency}",
        backends_terminated=report.counters["backends"],
        **_figures(report),
    )


@pytest.fixture
def owned_engine(owned_database_url: str) -> Iterator[Engine]:
    engine = create_engine(owned_database_url, pool_pre_ping=True)
    yield engine
    engine.dispose()


@pytest.mark.parametrize("mode", worker_process.MODES)
def test_workers_ride_out_a_server_restart(
    owned_postgres: EmbeddedPostgres,
    owned_database_url: str,
    owned_engine: Engine,
    scale: Scale,
    mode: str,
    rng: random.Random,
    figures: Figures,
) -> None:
    report = _drain_through(
        owned_engine,
        owned_database_url,
        mode,
        scale,
        [restart_server(owned_postgres, RESTART_DOWNTIME_SECONDS)],
        rng,
    )
    assert report.counters["restarts"] == 1
    # The loop (or a pass, or a ledger write) met the dead server and backed off.
    assert worker_db_errors(report) >= 1
    figures.add(
        f"embedded server restart, {mode} mode (Worker)",
        jobs=scale.fault_jobs,
        workers=f"{scale.fault_workers}x{scale.fault_concurrency}",
        downtime_s=RESTART_DOWNTIME_SECONDS,
        **_figures(report),
    )
