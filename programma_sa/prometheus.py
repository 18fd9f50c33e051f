"""A ``prometheus_client`` collector for queue statistics (extra ``programma-sa[prometheus]``).

::

    from prometheus_client import REGISTRY
    from programma_sa.prometheus import StatsCollector

    REGISTRY.register(StatsCollector(engine, queue))

Each scrape measures :func:`programma_sa.maintenance.stats` once, in a short
read-only session of its own, and exposes the metrics ``programma-sa stats
--format prometheus`` prints (same names, labels and help), plus
``programma_stats_up``: when the database cannot be read the scrape still succeeds
— the application's other metrics are not lost — with ``programma_stats_up 0`` and
the error logged.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator

from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector
from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from .exceptions import ProgrammaError
from .maintenance import DEFAULT_WINDOW_SECONDS, QueueLike, stats
from .maintenance._target import maintenance_operations
from .maintenance.metric_families import MetricFamily, descriptions, metric_families, up_family

__all__ = ["StatsCollector"]

logger = logging.getLogger("programma_sa.prometheus")


def _gauge(family: MetricFamily) -> GaugeMetricFamily:
    gauge = GaugeMetricFamily(family.name, family.documentation, labels=list(family.labels))
    for values, value in family.samples:
        gauge.add_metric(list(values), value)
    return gauge


class StatsCollector(Collector):
    """Reads the queue's statistics on every scrape, through ``sessions``.

    :param sessions: an ``Engine`` or a session factory.
    :param topic: only this topic; ``None``: every topic that has jobs.
    :param window_seconds: the window of ``programma_jobs_finished_recently``.
    """

    def __init__(
        self,
        sessions: Engine | Callable[[], Session],
        queue: QueueLike,
        *,
        topic: str | None = None,
        window_seconds: float = DEFAULT_WINDOW_SECONDS,
    ) -> None:
        self._sessions = sessionmaker(sessions) if isinstance(sessions, Engine) else sessions
        self._queue = queue
        operations = maintenance_operations(queue)
        self._table = operations.table.fullname
        # Building the operation checks topic and window now: a bad setting fails at
        # construction, not at every scrape.
        operations.stats(topic, window_seconds)
        self._topic = topic
        self._window_seconds = window_seconds

    def describe(self) -> Iterator[GaugeMetricFamily]:
        """The metrics, without reading the database (``register`` calls this)."""
        for family in descriptions():
            yield _gauge(family)

    def collect(self) -> Iterator[GaugeMetricFamily]:
        """Measure the statistics now and yield them as gauges."""
        try:
            # Closing the session rolls its read-only transaction back.
            with self._sessions() as session:
                snapshot = stats(
                    session, self._queue, self._topic, window_seconds=self._window_seconds
                )
        except ProgrammaError:
            logger.exception("could not read the statistics of %s", self._table)
            yield _gauge(up_family(self._table, False))
            return
        for family in metric_families(snapshot):
            yield _gauge(family)
        yield _gauge(up_family(self._table, True))
