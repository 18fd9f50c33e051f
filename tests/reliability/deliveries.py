"""The ``deliveries`` ledger: what every worker process was handed, and when.

The handler of :mod:`worker_process <tests.reliability.worker_process>` writes one
row per delivery it runs, with the database's own ``claimed_at`` and ``lease_until``
(the job's ``started_at`` and ``start_after`` as the claim returned them) and the
delivery's ``attempt``:

* transaction mode — :func:`record` with ``completed=True`` in the claim's own
  transaction (``ctx.session``), so the row commits with the job's completion or
  not at all;
* lease mode — :func:`record` in a short transaction of its own when the handler
  starts (so a delivery cut short by a crash stays visible), and
  :func:`mark_completed` in another when it returns.

The tests then judge the ledger with :func:`analyse`: which jobs were lost, which
were delivered twice, and whether a redelivery ever happened while the previous
lease was still live.
"""

from __future__ import annotations

import itertools
import uuid
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy import (
    BigInteger,
    Column,
    ColumnElement,
    DateTime,
    Engine,
    Identity,
    Integer,
    MetaData,
    Table,
    and_,
    exists,
    func,
    insert,
    select,
    update,
)
from sqlalchemy.dialects.postgresql import UUID
from sqlalchemy.orm import Session

from programma_sa import ClaimedJob

metadata = MetaData()

deliveries = Table(
    "reliability_deliveries",
    metadata,
    Column("id", BigInteger, Identity(), primary_key=True),
    # Indexed: every lease-mode completion stamp finds its delivery by job id, and
    # a 20,000-row ledger scanned per stamp would slow the drain it measures.
    Column("job_id", UUID(as_uuid=True), nullable=False, index=True),
    Column("attempt", Integer, nullable=False),
    Column("worker_pid", Integer, nullable=False),
    Column("claimed_at", DateTime(timezone=True), nullable=False),
    Column("lease_until", DateTime(timezone=True), nullable=True),
    Column("completed_at", DateTime(timezone=True), nullable=True),
)


def create(engine: Engine) -> None:
    metadata.create_all(engine)


def _this_delivery(job: ClaimedJob, worker_pid: int) -> ColumnElement[bool]:
    return and_(
        deliveries.c.job_id == job.id,
        deliveries.c.attempt == job.attempts,
        deliveries.c.worker_pid == worker_pid,
    )


def record(session: Session, job: ClaimedJob, worker_pid: int, *, completed: bool) -> None:
    """Record one delivery of ``job`` to ``worker_pid`` (``completed``: stamp it done too)."""
    session.execute(
        insert(deliveries).values(
            job_id=job.id,
            attempt=job.attempts,
            worker_pid=worker_pid,
            claimed_at=job.started_at,
            lease_until=job.start_after,
            completed_at=func.statement_timestamp() if completed else None,
        )
    )


def is_recorded(session: Session, job: ClaimedJob, worker_pid: int) -> bool:
    """Whether this delivery has a row already (a retried write whose commit did land)."""
    return bool(session.execute(select(exists().where(_this_delivery(job, worker_pid)))).scalar())


def mark_completed(session: Session, job: ClaimedJob, worker_pid: int) -> None:
    """Stamp this delivery completed (lease mode: its handler returned)."""
    session.execute(
        update(deliveries)
        .where(_this_delivery(job, worker_pid))
        .values(completed_at=func.statement_timestamp())
    )


@dataclass(frozen=True)
class Delivery:
    job_id: uuid.UUID
    attempt: int
    worker_pid: int
    claimed_at: datetime
    lease_until: datetime | None
    completed_at: datetime | None


def read_all(engine: Engine) -> list[Delivery]:
    with engine.connect() as connection:
        rows = connection.execute(
            select(
                deliveries.c.job_id,
                deliveries.c.attempt,
                deliveries.c.worker_pid,
                deliveries.c.claimed_at,
                deliveries.c.lease_until,
                deliveries.c.completed_at,
            ).order_by(deliveries.c.claimed_at, deliveries.c.id)
        )
        return [Delivery(*row) for row in rows]


def in_flight(engine: Engine) -> dict[int, int]:
    """Recorded, unfinished deliveries per worker pid."""
    with engine.connect() as connection:
        rows = connection.execute(
            select(deliveries.c.worker_pid, func.count())
            .where(deliveries.c.completed_at.is_(None))
            .group_by(deliveries.c.worker_pid)
        )
        return {pid: count for pid, count in rows}


@dataclass
class Verdict:
    """What the ledger says about one drain."""

    jobs: int
    deliveries: int
    #: Jobs never delivered, or delivered but never completed.
    lost: set[uuid.UUID] = field(default_factory=set)
    #: Jobs delivered more than once (allowed in lease mode once the lease expired).
    redelivered: set[uuid.UUID] = field(default_factory=set)
    #: Jobs completed more than once.
    completed_twice: set[uuid.UUID] = field(default_factory=set)
    #: (job, earlier delivery, later delivery) where the later claim came while the
    #: earlier lease was live: a broken promise.
    early_redeliveries: list[tuple[uuid.UUID, Delivery, Delivery]] = field(default_factory=list)
    #: Deliveries recorded for ids that are not among the expected jobs.
    strangers: set[uuid.UUID] = field(default_factory=set)
    #: Deliveries per worker pid.
    per_worker: Counter[int] = field(default_factory=Counter)


def analyse(expected: Iterable[uuid.UUID], ledger: Sequence[Delivery]) -> Verdict:
    """Judge a drain: every expected job delivered and completed, no early redelivery."""
    expected = set(expected)
    by_job: dict[uuid.UUID, list[Delivery]] = defaultdict(list)
    for delivery in ledger:
        by_job[delivery.job_id].append(delivery)
    verdict = Verdict(jobs=len(expected), deliveries=len(ledger))
    verdict.per_worker = Counter(delivery.worker_pid for delivery in ledger)
    verdict.strangers = set(by_job) - expected
    for job_id in expected:
        history = sorted(by_job.get(job_id, []), key=lambda d: d.claimed_at)
        completions = sum(1 for d in history if d.completed_at is not None)
        if completions == 0:
            verdict.lost.add(job_id)
        if completions > 1:
            verdict.completed_twice.add(job_id)
        if len(history) > 1:
            verdict.redelivered.add(job_id)
        for earlier, later in itertools.pairwise(history):
            # A lease without an end (retry_after_seconds=None) is never redelivered.
            if earlier.lease_until is None or later.claimed_at < earlier.lease_until:
                verdict.early_redeliveries.append((job_id, earlier, later))
    return verdict
