"""Queue statistics as Prometheus metric families, and their text exposition format.

Pure data and pure functions, without ``prometheus_client``: the CLI's ``--format
prometheus`` writes :func:`exposition` (for node_exporter's textfile collector, a
push gateway, or a look by eye), and :class:`programma_sa.prometheus.StatsCollector`
hands the very same families to ``prometheus_client`` — one definition of every
metric. All are gauges: each is a snapshot, and the finished counts fall when
retention prunes.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from .._stats import QueueStats
from ..models import JobState

__all__ = ["MetricFamily", "descriptions", "exposition", "metric_families", "up_family"]


@dataclass(frozen=True)
class MetricFamily:
    """One gauge: its name, help text, label names, and ``(label values, value)`` samples."""

    name: str
    documentation: str
    labels: tuple[str, ...]
    samples: tuple[tuple[tuple[str, ...], float], ...] = ()


Samples = Callable[[QueueStats], Iterator[tuple[tuple[str, ...], float]]]


def _by_topic(attribute: str) -> Samples:
    def samples(stats: QueueStats) -> Iterator[tuple[tuple[str, ...], float]]:
        for topic in stats.topics:
            yield (stats.table, topic.topic), float(getattr(topic, attribute))

    return samples


def _by_topic_and_state(states: tuple[JobState, ...], attribute: str) -> Samples:
    """``attribute`` names the TopicStats field, with ``{state}`` for the state's value."""

    def samples(stats: QueueStats) -> Iterator[tuple[tuple[str, ...], float]]:
        for topic in stats.topics:
            for state in states:
                value = getattr(topic, attribute.format(state=state.value))
                yield (stats.table, topic.topic, state.value), float(value)

    return samples


def _window(stats: QueueStats) -> Iterator[tuple[tuple[str, ...], float]]:
    yield (stats.table,), stats.window_seconds


_TOPIC = ("table", "topic")
_TOPIC_STATE = ("table", "topic", "state")

#: Every metric: name, help, labels, and how its samples come from a QueueStats.
_GAUGES: tuple[tuple[str, str, tuple[str, ...], Samples], ...] = (
    (
        "programma_jobs",
        "Jobs in each state.",
        _TOPIC_STATE,
        _by_topic_and_state(tuple(JobState), "{state}"),
    ),
    (
        "programma_jobs_due",
        "CREATED or ACTIVE jobs whose start_after has passed: what a claim would take now.",
        _TOPIC,
        _by_topic("due"),
    ),
    (
        "programma_queue_lag_seconds",
        "How long the oldest due job has been due (0 when none is).",
        _TOPIC,
        _by_topic("lag_seconds"),
    ),
    (
        "programma_jobs_lease_expired",
        "ACTIVE jobs past their visibility timeout: their handler most likely crashed; "
        "the next claim delivers them again.",
        _TOPIC,
        _by_topic("expired_leases"),
    ),
    (
        "programma_oldest_processing_seconds",
        "Time since the claim of the oldest PROCESSING job (0 when none is); "
        "PROCESSING jobs are never redelivered.",
        _TOPIC,
        _by_topic("oldest_processing_seconds"),
    ),
    (
        "programma_jobs_finished_recently",
        "Jobs that reached COMPLETED, FAILED or CANCELLED within the last "
        "programma_stats_window_seconds.",
        _TOPIC_STATE,
        _by_topic_and_state(
            (JobState.COMPLETED, JobState.FAILED, JobState.CANCELLED), "{state}_recently"
        ),
    ),
    (
        "programma_stats_window_seconds",
        "The window of programma_jobs_finished_recently.",
        ("table",),
        _window,
    ),
)

_UP = ("programma_stats_up", "1 when the statistics of the jobs table could be read, else 0.")


def metric_families(stats: QueueStats) -> list[MetricFamily]:
    """Every metric of ``stats``, one sample per topic (and state)."""
    return [
        MetricFamily(name, documentation, labels, tuple(samples(stats)))
        for name, documentation, labels, samples in _GAUGES
    ]


def descriptions() -> list[MetricFamily]:
    """Every metric :func:`metric_families` and :func:`up_family` give, without samples."""
    return [
        *(MetricFamily(name, documentation, labels) for name, documentation, labels, _ in _GAUGES),
        MetricFamily(*_UP, ("table",)),
    ]


def up_family(table: str, up: bool) -> MetricFamily:
    """``programma_stats_up``: 1 when the statistics could be read."""
    return MetricFamily(*_UP, ("table",), (((table,), 1.0 if up else 0.0),))


def _label_value(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _help(text: str) -> str:
    return text.replace("\\", "\\\\").replace("\n", "\\n")


def _number(value: float) -> str:
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    return str(int(value)) if value.is_integer() else repr(value)


def exposition(families: list[MetricFamily]) -> str:
    """The families in the Prometheus text exposition format (version 0.0.4)."""
    lines: list[str] = []
    for family in families:
        lines.append(f"# HELP {family.name} {_help(family.documentation)}")
        lines.append(f"# TYPE {family.name} gauge")
        for values, value in family.samples:
            labels = ",".join(
                f'{name}="{_label_value(label)}"'
                for name, label in zip(family.labels, values, strict=True)
            )
            lines.append(f"{family.name}{{{labels}}} {_number(value)}")
    return "\n".join(lines) + "\n"
