"""Periodic schedules declared in code: cron expressions and fixed intervals, time-zone aware.

::

    from datetime import timedelta
    from programma_sa import Schedule

    SCHEDULES = [
        Schedule("nightly-report", "reports", cron="30 2 * * *", timezone="Europe/Berlin"),
        Schedule("heartbeat", "pings", every=timedelta(seconds=10), data={"ping": True}),
    ]

    Worker(queue, engine, "reports", handler, schedules=SCHEDULES)

Every worker given schedules enqueues their jobs (a duty of its loop,
:class:`programma_sa.worker.schedules.ScheduleDuty`); any number of workers may run
the same schedules, with no leader: each fire time's job has the unique key
``schedule:<name>:<fire time in UTC>``, held in every state, so exactly one job per
fire time is ever inserted. This module is the arithmetic alone — no I/O, no clock
of its own: every method takes the moment it reasons about.

**Cron** (``cron=``): five fields, minute (0-59), hour (0-23), day of month (1-31),
month (1-12 or ``jan``-``dec``), day of week (0-7, 0 and 7 are Sunday, or
``sun``-``sat``); each field ``*``, a value, a range ``a-b``, a step ``*/n``,
``a-b/n`` or ``a/n`` (from ``a`` to the field's end), or a comma-separated list of
those; or one of ``@yearly`` (``@annually``), ``@monthly``, ``@weekly``, ``@daily``
(``@midnight``), ``@hourly``. As in Vixie cron, when both the day of month and the
day of week are restricted (neither starts with ``*``) a day matching either fires.
Times are wall-clock times in ``timezone`` (an IANA name, default ``"UTC"``):

* a wall-clock time that a DST change skips (spring forward: 02:30 in
  Europe/Berlin on the last Sunday of March) fires once, shifted by the gap (at
  03:30, the instant 02:30 would have been in the old offset);
* a wall-clock time that occurs twice (fall back) fires once, at its first
  occurrence.

So a daily job runs once every day, and an hourly one (``0 * * * *``) skips no
day but fires once for the repeated hour. For a schedule that must follow
elapsed time across DST changes, use ``timezone="UTC"`` or ``every=``.

**Intervals** (``every=``): fire times ``start + k * every`` for every integer
``k``; ``start`` defaults to the Unix epoch (so ``every=timedelta(hours=1)`` fires
on the hour, UTC), and ``every`` is at least one second.

**Missed fire times.** A fire time is *on time* when a worker's pass sees it within
``grace`` of it (default: 60 s, or ``every`` if shorter): its job is enqueued. One
that no worker saw in time (they were all down, or the database was unreachable) is
*missed*: ``catch_up`` (default 0) says how many of the latest missed ones are
enqueued anyway when a worker sees them; the others are skipped. A worker that
starts knows nothing of the past, so on its first pass every fire time older than
``grace`` counts as missed — one that already ran is not enqueued again (its job
still holds its key), as long as retention keeps the finished jobs of the
schedule's topic longer than ``grace`` plus ``catch_up`` periods.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta, timezone
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from . import _validation as check
from .exceptions import ConfigurationError, InvalidJobInput

__all__ = ["CronExpression", "Schedule"]

_UTC = timezone.utc
_EPOCH = datetime(1970, 1, 1, tzinfo=_UTC)
#: How far ahead a cron expression is searched for its next fire time: 8 years hold
#: every combination of a day of month, a month and a day of week at least once (29
#: February on a given weekday recurs within 28 years, but no sooner than a leap day;
#: an expression that never fires within 8 years is refused).
_SEARCH_DAYS = 8 * 366
_DEFAULT_GRACE = timedelta(seconds=60)

_MONTH_NAMES = ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec")
_MONTHS = {name: number for number, name in enumerate(_MONTH_NAMES, 1)}
_WEEKDAYS = {
    name: number for number, name in enumerate(("sun", "mon", "tue", "wed", "thu", "fri", "sat"))
}
_ALIASES = {
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
    "@monthly": "0 0 1 * *",
    "@weekly": "0 0 * * 0",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@hourly": "0 * * * *",
}
# (name, lowest, highest, names) of the five fields.
_FIELDS: tuple[tuple[str, int, int, dict[str, int]], ...] = (
    ("minute", 0, 59, {}),
    ("hour", 0, 23, {}),
    ("day of month", 1, 31, {}),
    ("month", 1, 12, _MONTHS),
    ("day of week", 0, 7, _WEEKDAYS),
)
_ITEM = re.compile(r"(?P<range>\*|(?P<low>\w+)(?:-(?P<high>\w+))?)(?:/(?P<step>\d+))?")


def _parse_field(
    text: str, name: str, lowest: int, highest: int, names: dict[str, int]
) -> frozenset[int]:
    def value(token: str) -> int:
        number = names.get(token.lower()) if not token.isdigit() else int(token)
        if number is None or not lowest <= number <= highest:
            raise ConfigurationError(
                f"cron {name} field: {token!r} is not a value from {lowest} to {highest}"
            )
        return number

    values: set[int] = set()
    for item in text.split(","):
        match = _ITEM.fullmatch(item)
        if match is None:
            raise ConfigurationError(f"cron {name} field: cannot read {item!r}")
        step = 1 if match["step"] is None else int(match["step"])
        if step < 1:
            raise ConfigurationError(f"cron {name} field: a step must be at least 1 in {item!r}")
        if match["range"] == "*":
            low, high = lowest, highest
        else:
            low = value(match["low"])
            # "a/n" runs from a to the field's end; "a" alone is that one value.
            default_high = highest if match["step"] is not None else low
            high = default_high if match["high"] is None else value(match["high"])
            if high < low:
                raise ConfigurationError(f"cron {name} field: the range {item!r} runs backwards")
        values.update(range(low, high + 1, step))
    return frozenset(values)


@dataclass(frozen=True)
class CronExpression:
    """A parsed five-field cron expression (see the module docs for the syntax)."""

    text: str
    minutes: tuple[int, ...]
    hours: tuple[int, ...]
    days: frozenset[int]
    months: frozenset[int]
    weekdays: frozenset[int]  # 0 = Monday … 6 = Sunday (Python's weekday())
    #: Day of month and day of week both restricted: a day matching either fires.
    either_day: bool

    @classmethod
    def parse(cls, text: str) -> CronExpression:
        """Parse ``text``, or raise :class:`~programma_sa.ConfigurationError` naming the fault."""
        if not isinstance(text, str):
            raise ConfigurationError(f"cron must be a string, got {text!r}")
        expanded = _ALIASES.get(text.strip().lower(), text)
        parts = expanded.split()
        if len(parts) != 5:
            raise ConfigurationError(
                f"cron must have five fields (minute hour day-of-month month day-of-week) "
                f"or be one of {', '.join(_ALIASES)}, got {text!r}"
            )
        minutes, hours, days, months, cron_weekdays = (
            _parse_field(part, *spec) for part, spec in zip(parts, _FIELDS, strict=True)
        )
        return cls(
            text=text,
            minutes=tuple(sorted(minutes)),
            hours=tuple(sorted(hours)),
            days=days,
            months=months,
            # cron counts from Sunday = 0 (and 7); Python from Monday = 0.
            weekdays=frozenset((day - 1) % 7 for day in cron_weekdays),
            either_day=not parts[2].startswith("*") and not parts[4].startswith("*"),
        )

    def matches_day(self, day: date) -> bool:
        if day.month not in self.months:
            return False
        by_date, by_weekday = day.day in self.days, day.weekday() in self.weekdays
        return (by_date or by_weekday) if self.either_day else (by_date and by_weekday)

    def next_after(self, moment: datetime, zone: ZoneInfo) -> datetime | None:
        """The first fire time strictly after ``moment`` (aware), or ``None`` within
        the search horizon (about 8 years)."""
        start = moment.astimezone(zone).replace(tzinfo=None)
        for offset in range(_SEARCH_DAYS):
            day = start.date() + timedelta(days=offset)
            if not self.matches_day(day):
                continue
            fire = self._first_on(day, zone, moment, start.time() if offset == 0 else time.min)
            if fire is not None:
                return fire
        return None

    def _first_on(
        self, day: date, zone: ZoneInfo, moment: datetime, earliest: time
    ) -> datetime | None:
        """The first fire time on ``day`` after ``moment``.

        On a day without a DST change wall-clock order is time order: the walls
        before ``earliest`` (the wall time of ``moment`` on its own day) are skipped
        unread, and the first later instant is the answer. On a day with one, a
        skipped wall time fires shifted by the gap, possibly after later walls: every
        wall of the day is resolved and the earliest instant after ``moment`` wins.
        """
        regular = _offset(day, zone, time.min) == _offset(day, zone, time.max)
        floor = (earliest.hour, earliest.minute) if regular else (0, 0)
        instants = (
            _resolve(datetime.combine(day, time(hour, minute)), zone)
            for hour in self.hours
            for minute in self.minutes
            if (hour, minute) >= floor
        )
        if regular:
            return next((instant for instant in instants if instant > moment), None)
        return min((instant for instant in instants if instant > moment), default=None)


def _offset(day: date, zone: ZoneInfo, at: time) -> timedelta | None:
    return datetime.combine(day, at, tzinfo=zone).utcoffset()


def _resolve(wall: datetime, zone: ZoneInfo) -> datetime:
    """The instant of a wall-clock time: its first occurrence when it occurs twice,
    and — when it does not occur (a DST gap) — the instant it would be in the offset
    before the change, i.e. shifted forward by the gap (PEP 495's ``fold=0``)."""
    return wall.replace(tzinfo=zone, fold=0).astimezone(_UTC)


def _zone(name: object) -> ZoneInfo:
    if not isinstance(name, str) or not name:
        raise ConfigurationError(f"timezone must be an IANA time zone name, got {name!r}")
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ConfigurationError(f"timezone {name!r} is not a known IANA time zone") from None


def _seconds(value: object, what: str) -> timedelta:
    if isinstance(value, timedelta):
        return value
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ConfigurationError(
            f"{what} must be a timedelta or a number of seconds, got {value!r}"
        )
    return timedelta(seconds=value)


@dataclass(frozen=True)
class Schedule:
    """A periodic job: each fire time enqueues one job on ``topic``.

    :param name: names the schedule in the jobs' unique keys and attributes; unique
        among a worker's schedules. Renaming a schedule makes its fire times new.
    :param topic: the topic of its jobs.
    :param cron: a cron expression (module docs), in ``timezone``. Or:
    :param every: a fixed interval (a ``timedelta`` or seconds, at least 1 s),
        counted from ``start``.
    :param timezone: the IANA time zone of the cron expression (default ``"UTC"``).
    :param start: the origin of ``every`` (an aware datetime; default the Unix epoch).
    :param data: each job's data (any JSON value; default ``{}``).
    :param priority: each job's priority.
    :param retry_after_seconds: each job's visibility timeout.
    :param catch_up: how many missed fire times to enqueue when workers see them
        late (default 0: skip them). See the module docs.
    :param grace: how late a fire time may be seen and still count as on time
        (default 60 s, or ``every`` if shorter).

    The job's attributes carry ``{"schedule": name, "fire_time": "<ISO 8601, UTC>"}``;
    it is due at its fire time. Every argument is checked here:
    :class:`~programma_sa.ConfigurationError` names a bad one.
    """

    name: str
    topic: str
    cron: str | None = None
    every: timedelta | float | None = None
    timezone: str = "UTC"
    start: datetime = _EPOCH
    data: Any = field(default_factory=dict)
    priority: int = 0
    retry_after_seconds: int | None = 30
    catch_up: int = 0
    grace: timedelta | float | None = None
    _expression: CronExpression | None = field(init=False, repr=False, compare=False)
    _zone: ZoneInfo = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if (
            not isinstance(self.name, str)
            or not self.name
            or "\x00" in self.name
            or len(self.name) > 200
        ):
            raise ConfigurationError(
                f"a schedule's name must be a non-empty string of at most 200 characters "
                f"without NUL, got {self.name!r}"
            )
        where = f"schedule {self.name!r}"
        try:
            check.check_topic(self.topic)
            check.check_priority(self.priority)
            check.retry_seconds(self.retry_after_seconds)
            json.dumps(self.data, allow_nan=False)
            check.start_date(self.start, "start")
        except (InvalidJobInput, TypeError, ValueError) as error:
            raise ConfigurationError(f"{where}: {error}") from error
        if (self.cron is None) == (self.every is None):
            raise ConfigurationError(f"{where}: give either cron or every, not both or neither")
        expression = None
        grace = _DEFAULT_GRACE
        try:
            if self.cron is not None:
                expression = CronExpression.parse(self.cron)
            else:
                every = _seconds(self.every, "every")
                if every < timedelta(seconds=1):
                    raise ConfigurationError(f"every must be at least 1 second, got {every}")
                object.__setattr__(self, "every", every)
                grace = min(grace, every)
            zone = _zone(self.timezone)
            if self.grace is not None:
                grace = _seconds(self.grace, "grace")
                if grace <= timedelta(0):
                    raise ConfigurationError(f"grace must be positive, got {grace}")
        except ConfigurationError as error:
            raise ConfigurationError(f"{where}: {error}") from None
        if (
            isinstance(self.catch_up, bool)
            or not isinstance(self.catch_up, int)
            or self.catch_up < 0
        ):
            raise ConfigurationError(
                f"{where}: catch_up must be an int >= 0, got {self.catch_up!r}"
            )
        object.__setattr__(self, "grace", grace)
        object.__setattr__(self, "_expression", expression)
        object.__setattr__(self, "_zone", zone)
        if self.next_after(_EPOCH + timedelta(days=365 * 56)) is None:
            raise ConfigurationError(f"{where}: the cron expression {self.cron!r} never fires")

    @property
    def grace_period(self) -> timedelta:
        """``grace``, as checked (a ``timedelta``)."""
        assert isinstance(self.grace, timedelta)
        return self.grace

    def next_after(self, moment: datetime) -> datetime | None:
        """The first fire time strictly after ``moment`` (an aware datetime), in UTC."""
        if self._expression is not None:
            return self._expression.next_after(moment, self._zone)
        assert isinstance(self.every, timedelta)
        elapsed = (moment - self.start) // self.every
        return (self.start + (elapsed + 1) * self.every).astimezone(_UTC)

    def fire_times(self, after: datetime, until: datetime) -> Iterator[datetime]:
        """Every fire time ``t`` with ``after < t <= until``, in order (UTC)."""
        fire = self.next_after(after)
        while fire is not None and fire <= until:
            yield fire
            fire = self.next_after(fire)

    def next_fire_times(self, after: datetime, count: int) -> list[datetime]:
        """The next ``count`` fire times strictly after ``after`` (UTC)."""
        times: list[datetime] = []
        fire = self.next_after(after)
        while fire is not None and len(times) < count:
            times.append(fire)
            fire = self.next_after(fire)
        return times

    def latest(self, until: datetime, count: int, after: datetime | None = None) -> list[datetime]:
        """The latest ``count`` fire times ``t <= until`` (and ``t > after``), in order."""
        if count <= 0:
            return []
        window = timedelta(hours=1)
        while True:
            start = until - window
            bounded = after is not None and start <= after
            if after is not None and bounded:
                start = after
            times = list(self.fire_times(start, until))
            if len(times) >= count or bounded or window > timedelta(days=_SEARCH_DAYS):
                return times[-count:]
            window *= 4

    def unique_key(self, fire_time: datetime) -> str:
        """The unique key of the job of ``fire_time``: ``schedule:<name>:<UTC ISO 8601>``."""
        return f"schedule:{self.name}:{_iso(fire_time)}"

    def attributes(self, fire_time: datetime) -> dict[str, str]:
        """The attributes of the job of ``fire_time``."""
        return {"schedule": self.name, "fire_time": _iso(fire_time)}


def _iso(moment: datetime) -> str:
    return moment.astimezone(_UTC).isoformat(timespec="microseconds")


def check_schedules(value: object) -> tuple[Schedule, ...]:
    """A worker's ``schedules``: :class:`Schedule` objects with distinct names."""
    items = value if isinstance(value, Sequence) and not isinstance(value, (str, bytes)) else None
    if items is None or not all(isinstance(item, Schedule) for item in items):
        raise ConfigurationError(f"schedules must be a list of Schedule objects, got {value!r}")
    names = [schedule.name for schedule in items]
    twice = sorted({name for name in names if names.count(name) > 1})
    if twice:
        raise ConfigurationError(f"schedules: two schedules are named {twice[0]!r}")
    return tuple(items)
