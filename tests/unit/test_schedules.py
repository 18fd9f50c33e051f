"""Schedules without a database: cron and interval arithmetic, DST, and the duty's
decisions with the database's clock injected (the reply to its clock step)."""

from __future__ import annotations

import json
import logging
from datetime import datetime, timedelta, timezone
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from programma_sa import ConfigurationError, Schedule, WorkerSettings
from programma_sa._operations.jobs import JobOperations
from programma_sa.worker.schedules import ScheduleDuty
from programma_sa.worker.steps import EachCommitted

from ..app import Job

UTC = timezone.utc
BERLIN = ZoneInfo("Europe/Berlin")
NEW_YORK = ZoneInfo("America/New_York")


def utc(*parts: int) -> datetime:
    return datetime(*parts, tzinfo=UTC)  # type: ignore[misc]


def local(zone: ZoneInfo, *parts: int, fold: int = 0) -> datetime:
    return datetime(*parts, tzinfo=zone, fold=fold)  # type: ignore[misc]


# -- cron ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("cron", "after", "expected"),
    [
        (
            "*/15 * * * *",
            utc(2026, 1, 1, 10, 7),
            [utc(2026, 1, 1, 10, 15), utc(2026, 1, 1, 10, 30)],
        ),
        ("0 9-17/4 * * *", utc(2026, 1, 1, 10), [utc(2026, 1, 1, 13), utc(2026, 1, 1, 17)]),
        ("5,35 3 * * *", utc(2026, 1, 1, 3, 5), [utc(2026, 1, 1, 3, 35), utc(2026, 1, 2, 3, 5)]),
        # Mon-Fri by name; 2026-01-02 is a Friday.
        ("0 8 * * mon-fri", utc(2026, 1, 2, 9), [utc(2026, 1, 5, 8), utc(2026, 1, 6, 8)]),
        # Sunday is 0 and 7.
        ("0 0 * * 7", utc(2026, 1, 1), [utc(2026, 1, 4), utc(2026, 1, 11)]),
        ("0 0 * * 0", utc(2026, 1, 1), [utc(2026, 1, 4), utc(2026, 1, 11)]),
        # Day of month and day of week both restricted: either fires (the 13th, or Fridays).
        ("0 0 13 * fri", utc(2026, 1, 5), [utc(2026, 1, 9), utc(2026, 1, 13)]),
        ("0 0 1 jan,jul *", utc(2026, 1, 1), [utc(2026, 7, 1), utc(2027, 1, 1)]),
        ("30 4/6 * * *", utc(2026, 1, 1), [utc(2026, 1, 1, 4, 30), utc(2026, 1, 1, 10, 30)]),
        ("@hourly", utc(2026, 1, 1, 0, 0, 1), [utc(2026, 1, 1, 1), utc(2026, 1, 1, 2)]),
        ("@weekly", utc(2026, 1, 1), [utc(2026, 1, 4), utc(2026, 1, 11)]),
        ("0 0 29 2 *", utc(2026, 1, 1), [utc(2028, 2, 29), utc(2032, 2, 29)]),
    ],
)
def test_cron_fire_times(cron: str, after: datetime, expected: list[datetime]) -> None:
    assert Schedule("s", "t", cron=cron).next_fire_times(after, 2) == expected


def test_a_daily_time_the_spring_change_skips_fires_shifted_by_the_gap() -> None:
    schedule = Schedule("s", "t", cron="30 2 * * *", timezone="Europe/Berlin")
    fires = schedule.next_fire_times(utc(2026, 3, 27), 4)
    # 2026-03-29: 02:00 CET jumps to 03:00 CEST; 02:30 does not exist that day.
    assert [fire.astimezone(BERLIN) for fire in fires] == [
        local(BERLIN, 2026, 3, 27, 2, 30),
        local(BERLIN, 2026, 3, 28, 2, 30),
        local(BERLIN, 2026, 3, 29, 3, 30),
        local(BERLIN, 2026, 3, 30, 2, 30),
    ]
    # Asked from inside the gap's aftermath (03:10 CEST), the shifted fire is still next.
    assert schedule.next_after(local(BERLIN, 2026, 3, 29, 3, 10)) == utc(2026, 3, 29, 1, 30)


def test_a_daily_time_the_autumn_change_repeats_fires_once() -> None:
    schedule = Schedule("s", "t", cron="30 2 * * *", timezone="Europe/Berlin")
    fires = schedule.next_fire_times(utc(2026, 10, 24), 3)
    # 2026-10-25: 03:00 CEST goes back to 02:00 CET; 02:30 happens twice.
    assert fires == [utc(2026, 10, 24, 0, 30), utc(2026, 10, 25, 0, 30), utc(2026, 10, 26, 1, 30)]
    # From the second 02:15 (CET), the first 02:30 is past: tomorrow's is next.
    second_pass = local(BERLIN, 2026, 10, 25, 2, 15, fold=1)
    assert schedule.next_after(second_pass) == utc(2026, 10, 26, 1, 30)


