"""Every refused argument: the exact error, raised before anything is written.

Each test writes a business row first, makes the bad call, then checks that the
caller's transaction is still usable and holds the business row and no job.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from datetime import datetime
from typing import Any

import pytest
from sqlalchemy.orm import Session

from programma_sa import InvalidJobInput, JobQueue, JobSpec, PayloadTooLarge, ProgrammaError

from ..app import Job, Order
from ..helpers import job_count

BAD_ADD_JOB: list[tuple[dict[str, Any], str]] = [
    ({"topic": ""}, "topic must not be empty"),
    ({"topic": 42}, "topic must be a string, got int"),
    ({"topic": None}, "topic must be a string, got NoneType"),
    ({"topic": "a\x00b"}, "topic must not contain NUL characters"),
    ({"data": {"when": datetime(2020, 1, 1)}}, "data is not JSON-serialisable"),
    ({"data": {1, 2}}, "data is not JSON-serialisable"),
    ({"data": float("nan")}, "data is not JSON-serialisable"),
    ({"data": {"text": "nul\x00byte"}}, "data contains a NUL character"),
    ({"attributes": ["not", "a", "mapping"]}, "attributes must be a mapping, got list"),
    ({"attributes": {"obj": object()}}, "attributes is not JSON-serialisable"),
    ({"run_after_seconds": -1}, "run_after_seconds must not be negative, got -1"),
    ({"run_after_seconds": float("nan")}, "run_after_seconds must be finite, got nan"),
    ({"run_after_seconds": float("inf")}, "run_after_seconds must be finite, got inf"),
    ({"run_after_seconds": "10"}, "run_after_seconds must be a number of seconds, got '10'"),
    ({"run_after_seconds": True}, "run_after_seconds must be a number of seconds, got True"),
    ({"retry_after_seconds": -5}, "retry_after_seconds must not be negative, got -5"),
    ({"retry_after_seconds": float("inf")}, "retry_after_seconds must be finite, got inf"),
    ({"retry_after_seconds": 1.5}, "retry_after_seconds must be whole seconds, got 1.5"),
    ({"retry_after_seconds": 2**40}, "retry_after_seconds is too large"),
    ({"run_after_date": datetime(2030, 1, 1)}, "run_after_date must carry a time zone"),
    ({"run_after_date": "2030-01-01T00:00:00"}, "run_after_date must carry a time zone"),
    ({"run_after_date": "next tuesday"}, "run_after_date is not an ISO-8601 date: 'next tuesday'"),
    (
        {"run_after_date": 1700000000},
        "run_after_date must be an aware datetime or an ISO-8601 string",
    ),
]


@pytest.fixture
def session_with_order(session: Session) -> Session:
    session.add(Order(id=99, note="business write before the bad call"))
    session.flush()
    return session


def _assert_untouched(session: Session) -> None:
    assert job_count(session) == 0
    assert session.get(Order, 99) is not None
    session.flush()  # the transaction is still usable


@pytest.mark.parametrize(("override", "message"), BAD_ADD_JOB)
def test_add_job_refuses(
    queue: JobQueue, session_with_order: Session, override: dict[str, Any], message: str
) -> None:
    arguments: dict[str, Any] = {"topic": "t", "data": {"ok": True}, **override}
    topic, data = arguments.pop("topic"), arguments.pop("data")
    with pytest.raises(InvalidJobInput, match="^" + _escape(message)):
        queue.add_job(session_with_order, topic, data, **arguments)
    _assert_untouched(session_with_order)


def test_add_jobs_refuses_the_whole_batch_for_one_bad_spec(
    queue: JobQueue, session_with_order: Session
) -> None:
    specs = [JobSpec(data=1), JobSpec(data=2, run_after_seconds=-1), JobSpec(data=3)]
    with pytest.raises(
        InvalidJobInput, match=r"^job spec #1: run_after_seconds must not be negative"
    ):
        queue.add_jobs(session_with_order, "t", specs)
    _assert_untouched(session_with_order)


#: Malformed ``add_jobs`` specs (a regular expression for the message).
BAD_SPECS: list[tuple[object, str]] = [
    ({"data": 1, "colour": "red"}, r"job spec #0 has unknown keys \['colour'\]"),
    ({"attributes": {}}, "job spec #0 has no 'data'"),
    ("just a string", "job spec #0 must be a JobSpec or a mapping, got str"),
]


@pytest.mark.parametrize(("spec", "message"), BAD_SPECS)
def test_add_jobs_refuses_malformed_specs(
    queue: JobQueue, session_with_order: Session, spec: object, message: str
) -> None:
    with pytest.raises(InvalidJobInput, match=message):
        queue.add_jobs(session_with_order, "t", [spec])  # type: ignore[list-item]
    _assert_untouched(session_with_order)


def test_payload_over_the_limit_is_refused(session_with_order: Session) -> None:
    small = JobQueue(Job, max_payload_bytes=100)
    with pytest.raises(
        PayloadTooLarge, match=r"^data is 1\d\d bytes as JSON; the limit is 100 bytes"
    ):
        small.add_job(session_with_order, "t", "x" * 120)
    with pytest.raises(PayloadTooLarge, match=r"^attributes is"):
        small.add_job(session_with_order, "t", {}, attributes={"k": "y" * 200})
    _assert_untouched(session_with_order)


BAD_JOB_IDS: list[tuple[object, str]] = [
    ("not-a-uuid", "job id is not a UUID: 'not-a-uuid'"),
    ("", "job id is not a UUID: ''"),
    (12345, "job id must be a UUID or a string, got int"),
    (None, "job id must be a UUID or a string, got NoneType"),
]
#: The queue methods that take just ``(session, job_id)``.
JOB_ID_CALLS = [
    "move_job_to_processing",
    "move_job_to_done",
    "move_job_to_failed",
    "delete_job",
    "get_job",
]


@pytest.mark.parametrize(("job_id", "message"), BAD_JOB_IDS)
@pytest.mark.parametrize("call", JOB_ID_CALLS)
def test_malformed_job_id_is_refused(
    queue: JobQueue, session_with_order: Session, call: str, job_id: object, message: str
) -> None:
    with pytest.raises(InvalidJobInput, match="^" + _escape(message)):
        getattr(queue, call)(session_with_order, job_id)
    _assert_untouched(session_with_order)


#: ``(queue, session, job_id) -> call`` with a bad value; the asyncio suite awaits
#: the same calls on an ``AsyncJobQueue``.
BAD_SETTER_CALLS: list[tuple[Callable[[Any, Any, Any], Any], str]] = [
    (lambda q, s, i: q.set_attributes(s, i, ["x"]), "attributes must be a mapping, got list"),
    (
        lambda q, s, i: q.set_retry_after_seconds(s, i, -1),
        "retry_after_seconds must not be negative",
    ),
    (lambda q, s, i: q.set_job_start_date(s, i, "soon"), "start_date is not an ISO-8601 date"),
    (
        lambda q, s, i: q.set_job_start_date(s, i, datetime(2030, 1, 1)),
        "start_date must carry a time zone",
    ),
]


@pytest.mark.parametrize(("call", "message"), BAD_SETTER_CALLS)
def test_setters_refuse_bad_values(queue: JobQueue, session: Session, call, message: str) -> None:  # type: ignore[no-untyped-def]
    job_id = queue.add_job(session, "t", {"v": 1})
    before = queue.get_job(session, job_id)
    with pytest.raises(InvalidJobInput, match=message):
        call(queue, session, job_id)
    assert queue.get_job(session, job_id) == before


BAD_MAX_JOBS: list[tuple[object, str]] = [
    (0, "max_jobs must be at least 1, got 0"),
    (-3, "max_jobs must be at least 1"),
    (1.5, "max_jobs must be an int"),
]


@pytest.mark.parametrize(("max_jobs", "message"), BAD_MAX_JOBS)
def test_claim_refuses_bad_max_jobs(
    queue: JobQueue, session: Session, max_jobs: object, message: str
) -> None:
    job_id = queue.add_job(session, "t", {})
    with pytest.raises(InvalidJobInput, match=message):
        queue.claim_jobs(session, "t", max_jobs=max_jobs)  # type: ignore[arg-type]
    job = queue.get_job(session, job_id)
    assert job is not None and job.attempts == 0


def test_every_error_is_a_programma_error_and_a_value_error() -> None:
    assert issubclass(InvalidJobInput, ProgrammaError)
    assert issubclass(InvalidJobInput, ValueError)
    assert issubclass(PayloadTooLarge, InvalidJobInput)


def test_a_well_formed_unknown_id_is_not_an_error(queue: JobQueue, session: Session) -> None:
    assert queue.get_job(session, str(uuid.uuid4()).upper()) is None


def _escape(message: str) -> str:
    import re

    return re.escape(message)
