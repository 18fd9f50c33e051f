"""``programma-sa schedules``: each schedule and its next fire times; and bad --schedules."""

from __future__ import annotations

from datetime import datetime, timezone

import pytest

from programma_sa import Schedule

from .test_cli import run

SCHEDULES = [
    Schedule("nightly", "reports", cron="30 2 * * *", timezone="Europe/Berlin", catch_up=1),
    Schedule("tick", "pings", every=15),
]


def test_lists_each_schedule_with_its_next_fire_times(capsys: pytest.CaptureFixture[str]) -> None:
    before = datetime.now(timezone.utc)
    status, out, err = run(
        capsys,
        "schedules",
        "--schedules",
        "tests.cli.test_schedules_command:SCHEDULES",
        "--count",
        "3",
    )
    assert (status, err) == (0, "")
    lines = out.splitlines()
    assert lines[0] == (
        "nightly: topic reports, cron '30 2 * * *' in Europe/Berlin, catch_up 1, grace 60 s"
    )
    nightly = [datetime.fromisoformat(line.split()[0]) for line in lines[1:4]]
    assert nightly == SCHEDULES[0].next_fire_times(before, 3)
    assert all(line.startswith("  ") and "(" in line for line in lines[1:4])  # + local time
    assert lines[4] == (
        "tick: topic pings, every 0:00:15 from 1970-01-01T00:00:00+00:00, catch_up 0, grace 15 s"
    )
    ticks = [datetime.fromisoformat(line.strip()) for line in lines[5:8]]
    assert len(ticks) == 3 and all(tick.second % 15 == 0 for tick in ticks)
    assert len(lines) == 8


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["schedules"], "give --schedules MODULE:ATTRIBUTE"),
        (["schedules", "--schedules", "nocolon"], "--schedules must look like module:attribute"),
        (
            ["schedules", "--schedules", "tests.worker.schedules:NOT_SCHEDULES"],
            "--schedules tests.worker.schedules:NOT_SCHEDULES: schedules must be a list of "
            "Schedule objects, got [42]",
        ),
        (
            ["schedules", "--schedules", "tests.worker.schedules:TICKS", "--count", "0"],
            "--count must be at least 1, got 0",
        ),
        (
            ["worker", "tests.worker.handlers:noop", "--topic", "t", "--schedules", "x.y:Z"],
            "cannot import --schedules module 'x.y'",
        ),
    ],
)
def test_bad_schedules_arguments_exit_2(
    capsys: pytest.CaptureFixture[str], argv: list[str], message: str
) -> None:
    status, _, err = run(capsys, *argv, "--database-url", "postgresql://nobody@127.0.0.1/none")
    assert status == 2
    assert message in err, err
    assert "Traceback" not in err
