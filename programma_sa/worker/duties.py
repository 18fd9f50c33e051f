"""Duties: periodic work the worker loop runs between its claims.

A duty is a schedule, a pass written as no-I/O steps (:meth:`Duty.steps`), and
what to note once a pass ran (:meth:`Duty.finished`). The loop asks each duty
whether it is due, drives its steps with the same driver that runs the claims, and
wakes from its idle wait in time for the next one; a failed pass is logged and
retried at the next interval, never stopping the loop.

Pruning (:class:`PruneDuty`) and periodic schedules
(:class:`~.schedules.ScheduleDuty`) are duties; lease renewal and the rescue of
stuck jobs belong here too.
"""

from __future__ import annotations

import logging
import math
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Generator
from typing import Any, Generic, TypeVar

from .._error_text import first_line
from .._retention import Retention
from ..maintenance._target import QueueLike, maintenance_operations
from ..maintenance.prune import DEFAULT_MAX_BATCHES, PruneResult, prune_pass
from .steps import Step

__all__ = ["Duty", "DutySchedule", "PruneDuty"]

log = logging.getLogger("programma_sa.worker")

R = TypeVar("R")


class DutySchedule:
    """When a duty runs next: at once, then at most every ``interval`` seconds.

    The host's monotonic clock is right here: this only spaces out passes of this
    process; what a pass does (which rows are expired …) is decided by the
    database's clock.
    """

    def __init__(self, interval: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.interval = interval
        self._clock = clock
        self._next_at = -math.inf

    def due(self) -> bool:
        return self._clock() >= self._next_at

    def ran(self, next_in: float | None = None) -> None:
        """A pass ran: the next one in ``next_in`` seconds (default: ``interval``)."""
        self._next_at = self._clock() + (self.interval if next_in is None else next_in)

    def seconds_left(self) -> float:
        return max(0.0, self._next_at - self._clock())


class Duty(ABC, Generic[R]):
    """Periodic work of a worker: a schedule, a pass as steps, and its bookkeeping."""

    def __init__(self, interval: float) -> None:
        self.schedule = DutySchedule(interval)

    @abstractmethod
    def steps(self) -> Generator[Step, Any, R]:
        """One pass, as steps for the worker's driver (no I/O here)."""

    @abstractmethod
    def finished(self, result: R | None, error: BaseException | None = None) -> None:
        """Note a pass: its ``result``, or the database ``error`` that ended it."""


class PruneDuty(Duty[PruneResult]):
    """Deletes expired finished jobs by a :class:`~programma_sa.Retention`: a
    :meth:`Pruner.run_once <programma_sa.Pruner.run_once>` every ``interval``
    seconds, so one worker at a time prunes across processes (the prune lock)."""

    def __init__(
        self, queue: QueueLike, retention: Retention, *, batch_size: int, interval: float
    ) -> None:
        super().__init__(interval)
        self._operations = maintenance_operations(queue)
        self.retention = retention
        self.batch_size = batch_size
        #: Finished jobs deleted so far.
        self.deleted = 0

    def steps(self) -> Generator[Step, Any, PruneResult]:
        return (
            yield from prune_pass(
                self._operations, self.retention, self.batch_size, DEFAULT_MAX_BATCHES
            )
        )

    def finished(self, result: PruneResult | None, error: BaseException | None = None) -> None:
        self.schedule.ran()
        if error is not None:
            log.error(
                "pruning finished jobs failed (%s); trying again in %.0f s",
                first_line(error),
                self.schedule.interval,
            )
        if result is not None:
            self.deleted += result.deleted
            if result.deleted:
                log.info("pruned %d finished jobs in %d batches", result.deleted, result.batches)
