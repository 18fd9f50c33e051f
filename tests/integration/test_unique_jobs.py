"""Unique jobs: one holder per key among the jobs in their unique_states; conflict policies."""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta, timezone

import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from programma_sa import (
    DuplicateJob,
    InvalidJobInput,
    JobQueue,
    JobSpec,
    JobState,
    jobs_table,
    unique_key,
)
from programma_sa.uniqueness import ALL_STATES

from ..app import Job

TABLE = jobs_table(Job)


def _rows(session: Session, key: str) -> list[tuple[uuid.UUID, object, str]]:
    return [
        (row.id, row.data, row.state)
        for row in session.execute(
            select(TABLE.c.id, TABLE.c.data, TABLE.c.state)
            .where(TABLE.c.unique_key == key)
            .order_by(TABLE.c.id)
        )
    ]


def test_keep_returns_the_holder_and_writes_nothing(queue: JobQueue, session: Session) -> None:
    first = queue.add_job(session, "t", {"v": 1}, unique_key="k")
    again = queue.add_job(session, "t", {"v": 2}, unique_key="k", on_conflict="keep")
    assert again == first
    assert _rows(session, "k") == [(first, {"v": 1}, "created")]
    job = queue.get_job(session, first)
    assert job is not None
    assert (job.unique_key, job.unique_states) == ("k", tuple(JobState)[:3])


def test_replace_updates_a_waiting_holder(queue: JobQueue, session: Session) -> None:
    first = queue.add_job(session, "t", {"v": 1}, unique_key="k", run_after_seconds=600)
    # Whole milliseconds: SQLite keeps times to the millisecond (docs/sqlite.md).
    later = (datetime.now(timezone.utc) + timedelta(days=1)).replace(microsecond=123000)
    again = queue.add_job(
        session,
        "t",
        {"v": 2},
        unique_key="k",
        on_conflict="replace",
        run_after_date=later,
        priority=3,
        attributes={"new": True},
        retry_after_seconds=5,
    )
    assert again == first
    job = queue.get_job(session, first)
    assert job is not None
    assert (job.data, job.priority, job.attributes, job.retry_after_seconds) == (
        {"v": 2},
        3,
        {"new": True},
        5,
    )
    assert job.start_after == later
    assert len(_rows(session, "k")) == 1


def test_replace_keeps_a_holder_already_claimed(queue: JobQueue, session: Session) -> None:
    first = queue.add_job(session, "t", {"v": 1}, unique_key="k")
    (claimed,) = queue.claim_jobs(session, "t")
    again = queue.add_job(session, "t", {"v": 2}, unique_key="k", on_conflict="replace")
    assert again == first == claimed.id
    job = queue.get_job(session, first)
    assert job is not None
    # Untouched: the worker's guarded outcome writes still match it.
    assert (job.data, job.state, job.attempts, job.start_after) == (
        {"v": 1},
        JobState.ACTIVE,
        1,
        claimed.start_after,
    )


@pytest.mark.databases(
    "postgresql",
    "mariadb",
    reason="PostgreSQL and MariaDB name the held key; SQLite does not (test_sqlite.py)",
)
def test_raise_refuses_the_insert_with_duplicate_job(queue: JobQueue, session: Session) -> None:
    queue.add_job(session, "t", {"v": 1}, unique_key="order-42")
    with (
        pytest.raises(
            DuplicateJob, match=r"^a job with unique key 'order-42' is already enqueued"
        ) as raised,
        session.begin_nested(),  # the refused INSERT aborts the (sub)transaction
    ):
        queue.add_job(session, "t", {"v": 2}, unique_key="order-42", on_conflict="raise")
    assert raised.value.unique_key == "order-42"
    assert "programma_jobs" in str(raised.value)
    assert len(_rows(session, "order-42")) == 1


def test_the_key_is_free_again_once_its_job_finished(queue: JobQueue, session: Session) -> None:
    first = queue.add_job(session, "t", {}, unique_key="k")
    queue.move_job_to_done(session, first)
    second = queue.add_job(session, "t", {}, unique_key="k")
    assert second != first
    queue.move_job_to_failed(session, second)
    third = queue.add_job(session, "t", {}, unique_key="k", on_conflict="raise")
    assert len({first, second, third}) == 3


def test_a_key_held_in_every_state_stays_taken_after_completion(
    queue: JobQueue, session: Session
) -> None:
    first = queue.add_job(session, "t", {}, unique_key="k", unique_states=ALL_STATES)
    queue.move_job_to_done(session, first)
    assert queue.add_job(session, "t", {}, unique_key="k") == first
    assert queue.add_job(session, "t", {}, unique_key="k", on_conflict="replace") == first


def test_a_key_held_while_waiting_only_frees_at_the_claim(
    queue: JobQueue, session: Session
) -> None:
    first = queue.add_job(session, "t", {}, unique_key="k", unique_states=["created"])
    assert queue.add_job(session, "t", {}, unique_key="k", unique_states=["created"]) == first
    queue.claim_jobs(session, "t")
    second = queue.add_job(session, "t", {}, unique_key="k", unique_states=["created"])
    assert second != first


