"""Every error programma_sa raises derives from :class:`ProgrammaError`.

Two families matter to callers:

* :class:`InvalidJobInput` (also a :class:`ValueError`) — a caller's argument was
  refused *before* any statement was sent, so the caller's transaction is untouched
  and nothing was written.
* :class:`DatabaseError` — the database refused a statement. The driver's exception
  is kept as ``__cause__``; driver errors become ours in one place
  (``programma_sa._execute.translated_errors``). :class:`DuplicateJob` is the one
  refusal named by the database's constraint: a unique job's key is taken.
  :class:`TransactionLost` and
  :class:`CommitFailed` are what a transaction-mode worker pass raises when its
  transaction is lost under a handler, or when its COMMIT fails.

A handler raises :class:`PermanentFailure` (or a subclass: a task's
:class:`TaskDocumentError` and :class:`InstanceNotFound`) for a job that no retry can
save: the worker moves it to FAILED at once, whatever its retry policy.
"""

from __future__ import annotations

__all__ = [
    "CommitFailed",
    "ConfigurationError",
    "DatabaseError",
    "DuplicateJob",
    "InstanceNotFound",
    "InvalidJobInput",
    "JobCancelled",
    "JobNotFound",
    "PayloadTooLarge",
    "PermanentFailure",
    "ProgrammaError",
    "SchemaNotReady",
    "TaskDocumentError",
    "TransactionLost",
    "WaitTimeout",
]


class ProgrammaError(Exception):
    """Root of every error raised by programma_sa."""


class InvalidJobInput(ProgrammaError, ValueError):
    """An argument was refused before anything was written — or, for an operation on
    one job, the job's state does not allow it (say, re-running a completed job):
    the statement found that out and wrote nothing."""


class JobNotFound(ProgrammaError, LookupError):
    """No job has the id given (the statement that found it out wrote nothing)."""


class JobCancelled(ProgrammaError):
    """The running job was cancelled: what ``ctx.raise_if_cancelled()`` raises in a
    handler, and what a worker records when a cancelled handler ends. The worker
    ends the job CANCELLED; it is never retried."""


class WaitTimeout(ProgrammaError, TimeoutError):
    """:meth:`~programma_sa.JobQueue.wait_for_job` gave up: the job had not finished."""


class PayloadTooLarge(InvalidJobInput):
    """A job's data or attributes serialise to more bytes than the queue allows."""


class ConfigurationError(ProgrammaError):
    """The model, table name, schema or queue settings are not usable."""


class DatabaseError(ProgrammaError):
    """PostgreSQL refused a statement; the driver's error is the ``__cause__``."""


class DuplicateJob(DatabaseError):
    """A unique job's key is already held by another job (``on_conflict="raise"``, or
    a job moved back into its ``unique_states`` while another holds its key).

    The database refused the statement (a unique violation on the jobs table's
    ``uq_<table>_unique_key`` index): like any refused statement it aborts the
    caller's transaction, and nothing of the statement was written (for
    ``add_jobs``, none of the batch). ``unique_key`` is the key, when the database
    named it.
    """

    def __init__(self, message: str, *, unique_key: str | None = None) -> None:
        super().__init__(message)
        self.unique_key = unique_key


class SchemaNotReady(DatabaseError):
    """The jobs table does not exist: run the programma migrations (docs/alembic.md)."""


class TransactionLost(DatabaseError):
    """The database connection of a transaction-mode worker pass died while a handler
    ran: the pass's transaction rolled back, so its claimed jobs are claimable again
    at once and their attempt is not counted. The ``__cause__`` is the handler's
    error (if it swallowed the database's error: what ending its SAVEPOINT raised)."""


class CommitFailed(DatabaseError):
    """The COMMIT of a transaction-mode worker pass failed; the driver's error is
    the ``__cause__``.

    ``outcome_unknown`` False: the server refused the commit (a deferred constraint,
    a serialization failure) and rolled the transaction back — the handlers' writes,
    the outcomes and the claim. The worker then recorded the failed attempt of each
    of the pass's jobs in a transaction of its own (``attempts`` + 1, ``last_error``,
    the retry policy's backoff or FAILED), for each job still as it was before the
    claim; the message says what it recorded — or that the recording failed too, in
    which case the jobs are claimable again at once, their attempt not counted.

    ``outcome_unknown`` True: the connection died during the commit, so whether it
    was applied is unknown. It is atomic either way: the whole pass committed (the
    handlers' writes and the outcomes), or none of it did and the jobs are claimable
    again at once, their attempt not counted.
    """

    def __init__(self, message: str, *, outcome_unknown: bool = False) -> None:
        super().__init__(message)
        self.outcome_unknown = outcome_unknown


class PermanentFailure(ProgrammaError):
    """Raised by a handler: this job cannot succeed, so do not retry it.

    The worker records the error as ``attributes.last_error`` and moves the job to
    FAILED at once, whatever its retry policy (also with ``retry=None``).
    """


class TaskDocumentError(PermanentFailure):
    """A job on a task's topic whose document does not bind to the task's signature
    (a missing or unknown argument, a value its annotation cannot decode): it would
    fail the same way on every attempt."""


class InstanceNotFound(PermanentFailure):
    """A mapped instance passed to a task no longer exists: its row was deleted
    between the enqueue and the run (or the primary key names no row)."""