def test_an_hourly_schedule_across_both_changes_in_new_york() -> None:
    schedule = Schedule("s", "t", cron="0 * * * *", timezone="America/New_York")
    # 2026-03-08 02:00 EST → 03:00 EDT: the 02:00 wall time fires shifted, at 03:00 EDT,
    # the same instant as 03:00 itself: one job.
    spring = schedule.fire_times(local(NEW_YORK, 2026, 3, 8, 0, 30), local(NEW_YORK, 2026, 3, 8, 4))
    assert [fire.astimezone(NEW_YORK).hour for fire in spring] == [1, 3, 4]
    # 2026-11-01 02:00 EDT → 01:00 EST: the repeated 01:00 fires once.
    autumn = list(schedule.fire_times(utc(2026, 11, 1, 4), utc(2026, 11, 1, 9)))
    assert autumn == [
        utc(2026, 11, 1, 5),
        utc(2026, 11, 1, 7),
        utc(2026, 11, 1, 8),
        utc(2026, 11, 1, 9),
    ]


def test_intervals_count_from_their_start() -> None:
    every = Schedule("s", "t", every=timedelta(minutes=10), start=utc(2026, 1, 1, 0, 3))
    assert every.next_fire_times(utc(2026, 1, 1, 0, 13), 2) == [
        utc(2026, 1, 1, 0, 23),
        utc(2026, 1, 1, 0, 33),
    ]
    assert every.latest(utc(2026, 1, 1, 0, 33), 2) == [
        utc(2026, 1, 1, 0, 23),
        utc(2026, 1, 1, 0, 33),
    ]
    assert every.latest(utc(2026, 1, 1, 0, 33), 5, after=utc(2026, 1, 1, 0, 20)) == [
        utc(2026, 1, 1, 0, 23),
        utc(2026, 1, 1, 0, 33),
    ]
    seconds = Schedule("s", "t", every=1)
    assert seconds.grace_period == timedelta(seconds=1)
    assert seconds.next_after(utc(2026, 1, 1, 0, 0, 0) + timedelta(microseconds=1)) == utc(
        2026, 1, 1, 0, 0, 1
    )


def test_the_job_of_a_fire_time_is_named_by_it() -> None:
    schedule = Schedule("report", "t", cron="0 3 * * *", timezone="Europe/Berlin")
    fire = local(BERLIN, 2026, 6, 1, 3)
    assert schedule.unique_key(fire) == "schedule:report:2026-06-01T01:00:00.000000+00:00"
    assert schedule.attributes(fire) == {
        "schedule": "report",
        "fire_time": "2026-06-01T01:00:00.000000+00:00",
    }


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({}, "schedule 's': give either cron or every, not both or neither"),
        ({"cron": "* * * * *", "every": 5}, "schedule 's': give either cron or every"),
        (
            {"cron": "* * * *"},
            "schedule 's': cron must have five fields (minute hour day-of-month month "
            "day-of-week) or be one of @yearly, @annually, @monthly, @weekly, @daily, "
            "@midnight, @hourly, got '* * * *'",
        ),
        (
            {"cron": "60 * * * *"},
            "schedule 's': cron minute field: '60' is not a value from 0 to 59",
        ),
        (
            {"cron": "* * * foo *"},
            "schedule 's': cron month field: 'foo' is not a value from 1 to 12",
        ),
        (
            {"cron": "5-1 * * * *"},
            "schedule 's': cron minute field: the range '5-1' runs backwards",
        ),
        (
            {"cron": "*/0 * * * *"},
            "schedule 's': cron minute field: a step must be at least 1 in '*/0'",
        ),
        ({"cron": "1;2 * * * *"}, "schedule 's': cron minute field: cannot read '1;2'"),
        ({"cron": "0 0 31 2 *"}, "schedule 's': the cron expression '0 0 31 2 *' never fires"),
        (
            {"cron": "* * * * *", "timezone": "Mars/Olympus"},
            "schedule 's': timezone 'Mars/Olympus' is not a known IANA time zone",
        ),
        ({"every": 0.5}, "schedule 's': every must be at least 1 second, got 0:00:00.500000"),
        ({"every": "5"}, "schedule 's': every must be a timedelta or a number of seconds, got '5'"),
        ({"every": 5, "grace": 0}, "schedule 's': grace must be positive, got 0:00:00"),
        ({"every": 5, "catch_up": -1}, "schedule 's': catch_up must be an int >= 0, got -1"),
        ({"every": 5, "topic": ""}, "schedule 's': topic must not be empty"),
        ({"every": 5, "data": {1, 2}}, "schedule 's': Object of type set is not JSON serializable"),
        ({"every": 5, "priority": 1.5}, "schedule 's': priority must be an int, got 1.5"),
        (
            {"every": 5, "start": datetime(2026, 1, 1)},
            "schedule 's': start must carry a time zone",
        ),
    ],
)
def test_bad_schedules_are_refused_naming_the_fault(options: dict[str, Any], message: str) -> None:
    arguments: dict[str, Any] = {"name": "s", "topic": "t", **options}
    with pytest.raises(ConfigurationError, match=f"^{_escaped(message)}"):
        Schedule(**arguments)


