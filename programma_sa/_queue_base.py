"""What :class:`~programma_sa.JobQueue` and :class:`~programma_sa.AsyncJobQueue` share:
the jobs table, the queue's settings and the operations built from them."""

from __future__ import annotations

from sqlalchemy import Table

from ._operations.control import ControlOperations
from ._operations.jobs import JobOperations
from ._operations.maintenance import MaintenanceOperations
from ._validation import DEFAULT_MAX_PAYLOAD_BYTES
from .models import JobMixin, jobs_table

__all__ = ["QueueBase"]


class QueueBase:
    """The table and settings of a queue, and the (no-I/O) operations on them."""

    def __init__(
        self,
        model: type[JobMixin] | Table,
        *,
        notify: bool = True,
        max_payload_bytes: int = DEFAULT_MAX_PAYLOAD_BYTES,
    ) -> None:
        """
        :param model: the application's ``JobMixin`` model (or its ``Table``).
        :param notify: announce each enqueue with ``pg_notify`` so idle workers wake
            at once (delivered on commit, dropped on rollback).
        :param max_payload_bytes: largest JSON size accepted for ``data`` and for
            ``attributes``; larger ones raise :class:`PayloadTooLarge` before
            anything is written.
        """
        self.table = jobs_table(model)
        #: The operations this queue executes (what a worker executes too).
        self.operations = JobOperations(
            self.table, notify=notify, max_payload_bytes=max_payload_bytes
        )
        #: Cancel, re-run, list, pause and resume: the control operations.
        self.control_operations = ControlOperations(
            self.table, max_payload_bytes=self.operations.max_payload_bytes
        )
        #: The statistics and retention operations of the same table.
        self.maintenance_operations = MaintenanceOperations.for_table(self.table)

    @property
    def notify(self) -> bool:
        """Whether each enqueue wakes idle workers with a notification."""
        return self.operations.notify

    @property
    def max_payload_bytes(self) -> int:
        """The largest JSON size accepted for a job's ``data`` and ``attributes``."""
        return self.operations.max_payload_bytes
