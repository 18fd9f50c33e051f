"""A scripted driver for the worker's decisions: no database, no mocks.

A decision (``WorkerCore._transaction_steps``, ``prune_pass`` …) is a generator of
steps that does no I/O; :class:`Script` drives one with the package's own
:func:`~programma_sa._execute.drive` (or ``drive_async``), answering each step from
replies the test gives and recording every step it was handed. The operations
inside an :class:`~programma_sa._execute.InTransaction` or
:class:`~programma_sa.worker.steps.EachCommitted` are driven and recorded too, each
with the unit it ran in, so a test sees which statements shared a transaction.

A reply is looked up by the step's name: an operation's statement name
(``"claim"``, ``"retry_unchanged"`` …) or the step's type name (``"RunHandler"``,
``"Commit"``). It is a plain value (sent back every time), :class:`Raise` (the
step raises: the driver throws the error into the decision), :class:`Each`
(successive replies, one per step of that name) or :class:`Computed` (a function
of the step). A unit step is never looked up: its operations are.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Generator, Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any, TypeVar

from sqlalchemy import create_engine
from sqlalchemy import exc as sa_exc
from sqlalchemy.ext.asyncio import create_async_engine
from sqlalchemy.orm import DeclarativeBase
from typing_extensions import Unpack

from programma_sa import (
    AsyncJobQueue,
    AsyncWorker,
    ClaimedJob,
    JobDetail,
    JobMixin,
    JobQueue,
    JobState,
    Worker,
)
from programma_sa._execute import InTransaction, drive, drive_async
from programma_sa._operations import Operation
from programma_sa.worker.settings import WorkerOptions
from programma_sa.worker.steps import EachCommitted

__all__ = [
    "ENGINE",
    "QUEUE",
    "Computed",
    "Each",
    "Handed",
    "Raise",
    "Script",
    "ScriptedJob",
    "async_worker",
    "db_error",
    "job",
    "worker",
]

T = TypeVar("T")

#: Creating an engine does not connect: nothing below ever opens a connection.
ENGINE = create_engine("postgresql+psycopg://u@localhost/db")


class _Base(DeclarativeBase):
    pass


class ScriptedJob(JobMixin, _Base):
    __tablename__ = "scripted_jobs"


QUEUE = JobQueue(ScriptedJob)


def _handler(ctx: object) -> None:
    return None


def worker(topics: str | list[str] = "emails", **options: Unpack[WorkerOptions]) -> Worker:
    """A real :class:`Worker` (``listen=False``) on an engine it never connects."""
    options.setdefault("listen", False)
    return Worker(QUEUE, ENGINE, topics, _handler, **options)


async def _async_handler(ctx: object) -> None:
    return None


def async_worker(
    topics: str | list[str] = "emails", **options: Unpack[WorkerOptions]
) -> AsyncWorker:
    """:func:`worker` as an :class:`AsyncWorker` (its engine is not connected either)."""
    options.setdefault("listen", False)
    engine = create_async_engine("postgresql+psycopg://u@localhost/db")
    return AsyncWorker(AsyncJobQueue(ScriptedJob), engine, topics, _async_handler, **options)


_T0 = datetime(2030, 1, 2, 3, 4, 5, 678901, tzinfo=timezone.utc)


def job(topic: str = "emails", attempts: int = 1, *, lease: float = 30.0) -> ClaimedJob:
    """A job as a claim returns it: ACTIVE, ``attempts`` counting this delivery."""
    return JobDetail(
        id=uuid.uuid4(),
        topic=topic,
        data={"n": 1},
        attributes={},
        state=JobState.ACTIVE,
        start_after=_T0 + timedelta(seconds=lease),
        started_at=_T0,
        created_at=_T0 - timedelta(minutes=1),
        finished_at=None,
        retry_after_seconds=int(lease),
        attempts=attempts,
    )


def db_error(*, connection_invalidated: bool = False, text: str = "boom") -> sa_exc.DBAPIError:
    """A driver error as SQLAlchemy raises it (``connection_invalidated``: the
    connection died with it)."""
    return sa_exc.OperationalError(
        "COMMIT", {}, Exception(text), connection_invalidated=connection_invalidated
    )


@dataclass(frozen=True)
class Raise:
    """The step raises ``error`` (thrown into the decision by the driver)."""

    error: BaseException


class Each:
    """Successive replies to the steps of one name; running out is a test error."""

    def __init__(self, *replies: Any) -> None:
        self._next: Iterator[Any] = iter(replies)

    def take(self, name: str) -> Any:
        try:
            return next(self._next)
        except StopIteration:
            raise AssertionError(f"no more replies scripted for {name!r}") from None


@dataclass(frozen=True)
class Computed:
    """A reply computed from the step (which is the operation, RunHandler …)."""

    reply: Callable[[Any], Any]


@dataclass(frozen=True)
class Handed:
    """One step the decision yielded, and the unit step it ran in (``None``: top level)."""

    step: Any
    unit: Handed | None

    @property
    def name(self) -> str:
        """The statement name of an operation, else the step's type name."""
        if isinstance(self.step, Operation):
            return str(self.step.statement)
        return type(self.step).__name__

    @property
    def path(self) -> str:
        """``"InTransaction/claim"`` for an operation inside a unit, else :attr:`name`."""
        return self.name if self.unit is None else f"{self.unit.name}/{self.name}"