def _escaped(text: str) -> str:
    import re

    return re.escape(text)


def test_a_schedule_name_is_checked() -> None:
    with pytest.raises(ConfigurationError, match="a schedule's name must be a non-empty string"):
        Schedule("", "t", every=5)


# -- the duty, with the database's clock injected -------------------------------------------


def _operations() -> JobOperations:
    return JobOperations(Job.__table__, notify=False, max_payload_bytes=1 << 20)  # type: ignore[arg-type]


def run_pass(duty: ScheduleDuty, now: datetime, held: set[str] | None = None) -> list[str]:
    """Drive one pass of ``duty``: the clock step gets ``now``; every enqueue inserts
    all of its jobs but those whose key is in ``held``. Returns the fire times
    (ISO, UTC) the pass tried to enqueue."""
    tried: list[str] = []
    steps = duty.steps()
    reply: Any = None
    try:
        while True:
            step = steps.send(reply)
            assert isinstance(step, EachCommitted)
            operation = next(step.steps)
            if operation.statement == "clock":
                reply = now
                continue
            assert operation.statement in ("insert_unique_keep", "insert_unique_keep_shared")
            jobs = _unique_jobs(operation.statement, operation.params)
            for _key, states, fire_time, attributes in jobs:
                assert states == "{created,active,processing,completed,failed,cancelled}"
                # Due at its fire time, which its attributes name.
                assert datetime.fromisoformat(fire_time) == datetime.fromisoformat(
                    attributes["fire_time"]
                )
            tried.extend(fire_time for _, _, fire_time, _ in jobs)
            reply = sum(1 for key, *_ in jobs if key not in (held or set()))  # rows inserted
    except StopIteration as done:
        duty.finished(done.value)
    return [datetime.fromisoformat(fire).astimezone(UTC).isoformat() for fire in tried]


def _unique_jobs(statement: str, params: dict[str, Any]) -> list[tuple[str, str, str, Any]]:
    """(key, unique states, run_after_date, attributes) of each job of a unique
    enqueue, whichever row layout it uses: every setting in each row, or (``_shared``)
    the settings the jobs share sent once as parameters."""
    rows = json.loads(params["p_jobs"])
    if statement.endswith("_shared"):
        date = params["p_run_after_date"].isoformat()
        shared = (params["p_unique_states"], date, json.loads(params["p_attributes"]))
        return [(row[2], *shared) for row in rows]
    return [(row[7], row[8], row[3], row[2]) for row in rows]


def iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat()


T0 = utc(2026, 12, 5, 12, 0, 0)


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def test_on_time_fire_times_are_enqueued_once_per_pass_window() -> None:
    duty = ScheduleDuty(_operations(), [Schedule("tick", "t", every=1)])
    assert run_pass(duty, at(0.5)) == [iso(at(0))]  # grace 1 s: (-0.5, 0.5]
    assert run_pass(duty, at(1.005)) == [iso(at(1))]
    assert run_pass(duty, at(1.2)) == []
    assert run_pass(duty, at(2.9)) == [iso(at(2))]  # late, but within grace
    assert duty.enqueued == 3
    # The duty sleeps until the next fire time (+ slack): 3.0 - 2.9 s.
    assert 0.05 < duty.schedule.seconds_left() <= 0.11


def test_fire_times_missed_while_passes_failed_are_skipped_by_default(
    caplog: pytest.LogCaptureFixture,
) -> None:
    duty = ScheduleDuty(_operations(), [Schedule("tick", "t", every=1)])
    run_pass(duty, at(0.1))
    with caplog.at_level(logging.WARNING, logger="programma_sa.worker"):
        assert run_pass(duty, at(5.5)) == [iso(at(5))]
    assert "schedule tick: fire times from 2026-12-05T12:00:01+00:00 to" in caplog.text
    assert "were missed; skipping them" in caplog.text


