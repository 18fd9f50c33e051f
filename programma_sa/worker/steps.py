"""The steps a worker's decisions yield, and what the drivers send back for each.

A decision of the worker (:mod:`.decisions`) is a generator: it yields steps and
receives each step's result, so it is written once and driven by the threaded
driver (:mod:`.sync_driver`) and the asyncio driver (:mod:`.async_driver`) alike,
through :func:`programma_sa._execute.drive` / ``drive_async``. A step that fails
with a database error has that error *thrown* into the generator, whose own
``try`` decides; the two exceptions to that rule reply with the error as a value
(:class:`RunHandler`, :class:`Commit`), because for them an error is an outcome.

The steps:

* an :class:`~programma_sa._operations.Operation` — execute it in the current
  transaction-mode pass;
* :class:`InTransaction` — run operations in a short transaction of a session of
  the worker's own;
* :class:`EachCommitted` — run operations each of which is a whole unit of work: in
  autocommit when the worker owns its engine, else as :class:`InTransaction`;
* :class:`RunHandler` — run the handler on a job;
* :class:`Commit` — commit the current transaction-mode pass.
"""

from __future__ import annotations

from collections.abc import Generator
from dataclasses import dataclass
from typing import Any, Generic, NamedTuple, TypeVar

from .. import _validation as check
from .._execute import InTransaction
from .._job_records import ClaimedJob
from .._operations import Operation
from .leases import Cancellation

__all__ = [
    "Commit",
    "ConnectionLost",
    "EachCommitted",
    "InTransaction",
    "JobSnoozed",
    "Returned",
    "RunHandler",
    "Step",
]

T = TypeVar("T")


@dataclass(frozen=True)
class RunHandler:
    """Run the handler on ``job``: outside any transaction in lease mode; in a
    transaction-mode pass inside a SAVEPOINT of the pass's transaction.

    Send back :class:`Returned` when it returned, the ``Exception`` it raised (or
    its SAVEPOINT's end raised) — :class:`JobSnoozed` when it asked for a snooze,
    :class:`~programma_sa.JobCancelled` when its job's cancellation reached it (in a
    transaction-mode pass its SAVEPOINT is rolled back then, even if the handler
    returned) — or a :class:`ConnectionLost` when, after such an exception, the
    pass's connection is invalidated.
    """

    job: ClaimedJob
    #: The job's cancellation, which its context shows the handler (``None``: none
    #: can reach it).
    cancellation: Cancellation | None = None


class Returned(NamedTuple):
    """The reply to a :class:`RunHandler` whose handler returned: what it returned
    (stored as the job's result with its completion). A tuple: one per job."""

    value: object = None


class JobSnoozed(Exception):  # not an error: a handler's request
    """Raised by ``ctx.snooze(seconds)`` to end a handler: the worker then makes the
    job due again in ``seconds`` without spending an attempt (see
    :meth:`JobContext.snooze <programma_sa.JobContext.snooze>`). A handler that
    catches every ``Exception`` must let this one through."""

    def __init__(self, seconds: float) -> None:
        super().__init__(f"snoozed for {seconds:g} s")
        self.seconds = seconds

    @classmethod
    def checked(cls, seconds: object) -> JobSnoozed:
        """The request to snooze for ``seconds``, checked: ``InvalidJobInput`` unless
        a finite number >= 0."""
        checked = check.optional_seconds(seconds, "snooze seconds")
        return cls(0.0 if checked is None else checked)


@dataclass(frozen=True)
class ConnectionLost:
    """The reply to a :class:`RunHandler` after which the pass's connection is dead.

    The transaction is gone with it (PostgreSQL rolled it back, claim included), so
    nothing more can be written in it: not the failure record a raised error would
    get, nor a completion. ``error`` is what the handler raised — or, when it
    swallowed the database's error, what ending its SAVEPOINT raised.
    """

    error: Exception


@dataclass(frozen=True)
class Commit:
    """The last step of a transaction-mode pass: commit its transaction.

    Send back ``None`` once committed, or the :class:`~sqlalchemy.exc.DBAPIError`
    the commit raised (anything else propagates: the transaction is rolled back).
    The worker ends the transaction here, explicitly, rather than on leaving its
    ``begin()`` block, so that a failed COMMIT is told apart from a failure earlier
    in the pass. A failed COMMIT ends the transaction too: the driver releases its
    connection before it sends the error back (an :class:`InTransaction` may follow).
    """


@dataclass(frozen=True)
class EachCommitted(Generic[T]):
    """Run ``steps``, each operation of which is a whole unit of work (a one-topic
    lease claim, a batch's completion, a failure record, the idle look-ahead).

    A worker that owns its engine runs them in autocommit on a pooled connection:
    one round trip instead of three (psycopg sends ``BEGIN`` and ``COMMIT`` as round
    trips of their own), and no Session (these statements touch no ORM state). A
    single statement is atomic either way and commits as it returns, which is what
    a transaction of its own did. Otherwise: as :class:`InTransaction`.
    """

    steps: Generator[Operation[Any], Any, T]


#: A step a worker's decision yields.
Step = Operation[Any] | RunHandler | Commit | InTransaction[Any] | EachCommitted[Any]


def single(operation: Operation[T]) -> Generator[Operation[T], T, T]:
    """One operation as a generator of steps."""
    return (yield operation)