@pytest.mark.databases(
    "postgresql",
    "mariadb",
    reason="PostgreSQL and MariaDB name the held key; SQLite does not (test_sqlite.py)",
)
def test_moving_a_finished_job_back_over_a_new_holder_is_duplicate_job(
    queue: JobQueue, session: Session
) -> None:
    first = queue.add_job(session, "t", {}, unique_key="k")
    queue.move_job_to_done(session, first)
    queue.add_job(session, "t", {}, unique_key="k")
    with pytest.raises(DuplicateJob) as raised, session.begin_nested():
        queue.move_job_to_processing(session, first)
    assert raised.value.unique_key == "k"


def test_a_batch_with_keep_maps_each_spec_to_the_holder_of_its_key(
    queue: JobQueue, session: Session
) -> None:
    held = queue.add_job(session, "t", "held", unique_key="k2")
    ids = queue.add_jobs(
        session,
        "t",
        [
            JobSpec("first", unique_key="k1"),
            JobSpec("second", unique_key="k1"),
            JobSpec("plain"),
            {"data": "new", "unique_key": "k2"},
        ],
    )
    assert ids[0] == ids[1] and ids[3] == held and len(set(ids)) == 3
    assert _rows(session, "k1") == [(ids[0], "first", "created")]
    assert _rows(session, "k2") == [(held, "held", "created")]
    assert session.execute(select(func.count()).select_from(TABLE)).scalar_one() == 3


def test_a_batch_with_replace_lets_its_last_spec_of_a_key_win(
    queue: JobQueue, session: Session
) -> None:
    held = queue.add_job(session, "t", "held", unique_key="k2")
    ids = queue.add_jobs(
        session,
        "t",
        [
            JobSpec("first", unique_key="k1"),
            JobSpec("second", unique_key="k1"),
            JobSpec("replacing", unique_key="k2"),
        ],
        on_conflict="replace",
    )
    assert ids[0] == ids[1] and ids[2] == held
    assert _rows(session, "k1") == [(ids[0], "second", "created")]
    assert _rows(session, "k2") == [(held, "replacing", "created")]


@pytest.mark.databases(
    "postgresql",
    "mariadb",
    reason="PostgreSQL and MariaDB name the held key; SQLite does not (test_sqlite.py)",
)
def test_a_batch_with_raise_is_refused_whole(queue: JobQueue, session: Session) -> None:
    with pytest.raises(DuplicateJob, match="'k1'"), session.begin_nested():
        queue.add_jobs(
            session,
            "t",
            [JobSpec("a"), JobSpec("b", unique_key="k1"), JobSpec("c", unique_key="k1")],
            on_conflict="raise",
        )
    assert session.execute(select(func.count()).select_from(TABLE)).scalar_one() == 0
    ids = queue.add_jobs(
        session,
        "t",
        [JobSpec("a", unique_key="x"), JobSpec("b", unique_key="y")],
        on_conflict="raise",
    )
    assert len(set(ids)) == 2


def _stored(queue: JobQueue, session: Session, ids: list[uuid.UUID]) -> list[tuple[object, ...]]:
    """What each job's settings became (start_after as minutes from now)."""
    now = datetime.now(timezone.utc)
    stored = []
    for job_id in ids:
        job = queue.get_job(session, job_id)
        assert job is not None and job.start_after is not None
        minutes = round((job.start_after - now).total_seconds() / 60)
        states = job.unique_states
        settings = (job.priority, job.attributes, job.retry_after_seconds, minutes)
        stored.append((job.unique_key, states, *settings))
    return stored


