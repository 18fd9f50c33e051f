"""The harness: workloads, fresh databases, medians, ratios, the table and the JSON.

A :class:`Workload` is one measured thing (say "enqueue one job per transaction
through the library"). Its ``run`` function gets a :class:`RunContext`, creates a
fresh database of its own with :meth:`RunContext.database`, does its untimed setup,
times only the work, and returns one number per :class:`Metric`. The runner calls
every selected workload once per round, for three rounds (so a burst of noise from
other processes on the machine hits one round of many workloads rather than every
round of one), and reports the median of the rounds with its spread, and its ratio
to the workload named as its ``baseline`` — measured in the same invocation, on the
same server.
"""

from __future__ import annotations

import json
import math
import os
import platform
import statistics
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Engine, create_engine
from sqlalchemy.engine import make_url

from programma_sa import migrations
from programma_sa.testing import fresh_database

from .app import ORDERS, Base

__all__ = [
    "CLAIM_MS",
    "JOBS_PER_S",
    "LATENCY_MS",
    "Database",
    "Figure",
    "Metric",
    "Report",
    "RunContext",
    "Sizes",
    "Workload",
    "jobs_per_second",
    "latency_figures",
    "percentile",
]

DEFAULT_ADMIN_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
TOPIC = "bench"


@dataclass(frozen=True)
class Metric:
    """One number a workload reports; ``higher_is_better`` tells how to read its ratio."""

    name: str
    unit: str
    higher_is_better: bool


JOBS_PER_S = (Metric("jobs_per_s", "jobs/s", True),)
LATENCY_MS = (
    Metric("p50_ms", "ms", False),
    Metric("p95_ms", "ms", False),
    Metric("p99_ms", "ms", False),
)
CLAIM_MS = (Metric("claim_ms", "ms/claim", False),)


@dataclass(frozen=True)
class Sizes:
    """How much work each workload does; ``--quick`` swaps in :meth:`quick`."""

    single_enqueue: int = 2_000
    bulk_enqueue: int = 20_000
    drain: int = 20_000
    #: Batch-1 drains do two commits per job; they get fewer jobs so a round stays short.
    drain_batch1: int = 5_000
    #: Jobs each Worker process drains off the clock first, on a topic of its own.
    drain_warmup: int = 250
    latency_jobs: int = 200
    latency_interval_s: float = 0.020
    scale_finished: tuple[int, int] = (100_000, 1_000_000)
    scale_due: int = 2_000
    scale_claims: int = 1_000
    peer_single_enqueue: int = 1_000
    peer_drain: int = 20_000
    procrastinate_drain: int = 2_000

    @classmethod
    def quick(cls) -> Sizes:
        """Tiny sizes for the CI smoke run: every code path, no meaningful figure."""
        return cls(
            single_enqueue=20,
            bulk_enqueue=200,
            drain=200,
            drain_batch1=40,
            drain_warmup=20,
            latency_jobs=8,
            latency_interval_s=0.005,
            scale_finished=(500, 2_000),
            scale_due=40,
            scale_claims=20,
            peer_single_enqueue=20,
            peer_drain=200,
            procrastinate_drain=40,
        )


@dataclass(frozen=True)
class Database:
    """A fresh database for one run of one workload."""

    url: str

    @property
    def conninfo(self) -> str:
        """The libpq URI (``postgresql://…``) for raw psycopg, asyncpg and the peers."""
        return make_url(self.url).set(drivername="postgresql").render_as_string(hide_password=False)

    def engine(self, **kwargs: Any) -> Engine:
        return create_engine(self.url, **kwargs)


@dataclass(frozen=True)
class RunContext:
    """What a workload's ``run`` function gets: the server and the sizes."""

    admin_url: str
    sizes: Sizes

    @contextmanager
    def database(self, *, programma: bool = True) -> Iterator[Database]:
        """A new, empty database, dropped afterwards.

        With ``programma`` (the default) it is migrated with the shipped chain
        (``programma_sa.migrations.upgrade``) and gets the business table
        ``bench_orders``; peers ask for a bare one and install their own schema.
        """
        with fresh_database(self.admin_url, prefix="programma_bench") as url:
            if programma:
                migrations.upgrade(url)
                engine = create_engine(url)
                try:
                    Base.metadata.create_all(engine, tables=[Base.metadata.tables[ORDERS]])
                finally:
                    engine.dispose()
            yield Database(url)


RunFunction = Callable[[RunContext], dict[str, float]]


@dataclass(frozen=True)
class Workload:
    """One measured thing.

    ``baseline`` names the workload its ratio is taken against (run in the same
    invocation). ``requires`` names importable modules (a peer library and its
    driver) without which the workload is skipped. ``pending`` marks a slot whose
    implementation is a follow-up: it is listed, not run. ``params`` says, for the
    JSON, how much work one run does at the given sizes.
    """

    key: str
    title: str
    metrics: tuple[Metric, ...]
    run: RunFunction
    baseline: str | None = None
    requires: tuple[str, ...] = ()
    pending: str | None = None
    params: Callable[[Sizes], dict[str, Any]] = field(default=lambda sizes: {})

    @property
    def group(self) -> str:
        return self.key.split(".", 1)[0]