def test_catch_up_enqueues_the_latest_missed_fire_times() -> None:
    duty = ScheduleDuty(_operations(), [Schedule("tick", "t", every=1, catch_up=2)])
    run_pass(duty, at(0.1))
    assert run_pass(duty, at(5.5)) == [iso(at(3)), iso(at(4)), iso(at(5))]


def test_a_starting_worker_counts_older_fire_times_as_missed() -> None:
    skip = ScheduleDuty(_operations(), [Schedule("a", "t", every=1, grace=2)])
    assert run_pass(skip, at(10.5)) == [iso(at(9)), iso(at(10))]  # (8.5, 10.5]
    catch_up = ScheduleDuty(_operations(), [Schedule("b", "t", every=1, grace=2, catch_up=3)])
    assert run_pass(catch_up, at(10.5)) == [iso(at(s)) for s in (6, 7, 8, 9, 10)]


def test_held_keys_are_left_to_their_holders() -> None:
    duty = ScheduleDuty(_operations(), [Schedule("tick", "t", every=1)])
    key = Schedule("tick", "t", every=1).unique_key(at(0))
    assert run_pass(duty, at(0.5), held={key}) == [iso(at(0))]
    assert duty.enqueued == 0  # another worker had inserted it


def test_a_failed_pass_settles_nothing_and_retries_soon() -> None:
    duty = ScheduleDuty(_operations(), [Schedule("tick", "t", every=1, grace=10)])
    assert run_pass(duty, at(0.5))[-1] == iso(at(0))
    steps = duty.steps()
    next(steps)
    steps.send(at(2.5))  # the clock answered; the enqueue fails:
    duty.finished(None, ConnectionError("server closed the connection"))
    assert duty.schedule.seconds_left() > ScheduleDuty.retry_wait - 1
    assert run_pass(duty, at(3.5)) == [iso(at(s)) for s in (1, 2, 3)]


def test_a_cron_schedule_across_the_autumn_change_with_passes_every_five_minutes() -> None:
    hourly = Schedule("hourly", "t", cron="0 * * * *", timezone="Europe/Berlin")
    nightly = Schedule("nightly", "t", cron="30 2 * * *", timezone="Europe/Berlin")
    duty = ScheduleDuty(_operations(), [hourly, nightly])
    enqueued = []
    now = utc(2026, 10, 24, 22, 0, 30)
    while now < utc(2026, 10, 25, 4):
        enqueued += run_pass(duty, now)
        now += timedelta(minutes=5)
    # Local 00:00, 01:00, 02:00 CEST, 02:30 CEST (nightly), not 02:00 CET again, 03:00
    # and 04:00 CET.
    assert enqueued == [
        iso(utc(2026, 10, 24, 22)),
        iso(utc(2026, 10, 24, 23)),
        iso(utc(2026, 10, 25, 0)),
        iso(utc(2026, 10, 25, 0, 30)),
        iso(utc(2026, 10, 25, 2)),
        iso(utc(2026, 10, 25, 3)),
    ]


def test_a_cron_schedule_across_the_spring_change() -> None:
    nightly = Schedule("nightly", "t", cron="30 2 * * *", timezone="Europe/Berlin")
    duty = ScheduleDuty(_operations(), [nightly])
    enqueued = []
    now = utc(2026, 3, 28, 23, 0, 30)
    while now < utc(2026, 3, 29, 4):
        enqueued += run_pass(duty, now)
        now += timedelta(minutes=5)
    assert enqueued == [iso(local(BERLIN, 2026, 3, 29, 3, 30))]


def test_a_worker_takes_a_list_of_schedules_with_distinct_names() -> None:
    tick = Schedule("a", "t", every=1)
    assert WorkerSettings(topics="t", schedules=[tick]).schedules == (tick,)
    with pytest.raises(ConfigurationError, match=r"^schedules: two schedules are named 'a'$"):
        WorkerSettings(topics="t", schedules=[tick, Schedule("a", "u", every=2)])
    with pytest.raises(
        ConfigurationError, match=r"^schedules must be a list of Schedule objects, got 'a'$"
    ):
        WorkerSettings(topics="t", schedules="a")  # type: ignore[arg-type]


def test_a_schedule_whose_jobs_the_queue_would_refuse_is_refused_by_the_worker() -> None:
    operations = JobOperations(Job.__table__, notify=False, max_payload_bytes=10)  # type: ignore[arg-type]
    big = Schedule("big", "t", every=1, data={"text": "x" * 20})
    with pytest.raises(
        ConfigurationError,
        match=r"^schedule 'big': job spec #0: data is 31 bytes as JSON; the limit is 10 bytes$",
    ):
        ScheduleDuty(operations, [big])
