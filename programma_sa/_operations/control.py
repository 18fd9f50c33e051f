"""Control of jobs in flight, as checked operations (no I/O): cancel, re-run, list,
pause and resume.

Like :mod:`.jobs`, every method checks its arguments first (raising
:class:`~programma_sa.InvalidJobInput` naming the bad one, before anything is sent)
and returns an :class:`~programma_sa._operations.Operation` that the faces and the
CLI execute. A listing or a re-run by filter names a statement *family*: the shape
of the call (:class:`~programma_sa._drivers.base.JobsShape`, which criteria it
gives) picks the statement, so each criterion given is one the planner can serve
from an index.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any, TypedDict

from sqlalchemy import Result, Table

from .. import _validation as check
from .._drivers.base import JobsShape
from .._job_records import CancelOutcome, JobDetail, JobPage, PausedTopic
from ..exceptions import InvalidJobInput, JobNotFound
from ..models import RERUNNABLE_STATES, JobState
from . import Operation

__all__ = [
    "DEFAULT_PAGE_SIZE",
    "DEFAULT_RERUN_LIMIT",
    "MAX_PAGE_SIZE",
    "MAX_RERUN_LIMIT",
    "ControlOperations",
    "JobCriteria",
    "ListCriteria",
    "RerunCriteria",
]

#: Jobs per page of a listing by default, and at most.
DEFAULT_PAGE_SIZE = 100
MAX_PAGE_SIZE = 1000
#: Jobs one re-run by filter takes at most by default, and the ceiling of ``limit``.
DEFAULT_RERUN_LIMIT = 1000
MAX_RERUN_LIMIT = 10_000


def _state(value: object, allowed: Sequence[str], what: str) -> str:
    """One state: a :class:`JobState` or its value, among ``allowed``."""
    name = value.value if isinstance(value, JobState) else value
    if not isinstance(name, str) or name not in allowed:
        raise InvalidJobInput(f"{what} must be one of {', '.join(allowed)}; got {value!r}")
    return name


def _states(value: object, allowed: Sequence[str], what: str) -> tuple[str, ...]:
    """One state or several, de-duplicated, in the order of ``allowed``."""
    values = [value] if isinstance(value, (str, JobState)) else value
    if not isinstance(values, Sequence) or isinstance(values, bytes) or not values:
        raise InvalidJobInput(
            f"{what} must be a state or a non-empty list of states; got {value!r}"
        )
    chosen = {_state(item, allowed, what) for item in values}
    return tuple(state for state in allowed if state in chosen)


def _limit(value: object, ceiling: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= ceiling:
        raise InvalidJobInput(f"limit must be an int from 1 to {ceiling}; got {value!r}")
    return value


def _window(
    after: datetime | str | None, before: datetime | str | None, what: str
) -> dict[str, datetime]:
    """The bounds given of one time window (``<what>_after`` inclusive, ``_before``
    exclusive), checked; an empty window is refused."""
    bounds = {
        f"{what}_{side}": check.start_date(moment, f"{what}_{side}")
        for side, moment in (("after", after), ("before", before))
        if moment is not None
    }
    if len(bounds) == 2 and bounds[f"{what}_after"] >= bounds[f"{what}_before"]:
        raise InvalidJobInput(
            f"{what}_after ({bounds[f'{what}_after'].isoformat()}) must be earlier than "
            f"{what}_before ({bounds[f'{what}_before'].isoformat()})"
        )
    return bounds


States = JobState | str | Sequence[JobState | str]
Moment = datetime | str


class RerunCriteria(TypedDict, total=False):
    """The criteria of :meth:`JobQueue.retry_jobs <programma_sa.JobQueue.retry_jobs>`
    (the keywords of both faces): a job is re-run when it matches every one given."""

    topic: str
    state: States
    finished_after: Moment
    finished_before: Moment
    error_type: str
    attributes: Mapping[str, Any]


class ListCriteria(RerunCriteria, total=False):
    """The criteria of :meth:`JobQueue.list_jobs <programma_sa.JobQueue.list_jobs>`."""

    created_after: Moment
    created_before: Moment


@dataclass(frozen=True)
class JobCriteria:
    """The criteria of a listing or of a re-run by filter, unchecked (as the caller
    gave them); :meth:`ControlOperations.list_jobs` and ``rerun_jobs`` check them."""

    topic: str | None = None
    state: JobState | str | Sequence[JobState | str] | None = None
    created_after: datetime | str | None = None
    created_before: datetime | str | None = None
    finished_after: datetime | str | None = None
    finished_before: datetime | str | None = None
    error_type: str | None = None
    attributes: Mapping[str, Any] | None = None


def _read_cancel(job_id: uuid.UUID) -> Any:
    def read(result: Result[Any]) -> CancelOutcome:
        row = result.mappings().one_or_none()
        if row is None:
            raise JobNotFound(f"no job with id {job_id}")
        if row["cancelled"]:
            return CancelOutcome.CANCELLED
        if row["state"] is None:  # held by another transaction: not waited for
            return CancelOutcome.REQUESTED
        return CancelOutcome.ALREADY_FINISHED

    return read


def _read_rerun(job_id: uuid.UUID) -> Any:
    def read(result: Result[Any]) -> None:
        row = result.mappings().one_or_none()
        if row is None:
            raise JobNotFound(f"no job with id {job_id}")
        if row["id"] is None:
            raise InvalidJobInput(
                f"job {job_id} is {row['state']}; only failed or cancelled jobs can be re-run"
            )

    return read


def _changed(result: Result[Any]) -> bool:
    return result.first() is not None


def _ids(result: Result[Any]) -> list[uuid.UUID]:
    return list(result.scalars().all())


def _paused(result: Result[Any]) -> list[PausedTopic]:
    return [PausedTopic(row.topic, row.paused_at) for row in result]


class ControlOperations:
    """Builds the control :class:`Operation` objects of one jobs table."""

    def __init__(self, table: Table, *, max_payload_bytes: int) -> None:
        self.table = table
        self.max_payload_bytes = max_payload_bytes

    # -- one job ---------------------------------------------------------------------

    def cancel_job(self, job_id: uuid.UUID | str) -> Operation[CancelOutcome]:
        checked = check.job_id(job_id)
        return Operation(self.table, "cancel_job", {"p_job_id": checked}, _read_cancel(checked))

    def retry_job(self, job_id: uuid.UUID | str) -> Operation[None]:
        checked = check.job_id(job_id)
        return Operation(self.table, "rerun_job", {"p_job_id": checked}, _read_rerun(checked))

    # -- many jobs by criteria --------------------------------------------------------

    def _criteria(
        self, criteria: JobCriteria, states: tuple[str, ...] | None
    ) -> tuple[JobsShape, dict[str, Any]]:
        """The shape and parameters of ``criteria`` (``states`` already checked)."""
        params: dict[str, Any] = {}
        if criteria.topic is not None:
            params["p_topic"] = check.check_topic(criteria.topic)
        for what in ("created", "finished"):
            bounds = _window(
                getattr(criteria, f"{what}_after"), getattr(criteria, f"{what}_before"), what
            )
            params.update({f"p_{name}": moment for name, moment in bounds.items()})
        if criteria.error_type is not None:
            if not isinstance(criteria.error_type, str) or not criteria.error_type:
                raise InvalidJobInput(
                    f"error_type must be a non-empty string; got {criteria.error_type!r}"
                )
            params["p_error_type"] = criteria.error_type
        if criteria.attributes is not None:
            params["p_attributes"] = check.attributes_text(
                criteria.attributes, self.max_payload_bytes
            )
        shape = JobsShape(
            states=states,
            **{name: f"p_{name}" in params for name in _OPTIONAL_CRITERIA},
        )
        return shape, params

    def list_jobs(
        self,
        criteria: JobCriteria,
        *,
        cursor: uuid.UUID | str | None,
        limit: int,
    ) -> Operation[JobPage]:
        """A page of the jobs matching ``criteria``, newest first, after ``cursor``."""
        states = (
            None
            if criteria.state is None
            else _states(criteria.state, [state.value for state in JobState], "state")
        )
        shape, params = self._criteria(criteria, states)
        page_size = _limit(limit, MAX_PAGE_SIZE)
        if cursor is not None:
            if not isinstance(cursor, (uuid.UUID, str)):
                raise InvalidJobInput(f"cursor must be a job id; got {cursor!r}")
            try:
                params["p_cursor"] = check.job_id(cursor)
            except InvalidJobInput:
                raise InvalidJobInput(f"cursor must be a job id; got {cursor!r}") from None
            shape = replace(shape, cursor=True)
        # One row more than the page: whether a next page exists, without a count.
        params["p_limit"] = page_size + 1

        def read(result: Result[Any]) -> JobPage:
            jobs = [JobDetail.from_row(row) for row in result.mappings()]
            more = len(jobs) > page_size
            del jobs[page_size:]
            return JobPage(jobs, jobs[-1].id if more else None)

        return Operation(self.table, "list_jobs", params, read, variant=shape)

    def retry_jobs(self, criteria: JobCriteria, *, limit: int) -> Operation[list[uuid.UUID]]:
        """Re-run up to ``limit`` failed (or cancelled) jobs matching ``criteria``."""
        if criteria.created_after is not None or criteria.created_before is not None:
            raise InvalidJobInput(
                "a re-run selects by finished_after / finished_before, not by creation time"
            )
        states = _states(
            JobState.FAILED if criteria.state is None else criteria.state,
            RERUNNABLE_STATES,
            "state",
        )
        shape, params = self._criteria(criteria, states)
        params["p_limit"] = _limit(limit, MAX_RERUN_LIMIT)
        return Operation(self.table, "rerun_jobs", params, _ids, variant=shape)

    # -- topics ----------------------------------------------------------------------

    def pause_topic(self, topic: str) -> Operation[bool]:
        return Operation(self.table, "pause_topic", {"p_topic": check.check_topic(topic)}, _changed)

    def resume_topic(self, topic: str) -> Operation[bool]:
        return Operation(
            self.table, "resume_topic", {"p_topic": check.check_topic(topic)}, _changed
        )

    def paused_topics(self) -> Operation[list[PausedTopic]]:
        return Operation(self.table, "paused_topics", {}, _paused)


#: The criteria other than the states, each a flag of :class:`JobsShape`.
_OPTIONAL_CRITERIA = (
    "topic",
    "created_after",
    "created_before",
    "finished_after",
    "finished_before",
    "error_type",
    "attributes",
)