def jobs_per_second(jobs: int, seconds: float) -> dict[str, float]:
    return {"jobs_per_s": jobs / seconds}


def latency_figures(latencies_ms: Sequence[float]) -> dict[str, float]:
    """p50 / p95 / p99 of one run's pickup latencies (the ``LATENCY_MS`` metrics)."""
    return {
        "p50_ms": percentile(latencies_ms, 0.50),
        "p95_ms": percentile(latencies_ms, 0.95),
        "p99_ms": percentile(latencies_ms, 0.99),
    }


def percentile(values: Sequence[float], fraction: float) -> float:
    """The nearest-rank percentile (``fraction`` in 0..1) of ``values``."""
    ordered = sorted(values)
    rank = max(1, math.ceil(fraction * len(ordered)))
    return ordered[rank - 1]


@dataclass
class Figure:
    """The result of one metric of one workload over the rounds."""

    key: str
    workload: Workload
    metric: Metric
    status: str = "ok"
    note: str = ""
    runs: list[float] = field(default_factory=list)
    ratio: float | None = None

    @property
    def median(self) -> float | None:
        return statistics.median(self.runs) if self.runs else None

    @property
    def spread(self) -> float | None:
        """(max - min) / median of the rounds: how noisy this figure was."""
        median = self.median
        if median is None or median == 0 or len(self.runs) < 2:
            return None
        return (max(self.runs) - min(self.runs)) / median

    def as_json(self, sizes: Sizes) -> dict[str, Any]:
        return {
            "workload": self.workload.key,
            "title": self.workload.title,
            "metric": self.metric.name,
            "unit": self.metric.unit,
            "higher_is_better": self.metric.higher_is_better,
            "status": self.status,
            "note": self.note,
            "runs": self.runs,
            "median": self.median,
            "spread": self.spread,
            "baseline": (
                None
                if self.workload.baseline is None
                else f"{self.workload.baseline}.{self.metric.name}"
            ),
            "ratio": self.ratio,
            "params": self.workload.params(sizes),
        }


@dataclass
class Report:
    """Every figure of one invocation, in workload order."""

    figures: dict[str, Figure]
    sizes: Sizes
    rounds: int
    meta: dict[str, Any]

    def compute_ratios(self) -> None:
        for figure in self.figures.values():
            base_key = figure.workload.baseline
            if base_key is None or figure.median is None:
                continue
            base = self.figures.get(f"{base_key}.{figure.metric.name}")
            if base is not None and base.median:
                figure.ratio = figure.median / base.median

    def as_json(self) -> dict[str, Any]:
        return {
            "meta": self.meta,
            "rounds": self.rounds,
            "figures": {key: figure.as_json(self.sizes) for key, figure in self.figures.items()},
        }

    def write_json(self, path: str) -> None:
        with open(path, "w", encoding="utf-8") as out:
            json.dump(self.as_json(), out, indent=2, sort_keys=False)
            out.write("\n")

    def markdown(self) -> str:
        """One table per group: median, the rounds' range, the ratio to the baseline."""
        lines: list[str] = []
        group = None
        for figure in self.figures.values():
            if figure.workload.group != group:
                group = figure.workload.group
                lines += [
                    "",
                    f"### {group}",
                    "",
                    "| figure | median | rounds (min-max) | spread | ratio | vs |",
                    "|---|---:|---:|---:|---:|---|",
                ]
            lines.append(_row(figure))
        return "\n".join(lines).lstrip("\n") + "\n"


def _number(value: float) -> str:
    if abs(value) >= 100:
        return f"{value:,.0f}"
    if abs(value) >= 10:
        return f"{value:.1f}"
    return f"{value:.2f}"


def _row(figure: Figure) -> str:
    metric = figure.metric
    name = figure.workload.title
    if len(figure.workload.metrics) > 1:
        name = f"{name} — {metric.name.removesuffix('_ms')}"
    if figure.status != "ok" or figure.median is None:
        return f"| {name} | {figure.status}: {figure.note} | | | | |"
    median = f"{_number(figure.median)} {metric.unit}"
    spread_range = f"{_number(min(figure.runs))}-{_number(max(figure.runs))}"
    spread = "" if figure.spread is None else f"{figure.spread:.0%}"
    if figure.ratio is not None:
        better = "higher" if metric.higher_is_better else "lower"
        ratio = f"{figure.ratio:.2f}x"
        vs = f"{figure.workload.baseline} ({better} is better)"
    else:
        ratio = "baseline" if figure.workload.baseline is None else "n/a"
        vs = ""
    return f"| {name} | {median} | {spread_range} | {spread} | {ratio} | {vs} |"


def machine_meta() -> dict[str, Any]:
    """What the run happened on, and how busy the machine was when it started."""
    load = os.getloadavg()
    return {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "load_average_at_start": list(load),
        "started_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
