"""Pickup latency: an idle consumer, jobs enqueued one by one, time from commit to claim.

The raw baseline is psycopg ``LISTEN``/``NOTIFY`` (see ``baseline.pickup_latencies``):
200 jobs, 20 ms apart, each inserted with ``pg_notify`` in the same transaction;
the figure is the time from that commit returning to the listener's claim
returning the job, p50 / p95 / p99. The Worker's figures (with NOTIFY and with
polling only) are the follow-up slots in :mod:`.worker`, measured the same way.
"""

from __future__ import annotations

from .. import baseline
from ..harness import LATENCY_MS, TOPIC, RunContext, Sizes, Workload, latency_figures

RAW_LISTEN_NOTIFY = "latency.raw_listen_notify"


def raw_listen_notify(ctx: RunContext) -> dict[str, float]:
    sizes = ctx.sizes
    with ctx.database() as db:
        latencies = baseline.pickup_latencies(
            db.conninfo, TOPIC, sizes.latency_jobs, sizes.latency_interval_s
        )
    return latency_figures(latencies)


def params(sizes: Sizes) -> dict[str, object]:
    return {"jobs": sizes.latency_jobs, "interval_ms": sizes.latency_interval_s * 1000}


WORKLOADS = [
    Workload(
        RAW_LISTEN_NOTIFY,
        "raw psycopg LISTEN/NOTIFY, idle listener (baseline)",
        LATENCY_MS,
        raw_listen_notify,
        params=params,
    ),
]
