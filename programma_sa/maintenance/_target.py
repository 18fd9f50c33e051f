"""What the maintenance functions accept as "the queue", and its operations."""

from __future__ import annotations

from typing import TypeAlias

from sqlalchemy import Table

from .._operations.maintenance import MaintenanceOperations
from .._queue_base import QueueBase
from ..models import JobMixin, jobs_table

__all__ = ["QueueLike", "maintenance_operations"]

#: A queue (``JobQueue`` / ``AsyncJobQueue``), the ``JobMixin`` model, or its table.
QueueLike: TypeAlias = QueueBase | type[JobMixin] | Table


def maintenance_operations(queue: QueueLike) -> MaintenanceOperations:
    """The (cached) maintenance operations of the queue's jobs table."""
    if isinstance(queue, QueueBase):
        return queue.maintenance_operations
    return MaintenanceOperations.for_table(jobs_table(queue))