_UNITS = (InTransaction, EachCommitted)


class Script:
    """Drives a decision, answering each step from ``replies`` and recording it."""

    def __init__(self, replies: Mapping[str, Any] | None = None) -> None:
        self.replies = dict(replies or {})
        self.handed: list[Handed] = []

    # -- what the decision did ----------------------------------------------------------

    def trace(self) -> list[str]:
        """Every step handed, in order, as :attr:`Handed.path`."""
        return [handed.path for handed in self.handed]

    def steps(self, name: str) -> list[Any]:
        """The steps of one name (operations by statement name), in order."""
        return [handed.step for handed in self.handed if handed.name == name]

    def step(self, name: str) -> Any:
        """The one step of that name."""
        found = self.steps(name)
        assert len(found) == 1, f"expected one {name!r} step, got {self.trace()}"
        return found[0]

    def units_of(self, name: str) -> list[Handed | None]:
        """The unit each step of that name ran in (``None``: none)."""
        return [handed.unit for handed in self.handed if handed.name == name]

    # -- driving ------------------------------------------------------------------------

    def _reply(self, handed: Handed) -> Any:
        name = handed.name
        if name not in self.replies:
            raise AssertionError(f"unscripted step {handed.path!r} (so far: {self.trace()})")
        reply = self.replies[name]
        if isinstance(reply, Each):
            reply = reply.take(name)
        if isinstance(reply, Computed):
            reply = reply.reply(handed.step)
        if isinstance(reply, Raise):
            raise reply.error
        return reply

    def _executor(self, unit: Handed | None) -> Callable[[Any], Any]:
        def execute(step: Any) -> Any:
            handed = Handed(step, unit)
            self.handed.append(handed)
            if isinstance(step, _UNITS):
                return drive(step.steps, self._executor(handed))
            return self._reply(handed)

        return execute

    def _async_executor(self, unit: Handed | None) -> Callable[[Any], Any]:
        async def execute(step: Any) -> Any:
            handed = Handed(step, unit)
            self.handed.append(handed)
            if isinstance(step, _UNITS):
                return await drive_async(step.steps, self._async_executor(handed))
            return self._reply(handed)

        return execute

    def run(self, steps: Generator[Any, Any, T]) -> T:
        """Drive ``steps`` to its end with :func:`drive`; what it returns."""
        return drive(steps, self._executor(None))

    async def run_async(self, steps: Generator[Any, Any, T]) -> T:
        """:meth:`run` with :func:`drive_async`."""
        return await drive_async(steps, self._async_executor(None))
