"""The duty that runs periodic schedules: each fire time enqueues one job, with no leader.

Every worker given ``schedules`` runs a :class:`ScheduleDuty` between its claims. A
pass reads the database's clock, works out which fire times are due (on time, or
missed and caught up: see :mod:`programma_sa.schedules`) and inserts their jobs,
one statement per topic, with ``ON CONFLICT DO NOTHING`` on each job's unique key
``schedule:<name>:<fire time>`` held in every state: however many workers pass over
the same fire time, and whenever, exactly one of them inserts its job — the
database decides, no worker leads. Then the duty sleeps until the next fire time
(at most :attr:`ScheduleDuty.max_wait`), so an idle worker wakes for it.
"""

from __future__ import annotations

import logging
from collections.abc import Generator, Sequence
from datetime import datetime
from typing import Any

from .._error_text import first_line
from .._job_records import JobSpec
from .._operations.jobs import JobOperations
from ..exceptions import ConfigurationError, InvalidJobInput
from ..schedules import Schedule
from ..uniqueness import ALL_STATES
from .duties import Duty
from .steps import EachCommitted, Step, single

__all__ = ["ScheduleDuty"]

log = logging.getLogger("programma_sa.worker")


class ScheduleDuty(Duty[int]):
    """Enqueues the jobs of ``schedules``' fire times (a pass returns how many it inserted)."""

    #: Longest sleep between two passes (seconds), however far the next fire time.
    max_wait = 30.0
    #: Sleep after a pass that failed (the database was unreachable).
    retry_wait = 5.0
    #: Added to the sleep until a fire time: the host's clock, which times the sleep,
    #: may run a little ahead of the database's, which decides what is due.
    slack = 0.005

    def __init__(self, operations: JobOperations, schedules: Sequence[Schedule]) -> None:
        super().__init__(self.max_wait)
        self._operations = operations
        self.schedules = tuple(schedules)
        for schedule in self.schedules:
            # A job the queue would refuse (data over its max_payload_bytes) is refused
            # here, when the worker is built, not by every pass of its loop.
            try:
                operations.add_jobs_if_keys_free(schedule.topic, [_job(schedule, schedule.start)])
            except InvalidJobInput as error:
                raise ConfigurationError(f"schedule {schedule.name!r}: {error}") from error
        #: Per schedule, the database time of this worker's last pass that went
        #: through: fire times up to it are settled.
        self._horizons: dict[str, datetime] = {}
        self._next_in: float | None = None
        #: Jobs this worker's passes inserted so far.
        self.enqueued = 0

    def steps(self) -> Generator[Step, Any, int]:
        now: datetime = yield EachCommitted(single(self._operations.clock()))
        by_topic: dict[str, list[JobSpec]] = {}
        for schedule in self.schedules:
            for fire in self._due(schedule, now):
                by_topic.setdefault(schedule.topic, []).append(_job(schedule, fire))
        inserted = 0
        for topic, specs in by_topic.items():
            operation = self._operations.add_jobs_if_keys_free(topic, specs)
            assert operation is not None  # specs is never empty
            count: int = yield EachCommitted(single(operation))
            inserted += max(count, 0)  # -1: the driver did not say
        self._horizons = {schedule.name: now for schedule in self.schedules}
        upcoming = [schedule.next_after(now) for schedule in self.schedules]
        seconds = [(fire - now).total_seconds() for fire in upcoming if fire is not None]
        self._next_in = min([self.max_wait, *seconds]) + self.slack
        return inserted

    def _due(self, schedule: Schedule, now: datetime) -> list[datetime]:
        """The fire times this pass enqueues: those on time (within ``grace`` of
        ``now``) and after the last pass, and the latest ``catch_up`` of the missed
        ones — before ``grace``, and after the last pass when there was one."""
        horizon = self._horizons.get(schedule.name)
        cutoff = now - schedule.grace_period
        on_time = list(
            schedule.fire_times(cutoff if horizon is None else max(horizon, cutoff), now)
        )
        if horizon is not None and horizon >= cutoff:
            return on_time
        caught_up = schedule.latest(cutoff, schedule.catch_up, after=horizon)
        first_missed = None if horizon is None else schedule.next_after(horizon)
        if first_missed is not None and first_missed <= cutoff and first_missed not in caught_up:
            # This worker's passes failed for longer than grace (the database was
            # unreachable): fire times went by unseen.
            log.warning(
                "schedule %s: fire times from %s to %s were missed; %s",
                schedule.name,
                first_missed.isoformat(),
                cutoff.isoformat(),
                f"catching up the latest {len(caught_up)}" if caught_up else "skipping them",
            )
        return caught_up + on_time

    def finished(self, result: int | None, error: BaseException | None = None) -> None:
        if error is not None:
            self.schedule.ran(self.retry_wait)
            log.error(
                "enqueuing the jobs of periodic schedules failed (%s); trying again in %.0f s",
                first_line(error),
                self.retry_wait,
            )
            return
        self.schedule.ran(self._next_in)
        if result:
            self.enqueued += result
            log.info("enqueued %d scheduled jobs", result)


def _job(schedule: Schedule, fire: datetime) -> JobSpec:
    """The job of ``schedule``'s fire time: due then, holding its key in every state."""
    return JobSpec(
        data=schedule.data,
        attributes=schedule.attributes(fire),
        run_after_date=fire,
        retry_after_seconds=schedule.retry_after_seconds,
        priority=schedule.priority,
        unique_key=schedule.unique_key(fire),
        unique_states=ALL_STATES,
    )
