"""Each queue operation as a validated ``(statement, parameters, reading)`` triple.

:class:`Operations` checks the caller's arguments (raising before anything is
sent) and pairs a statement from :mod:`._statements` with its parameters and with
the function that turns the driver's result into the value the API returns. The
sync and async queues only *execute* what it builds, so validation, SQL and result
handling each exist once.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, fields
from datetime import datetime
from typing import Any, Generic, TypeVar

from sqlalchemy import Executable, Result, Table

from . import _validation as check
from ._ids import uuid7
from ._records import ClaimedJob, JobDetail, JobSpec
from ._statements import Statements
from .exceptions import InvalidJobInput

__all__ = ["Operation", "Operations"]

T = TypeVar("T")

_SPEC_FIELDS = frozenset(field.name for field in fields(JobSpec))


@dataclass(frozen=True)
class Operation(Generic[T]):
    """A statement ready to execute, and how to read its result."""

    statement: Executable
    params: dict[str, Any]
    read: Callable[[Result[Any]], T]


def _changed_a_row(result: Result[Any]) -> bool:
    return bool(result.rowcount)  # type: ignore[attr-defined]  # CursorResult


def _claimed_jobs(result: Result[Any]) -> list[ClaimedJob]:
    # RETURNING has no order of its own; restore the claim's FIFO order.
    rows = sorted(result.mappings().all(), key=lambda row: (row["due_at"], row["id"]))
    return [JobDetail.from_row(row) for row in rows]


def _job_or_none(result: Result[Any]) -> JobDetail | None:
    row = result.mappings().one_or_none()
    return None if row is None else JobDetail.from_row(row)


def _discard(result: Result[Any]) -> None:
    result.close()


def _ids(result: Result[Any]) -> list[uuid.UUID]:
    return list(result.scalars())


def _optional_float(result: Result[Any]) -> float | None:
    value = result.scalar_one()
    return None if value is None else float(value)


@dataclass(frozen=True)
class _JobRow:
    id: uuid.UUID
    data: str
    attributes: str
    run_after_date: datetime | None
    run_after_seconds: float
    retry_after_seconds: int | None


class Operations:
    """Builds :class:`Operation` objects for one jobs table and one set of settings."""

    def __init__(self, table: Table, *, notify: bool, max_payload_bytes: int) -> None:
        self.statements = Statements.for_table(table)
        self.notify = notify
        self.max_payload_bytes = check.payload_limit(max_payload_bytes)

    # -- enqueue ---------------------------------------------------------------------

    def _job_row(
        self,
        data: Any,
        attributes: Mapping[str, Any] | None,
        run_after_seconds: float | None,
        run_after_date: datetime | str | None,
        retry_after_seconds: int | None,
    ) -> _JobRow:
        seconds = check.optional_seconds(run_after_seconds, "run_after_seconds")
        return _JobRow(
            id=uuid7(),
            data=check.json_text(data, "data", self.max_payload_bytes),
            attributes=check.attributes_text(
                {} if attributes is None else attributes, self.max_payload_bytes
            ),
            run_after_date=(
                None
                if run_after_date is None
                else check.start_date(run_after_date, "run_after_date")
            ),
            run_after_seconds=0.0 if seconds is None else seconds,
            retry_after_seconds=check.retry_seconds(retry_after_seconds),
        )

    def add_job(
        self,
        topic: str,
        data: Any,
        *,
        attributes: Mapping[str, Any] | None,
        run_after_seconds: float | None,
        run_after_date: datetime | str | None,
        retry_after_seconds: int | None,
    ) -> tuple[uuid.UUID, Operation[None]]:
        topic = check.check_topic(topic)
        row = self._job_row(
            data, attributes, run_after_seconds, run_after_date, retry_after_seconds
        )
        statement = self.statements.insert_one_notify if self.notify else self.statements.insert_one
        params = {
            "p_id": row.id,
            "p_topic": topic,
            "p_data": row.data,
            "p_attributes": row.attributes,
            "p_run_after_date": row.run_after_date,
            "p_run_after_seconds": row.run_after_seconds,
            "p_retry_after_seconds": row.retry_after_seconds,
        }
        return row.id, Operation(statement, params, _discard)

    def add_jobs(
        self, topic: str, specs: Iterable[JobSpec | Mapping[str, Any]]
    ) -> tuple[list[uuid.UUID], Operation[None] | None]:
        """Validate every spec first; ``None`` operation when there is nothing to add."""
        topic = check.check_topic(topic)
        rows = [self._spec_row(index, spec) for index, spec in enumerate(specs)]
        if not rows:
            return [], None
        statement = (
            self.statements.insert_many_notify if self.notify else self.statements.insert_many
        )
        params = {
            "p_topic": topic,
            "p_ids": [row.id for row in rows],
            "p_datas": [row.data for row in rows],
            "p_attributes": [row.attributes for row in rows],
            "p_run_after_dates": [row.run_after_date for row in rows],
            "p_run_after_seconds": [row.run_after_seconds for row in rows],
            "p_retry_after_seconds": [row.retry_after_seconds for row in rows],
        }
        return [row.id for row in rows], Operation(statement, params, _discard)

    def _spec_row(self, index: int, spec: JobSpec | Mapping[str, Any]) -> _JobRow:
        if isinstance(spec, Mapping):
            unknown = set(spec) - _SPEC_FIELDS
            if unknown:
                raise InvalidJobInput(
                    f"job spec #{index} has unknown keys {sorted(unknown)}; "
                    f"allowed: {sorted(_SPEC_FIELDS)}"
                )
            if "data" not in spec:
                raise InvalidJobInput(f"job spec #{index} has no 'data'")
            spec = JobSpec(**spec)
        elif not isinstance(spec, JobSpec):
            raise InvalidJobInput(
                f"job spec #{index} must be a JobSpec or a mapping, got {type(spec).__name__}"
            )
        try:
            return self._job_row(
                spec.data,
                spec.attributes,
                spec.run_after_seconds,
                spec.run_after_date,
                spec.retry_after_seconds,
            )
        except InvalidJobInput as error:
            raise type(error)(f"job spec #{index}: {error}") from error

    # -- claim -----------------------------------------------------------------------

    def claim_jobs(self, topic: str, max_jobs: int) -> Operation[list[ClaimedJob]]:
        params = {"p_topic": check.check_topic(topic), "p_max_jobs": check.check_max_jobs(max_jobs)}
        return Operation(self.statements.claim, params, _claimed_jobs)

    # -- one job, by id --------------------------------------------------------------

    def _by_id(
        self, statement: Executable, job_id: uuid.UUID | str, **params: Any
    ) -> Operation[bool]:
        return Operation(statement, {"p_job_id": check.job_id(job_id), **params}, _changed_a_row)

    def move_job_to_processing(self, job_id: uuid.UUID | str) -> Operation[bool]:
        return self._by_id(self.statements.move_to_processing, job_id)

    def move_job_to_done(self, job_id: uuid.UUID | str, delete: bool) -> Operation[bool]:
        finish = self.statements.delete_by_id if delete else self.statements.move_to_completed
        return self._by_id(finish, job_id)

    def move_job_to_failed(self, job_id: uuid.UUID | str, delete: bool) -> Operation[bool]:
        finish = self.statements.delete_by_id if delete else self.statements.move_to_failed
        return self._by_id(finish, job_id)

    def delete_job(self, job_id: uuid.UUID | str) -> Operation[bool]:
        return self._by_id(self.statements.delete_by_id, job_id)

    def set_attributes(
        self, job_id: uuid.UUID | str, attributes: Mapping[str, Any]
    ) -> Operation[bool]:
        text = check.attributes_text(attributes, self.max_payload_bytes)
        return self._by_id(self.statements.set_attributes, job_id, p_attributes=text)

    def set_retry_after_seconds(
        self, job_id: uuid.UUID | str, seconds: int | None
    ) -> Operation[bool]:
        return self._by_id(
            self.statements.set_retry_after_seconds,
            job_id,
            p_retry_after_seconds=check.retry_seconds(seconds),
        )

    def set_job_start_date(
        self, job_id: uuid.UUID | str, start_date: datetime | str
    ) -> Operation[bool]:
        return self._by_id(
            self.statements.set_start_after,
            job_id,
            p_start_after=check.start_date(start_date, "start_date"),
        )

    def get_job(self, job_id: uuid.UUID | str) -> Operation[JobDetail | None]:
        return Operation(
            self.statements.get_by_id, {"p_job_id": check.job_id(job_id)}, _job_or_none
        )

    # -- the worker's outcome writes (guarded: only a job still as its claim left it) --

    def complete_unchanged(self, jobs: Sequence[ClaimedJob]) -> Operation[list[uuid.UUID]]:
        """COMPLETE every job of ``jobs`` that is unchanged since its claim; returns their ids."""
        params = {
            "p_ids": [job.id for job in jobs],
            "p_attempts": [job.attempts for job in jobs],
            "p_start_afters": [job.start_after for job in jobs],
        }
        return Operation(self.statements.complete_unchanged, params, _ids)

    def _unchanged(
        self, statement: Executable, job: ClaimedJob, error: Mapping[str, Any], **params: Any
    ) -> Operation[bool]:
        return self._by_id(
            statement,
            job.id,
            p_attempts=job.attempts,
            p_start_after=job.start_after,
            p_attributes=check.attributes_text(error, self.max_payload_bytes),
            **params,
        )

    def retry_unchanged(
        self, job: ClaimedJob, delay: float | None, error: Mapping[str, Any]
    ) -> Operation[bool]:
        """Record ``error`` (merged into attributes) and make the job due in ``delay``
        seconds (``None``: keep the claim's visibility timeout)."""
        seconds = check.optional_seconds(delay, "delay")
        return self._unchanged(self.statements.retry_unchanged, job, error, p_delay=seconds)

    def fail_unchanged(self, job: ClaimedJob, error: Mapping[str, Any]) -> Operation[bool]:
        """Record ``error`` (merged into attributes) and move the job to FAILED."""
        return self._unchanged(self.statements.fail_unchanged, job, error)

    def seconds_until_due(self, topic: str) -> Operation[float | None]:
        """Seconds until ``topic``'s next claimable job is due (``None``: no such job)."""
        return Operation(
            self.statements.seconds_until_due,
            {"p_topic": check.check_topic(topic)},
            _optional_float,
        )
