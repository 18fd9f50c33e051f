"""The ``deliveries`` ledger: what every claiming process was handed, and when.

A claiming process (the simple claim loop now, the real Worker later) writes one
row per job it receives, in the transaction of the claim, with the database's own
``claimed_at`` and ``lease_until`` (the job's ``started_at`` and ``start_after`` as the
claim returned them), and stamps ``completed_at`` in the transaction that moves the
job to done. The tests then judge the ledger with :func:`analyse`: which jobs were
lost, which were delivered twice, and whether a redelivery ever happened while the
previous lease was still live.
"""

from __future__ import annotations

import itertools
import uuid
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy import (
    BigInteger,
    Column,
    DateTime,
    Engine,
    Identity,
    Integer,
    MetaData,
    Table,
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
    Column("job_id", UUID(as_uuid=True), nullable=False, index=True),
    Column("worker_pid", Integer, nullable=False),
    Column("claimed_at", DateTime(timezone=True), nullable=False),
    Column("lease_until", DateTime(timezone=True), nullable=True),
    Column("completed_at", DateTime(timezone=True), nullable=True),
)


def create(engine: Engine) -> None:
    metadata.create_all(engine)


def record(session: Session, jobs: Sequence[ClaimedJob], worker_pid: int) -> list[int]:
    """Record the claim of ``jobs`` in the claim's own transaction; the ledger row ids."""
    if not jobs:
        return []
    rows = [
        {
            "job_id": job.id,
            "worker_pid": worker_pid,
            "claimed_at": job.started_at,
            "lease_until": job.start_after,
        }
        for job in jobs
    ]
    result = session.execute(
        insert(deliveries).returning(deliveries.c.id, sort_by_parameter_order=True), rows
    )
    return list(result.scalars())


def mark_completed(session: Session, delivery_id: int) -> None:
    """Stamp a delivery completed, in the transaction that moves its job to done."""
    session.execute(
        update(deliveries)
        .where(deliveries.c.id == delivery_id)
        .values(completed_at=func.statement_timestamp())
    )


@dataclass(frozen=True)
class Delivery:
    job_id: uuid.UUID
    worker_pid: int
    claimed_at: datetime
    lease_until: datetime | None
    completed_at: datetime | None


def read_all(engine: Engine) -> list[Delivery]:
    with engine.connect() as connection:
        rows = connection.execute(
            select(
                deliveries.c.job_id,
                deliveries.c.worker_pid,
                deliveries.c.claimed_at,
                deliveries.c.lease_until,
                deliveries.c.completed_at,
            ).order_by(deliveries.c.claimed_at, deliveries.c.id)
        )
        return [Delivery(*row) for row in rows]


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


def analyse(expected: Iterable[uuid.UUID], ledger: Sequence[Delivery]) -> Verdict:
    """Judge a drain: every expected job delivered and completed, no early redelivery."""
    expected = set(expected)
    by_job: dict[uuid.UUID, list[Delivery]] = defaultdict(list)
    for delivery in ledger:
        by_job[delivery.job_id].append(delivery)
    verdict = Verdict(jobs=len(expected), deliveries=len(ledger))
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
