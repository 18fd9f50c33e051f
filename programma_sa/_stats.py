"""The records :func:`programma_sa.maintenance.stats` returns, and how they are read.

Every number is measured in one statement, so all of them describe one snapshot of
the table, and every age is measured against the database's clock at that moment
(``measured_at``), never the host's.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from ._drivers.base import STATS_COUNTS
from .models import JobState

__all__ = ["QueueStats", "TopicStats", "read_stats"]


@dataclass(frozen=True)
class TopicStats:
    """What one topic's jobs are doing.

    ``due`` counts the jobs a claim would take right now (CREATED or ACTIVE, due):
    it includes ``expired_leases``, the ACTIVE jobs whose visibility timeout ran out
    before their handler moved them on — most likely the handler or its worker
    crashed; the next claim delivers them again. PROCESSING jobs are never
    redelivered, so ``oldest_processing_seconds`` is the signal for jobs stuck there.
    """

    topic: str
    created: int = 0
    active: int = 0
    processing: int = 0
    completed: int = 0
    failed: int = 0
    #: CREATED or ACTIVE jobs whose ``start_after`` has passed.
    due: int = 0
    #: Queue lag: how long the oldest due job has been due (0.0 when none is).
    lag_seconds: float = 0.0
    #: ACTIVE jobs past their lease (``start_after`` has passed).
    expired_leases: int = 0
    #: Time since the claim of the oldest PROCESSING job (0.0 when none is).
    oldest_processing_seconds: float = 0.0
    #: Jobs that reached COMPLETED within the window.
    completed_recently: int = 0
    #: Jobs that reached FAILED within the window.
    failed_recently: int = 0
    #: CANCELLED jobs (revision programma_0005; last, so the older columns keep
    #: their places in the table the CLI prints).
    cancelled: int = 0
    #: Jobs that reached CANCELLED within the window.
    cancelled_recently: int = 0

    @property
    def counts(self) -> dict[JobState, int]:
        """The number of jobs in each state."""
        return {state: getattr(self, state.value) for state in JobState}


@dataclass(frozen=True)
class QueueStats:
    """Statistics of one jobs table, per topic (sorted by topic)."""

    #: The jobs table, schema-qualified when it has a schema.
    table: str
    #: The database's clock when the statistics were measured.
    measured_at: datetime
    #: The window of ``completed_recently`` / ``failed_recently``.
    window_seconds: float
    topics: tuple[TopicStats, ...] = field(default=())

    def topic(self, name: str) -> TopicStats:
        """The statistics of topic ``name``; zeros when it has no jobs."""
        for stats in self.topics:
            if stats.topic == name:
                return stats
        return TopicStats(name)


def _age(measured_at: datetime, since: datetime | None) -> float:
    return 0.0 if since is None else max(0.0, (measured_at - since).total_seconds())


def _earliest(first: datetime | None, second: datetime | None) -> datetime | None:
    return min((t for t in (first, second) if t is not None), default=None)


@dataclass
class _Totals:
    """One topic's rows of the stats statement, added up."""

    numbers: dict[str, int] = field(default_factory=lambda: dict.fromkeys(STATS_COUNTS, 0))
    oldest_due_at: datetime | None = None
    oldest_processing_at: datetime | None = None

    def add(self, row: Mapping[Any, Any]) -> None:
        for name in self.numbers:
            self.numbers[name] += row[name]
        self.oldest_due_at = _earliest(self.oldest_due_at, row["oldest_due_at"])
        self.oldest_processing_at = _earliest(
            self.oldest_processing_at, row["oldest_processing_at"]
        )

    def stats(self, topic: str, measured_at: datetime) -> TopicStats:
        n = self.numbers
        return TopicStats(
            topic=topic,
            created=n["created"],
            active=n["active"],
            processing=n["processing"],
            # The failed branch reads ix_<table>_failed; "finished" counts both states.
            completed=n["finished"] - n["failed"],
            failed=n["failed"],
            cancelled=n["cancelled"],
            due=n["due"],
            lag_seconds=_age(measured_at, self.oldest_due_at),
            expired_leases=n["expired_leases"],
            oldest_processing_seconds=_age(measured_at, self.oldest_processing_at),
            completed_recently=n["finished_recently"] - n["failed_recently"],
            failed_recently=n["failed_recently"],
            cancelled_recently=n["cancelled_recently"],
        )


def read_stats(
    rows: Iterable[Mapping[Any, Any]], table: str, window_seconds: float, topic: str | None
) -> QueueStats:
    """Add up the stats statement's rows (up to five per topic, one per branch).

    With ``topic`` given, the result holds exactly that topic — zeros when it has
    no jobs (an unknown topic is not an error).
    """
    measured_at: datetime | None = None
    totals: dict[str, _Totals] = {}
    for row in rows:
        measured_at = row["measured_at"]
        if row["topic"] is not None:  # the clock row of an empty result has none
            totals.setdefault(row["topic"], _Totals()).add(row)
    if measured_at is None:  # pragma: no cover - the statement always returns the clock row
        raise RuntimeError("the stats statement returned no rows")
    if topic is not None:
        totals.setdefault(topic, _Totals())
    return QueueStats(
        table=table,
        measured_at=measured_at,
        window_seconds=window_seconds,
        topics=tuple(totals[name].stats(name, measured_at) for name in sorted(totals)),
    )
