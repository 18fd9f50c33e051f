"""The one INFO line per finished job: topic, id, attempt, handler time, outcome.

Every worker logs it (logger ``programma_sa.worker``) once the job's outcome is
written — in transaction mode once its pass has committed — with the same facts as
``extra`` fields for structured handlers::

    job 0192f7c4-… [send-receipt] attempt 1: completed in 12.4 ms
    job 0192f7c5-… [send-receipt] attempt 2: retried in 3.1 ms (TimeoutError)

``extra``: ``job_id``, ``topic``, ``attempt``, ``duration_ms`` (the handler's own
time), ``outcome`` (``completed``, ``retried``, ``failed``, ``cancelled``, ``lost``:
another worker had claimed the job again after its lease ran out, or ``untouched``:
the worker wrote nothing — the handler changed its job itself, ``auto_complete`` is
off, or the outcome could not be written) and ``error_type`` (the qualified name of
what the handler raised, or ``None``).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable

from .._job_records import ClaimedJob
from ..retry import error_type_name
from .results import PassResult

__all__ = ["JobLog", "outcome_name"]

log = logging.getLogger("programma_sa.worker")


def outcome_name(outcome: PassResult) -> str:
    """What a one-job :class:`PassResult` says happened to the job."""
    if outcome.completed:
        return "completed"
    if outcome.retried:
        return "retried"
    if outcome.failed:
        return "failed"
    if outcome.cancelled:
        return "cancelled"
    if outcome.lost:
        return "lost"
    return "untouched"


class JobLog:
    """How long each handler ran, kept until its job's outcome is written, then logged.

    A job is keyed by its id's integer (``UUID.int``: a UUID hashes in Python, an
    int in C) and its attempt (one delivery). The sync worker's handler threads
    record at once; each touches only its own key, and a dict's item assignment and
    ``pop`` are atomic, so no lock is needed. With INFO off for the logger (as in a
    drain that logs only warnings) nothing is timed nor kept: see :attr:`wanted`.
    """

    def __init__(self) -> None:
        self._seconds: dict[tuple[int, int], float] = {}

    @property
    def wanted(self) -> bool:
        """Whether job lines are logged (INFO), so handlers are worth timing."""
        return log.isEnabledFor(logging.INFO)

    def ran(self, job: ClaimedJob, seconds: float) -> None:
        """The handler of ``job`` ran for ``seconds``; its outcome is not written yet."""
        self._seconds[job.id.int, job.attempts] = seconds

    def forget(self, jobs: list[ClaimedJob]) -> None:
        """Drop the times of jobs that end without an outcome line (their pass was
        lost or its COMMIT failed: that is logged as a whole, once)."""
        for job in jobs:
            self._seconds.pop((job.id.int, job.attempts), None)

    def finished_all(self, jobs: Iterable[ClaimedJob], outcome: PassResult) -> None:
        """:meth:`finished` for each of ``jobs``, looked at once when there is nothing
        to log nor drop (a drain's completions come by the thousand)."""
        if self._seconds or log.isEnabledFor(logging.INFO):
            for job in jobs:
                self.finished(job, outcome)

    def finished(
        self, job: ClaimedJob, outcome: PassResult, error: BaseException | None = None
    ) -> None:
        """Log the line of ``job``, whose outcome has just been written."""
        if not log.isEnabledFor(logging.INFO):
            if self._seconds:  # timed while INFO was on
                self._seconds.pop((job.id.int, job.attempts), None)
            return
        seconds = self._seconds.pop((job.id.int, job.attempts), None)
        name = outcome_name(outcome)
        error_type = None if error is None else error_type_name(error)
        duration_ms = None if seconds is None else round(seconds * 1000, 3)
        log.info(
            "job %s [%s] attempt %d: %s in %s ms%s",
            job.id,
            job.topic,
            job.attempts,
            name,
            "?" if duration_ms is None else f"{duration_ms:.1f}",
            "" if error_type is None else f" ({error_type})",
            extra={
                "job_id": str(job.id),
                "topic": job.topic,
                "attempt": job.attempts,
                "duration_ms": duration_ms,
                "outcome": name,
                "error_type": error_type,
            },
        )