@pytest.mark.parametrize(
    "second",
    [
        pytest.param({"priority": 4}, id="shared settings, a priority each"),
        pytest.param({"priority": 4, "retry_after_seconds": 9}, id="settings of its own"),
        pytest.param({"priority": 4, "unique_states": ALL_STATES}, id="states of its own"),
    ],
)
def test_a_batch_stores_each_jobs_settings_whichever_way_they_travel(
    queue: JobQueue, session: Session, second: dict[str, object]
) -> None:
    """A batch whose jobs share every setting but their priority sends those once; a
    job with a setting of its own makes every row carry all of them. The rows
    stored are the same either way."""
    shared: dict[str, object] = {
        "attributes": {"a": 1},
        "run_after_seconds": 600,
        "retry_after_seconds": 45,
    }
    ids = queue.add_jobs(
        session,
        "t",
        [
            JobSpec("one", unique_key="k1", **shared),
            JobSpec("two", **{**shared, "unique_key": "k2", **second}),
        ],  # type: ignore[arg-type]
    )
    unfinished = tuple(JobState)[:3]
    assert _stored(queue, session, ids) == [
        ("k1", unfinished, 0, {"a": 1}, 45, 10),
        (
            "k2",
            tuple(second.get("unique_states", unfinished)),  # type: ignore[call-overload]
            4,
            {"a": 1},
            second.get("retry_after_seconds", 45),
            10,
        ),
    ]


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"unique_key": ""}, "unique_key must not be empty"),
        ({"unique_key": 7}, "unique_key must be a string, got int"),
        ({"unique_key": "a\x00b"}, "unique_key must not contain NUL characters"),
        ({"unique_key": "é" * 513}, "unique_key is 1026 bytes in UTF-8; the limit is 1024 bytes"),
        ({"unique_states": ["created"]}, "unique_states needs a unique_key"),
        (
            {"unique_key": "k", "unique_states": ["created", "done"]},
            "unique_states: 'done' is not a job state; the states are created, active, "
            "processing, completed, failed, cancelled",
        ),
        (
            {"unique_key": "k", "unique_states": "created"},
            "unique_states must be a collection of job states, got 'created'",
        ),
        (
            {"unique_key": "k", "unique_states": ["created", "completed"]},
            r"unique_states must include created and, with each state, the one before it "
            r"\(created → active → processing → completed \| failed \| cancelled\), so that a "
            r"job never "
            r"takes its key back once it left them; got \['completed', 'created'\], missing "
            r"processing \(before completed\)",
        ),
        (
            {"unique_key": "k", "unique_states": ["active"]},
            r"unique_states must include created .* got \['active'\], missing created "
            r"\(before active\)",
        ),
        (
            {"unique_key": "k", "unique_states": ["created", "active", "cancelled"]},
            r"unique_states must include created .* got \['active', 'cancelled', 'created'\], "
            r"missing processing \(before cancelled\)",
        ),
        (
            {"unique_key": "k", "on_conflict": "ignore"},
            "on_conflict must be one of keep, replace, raise, got 'ignore'",
        ),
    ],
)
def test_bad_uniqueness_is_refused_before_anything_is_written(
    queue: JobQueue, session: Session, options: dict[str, object], message: str
) -> None:
    with pytest.raises(InvalidJobInput, match=f"^{message}$"):
        queue.add_job(session, "t", {}, **options)  # type: ignore[arg-type]
    spec = {key: value for key, value in options.items() if key != "on_conflict"}
    on_conflict = options.get("on_conflict", "keep")
    prefix = "" if "on_conflict" in options else "job spec #0: "
    with pytest.raises(InvalidJobInput, match=f"^{prefix}{message}$"):
        queue.add_jobs(session, "t", [{"data": 1, **spec}], on_conflict=on_conflict)  # type: ignore[arg-type]
    assert session.execute(select(func.count()).select_from(TABLE)).scalar_one() == 0


def test_derived_keys_depend_on_the_chosen_fields_and_the_period() -> None:
    data = {"order": 42, "note": "hello"}
    key = unique_key("send-receipt", data, fields=["order"])
    assert key.startswith("send-receipt:") and len(key) == len("send-receipt:") + 32
    assert key == unique_key("send-receipt", {"note": "other", "order": 42}, fields=["order"])
    assert key != unique_key("send-receipt", {"order": 43}, fields=["order"])
    assert key != unique_key("other-task", data, fields=["order"])
    assert unique_key("t", {"a": 1, "b": 2}) == unique_key("t", {"b": 2, "a": 1})
    noon = datetime(2026, 12, 5, 12, 0, tzinfo=timezone.utc)
    hourly = unique_key("t", data, period=3600, at=noon)
    assert hourly == unique_key(
        "t", data, period=timedelta(hours=1), at=noon + timedelta(minutes=59)
    )
    assert hourly != unique_key("t", data, period=3600, at=noon + timedelta(hours=1))
    assert hourly != unique_key("t", data, period=3600, at=noon - timedelta(microseconds=1))


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: unique_key("", {}), "unique_key: name must be a non-empty string, got ''"),
        (
            lambda: unique_key("t", {"a": 1}, fields=["b"]),
            "unique_key: data has no field 'b'",
        ),
        (
            lambda: unique_key("t", [1], fields=["a"]),
            "unique_key: fields need data to be a mapping, got list",
        ),
        (
            lambda: unique_key("t", {}, fields="a"),
            "unique_key: fields must be a list of names, got 'a'",
        ),
        (
            lambda: unique_key("t", {}, period=0),
            "unique_key: period must be a positive number of seconds or a timedelta, got 0",
        ),
        (
            lambda: unique_key("t", {}, at=datetime(2026, 1, 1, tzinfo=timezone.utc)),
            "unique_key: at is only meaningful with a period",
        ),
        (
            lambda: unique_key("t", {"x": {1, 2}}),
            "unique_key: data is not JSON-serialisable: Object of type set is not JSON "
            "serializable",
        ),
    ],
)
def test_bad_key_derivation_is_refused(call: object, message: str) -> None:
    with pytest.raises(InvalidJobInput, match=f"^{message}$"):
        call()  # type: ignore[operator]
