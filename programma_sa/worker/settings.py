"""A worker's settings: one frozen, validated object for both workers and the CLI.

:class:`WorkerSettings` checks every value when it is built, so a bad setting raises
:class:`~programma_sa.ConfigurationError` naming it at start-up, the same from
``Worker``, ``AsyncWorker`` and ``programma-sa worker``. The workers keep their
keyword arguments (typed by :class:`WorkerOptions`) and build it::

    Worker(queue, engine, "emails", send, concurrency=4)       # keywords, checked here
    Worker.from_settings(queue, engine, send, WorkerSettings(topics=["emails"], concurrency=4))
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from contextlib import AbstractAsyncContextManager, AbstractContextManager
from dataclasses import dataclass, field, fields
from types import MappingProxyType
from typing import Any, Literal, TypedDict, cast

from sqlalchemy.engine import URL

from .. import _validation as check
from .._operations.maintenance import DEFAULT_BATCH_SIZE
from .._retention import Retention
from .._urls import parse_url
from ..exceptions import ConfigurationError, InvalidJobInput
from ..retry import DEFAULT_RETRY, RetryPolicy
from ..schedules import Schedule, check_schedules

__all__ = [
    "DEFAULT_CANCEL_GRACE_PERIOD",
    "DEFAULT_PRUNE_INTERVAL",
    "HandlerContext",
    "WorkerMode",
    "WorkerOptions",
    "WorkerSettings",
]

#: ``"lease"``: claim and commit, run the handler outside any transaction;
#: ``"transaction"``: claim, handler and outcome in one transaction.
WorkerMode = Literal["lease", "transaction"]
_MODES: tuple[WorkerMode, ...] = ("lease", "transaction")
#: Seconds between two prune passes of a worker with a ``retention``.
DEFAULT_PRUNE_INTERVAL = 60.0
#: Called with a handler's job context (``JobContext`` / ``AsyncJobContext``) before
#: each handler call; what it returns is entered around the call: a context manager
#: for ``Worker``, an async context manager for ``AsyncWorker``.
HandlerContext = Callable[
    [Any], "AbstractContextManager[object] | AbstractAsyncContextManager[object]"
]
#: Seconds an AsyncWorker waits for a cancelled job's handler before cancelling its task.
DEFAULT_CANCEL_GRACE_PERIOD = 5.0


def _positive_seconds(value: object, what: str, *, allow_zero: bool = False) -> float:
    if (
        isinstance(value, bool)
        or not isinstance(value, (int, float))
        or not math.isfinite(value)
        or value < 0
        or (value == 0 and not allow_zero)
    ):
        bound = ">= 0" if allow_zero else "> 0"
        raise ConfigurationError(
            f"{what} must be a finite number of seconds {bound}, got {value!r}"
        )
    return float(value)


def _positive_int(value: object, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigurationError(f"{what} must be an int >= 1, got {value!r}")
    return value


def _max_jobs(value: object) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigurationError(
            f"max_jobs must be an int >= 1, or None for the adaptive claim size, got {value!r}"
        )
    return value


def _topics(value: object) -> tuple[str, ...]:
    items = [value] if isinstance(value, str) else value
    if isinstance(items, bytes) or not isinstance(items, Sequence) or not items:
        raise ConfigurationError(
            f"topics must be a topic or a non-empty list of topics, got {value!r}"
        )
    try:
        checked = [check.check_topic(topic) for topic in items]
    except InvalidJobInput as error:
        raise ConfigurationError(f"topics: {error}") from error
    return tuple(dict.fromkeys(checked))  # de-duplicated, order kept


def _topic_retry(value: object) -> Mapping[str, RetryPolicy | None]:
    if not isinstance(value, Mapping):
        raise ConfigurationError(
            f"topic_retry must be a mapping of topic to RetryPolicy or None, got {value!r}"
        )
    for topic, policy in value.items():
        if not isinstance(topic, str) or (
            policy is not None and not isinstance(policy, RetryPolicy)
        ):
            raise ConfigurationError(
                f"topic_retry must map topics to a RetryPolicy or None, got {topic!r}: {policy!r}"
            )
    # A read-only copy: the caller's dict can change without changing the settings.
    return MappingProxyType(dict(value))


def _database_url(value: object) -> URL | None:
    if value is None:
        return None
    if not isinstance(value, (str, URL)):
        raise ConfigurationError(f"database_url must be a URL string, got {value!r}")
    return parse_url(value, "database_url")


@dataclass(frozen=True)
class WorkerSettings:
    """Every setting of a worker, checked when built.

    :param topics: one topic or a list of topics; their jobs are claimed in turn
        (stored as a de-duplicated tuple).
    :param mode: ``"lease"`` (default) or ``"transaction"``.
    :param heartbeat: seconds between polls when nothing wakes the worker (default
        5.0): the fallback for missed notifications and for ``listen=False``.
    :param max_jobs: jobs claimed per claim statement; ``None`` (the default): an
        adaptive size (:class:`~programma_sa.worker.claim_size.AdaptiveClaimSize`) —
        10 at first, then from 1 to 1,000 in the steps 1, 2, 5, 10, 20, 50, …,
        aiming at about a second of handler work per claim: large for a deep queue
        of quick jobs, small for slow handlers. An int fixes the size.
    :param concurrency: handlers running at once (default 1): threads for
        ``Worker``, tasks for ``AsyncWorker``. In lease mode the jobs of a claim are
        spread over them; in transaction mode each runs its own claim batches, each
        in its own transaction.
    :param listen: wake on LISTEN/NOTIFY (default True). False for PgBouncer in
        transaction-pooling mode. On SQLite, which has none, the worker polls.
    :param database_url: where to LISTEN; by default the URL of the worker's bind.
    :param retry: what to do after a handler raised (default
        :data:`~programma_sa.retry.DEFAULT_RETRY`); ``None``: record the error and
        leave the job to its visibility timeout.
    :param topic_retry: the retry policy of particular topics, in place of ``retry``
        (a task registry fills it from its tasks' ``retry``).
    :param auto_complete: complete a job whose handler returned without changing it
        (default True). False is the npm package's way: the handler moves its job.
    :param shutdown_timeout: seconds ``run()`` waits for running handlers once
        stopping (default 30.0).
    :param retention: prune finished jobs by this :class:`~programma_sa.Retention`
        from the worker's loop (default ``None``: never prune).
    :param prune_interval: seconds between two prune passes (default 60.0); each
        pass is a :meth:`Pruner.run_once <programma_sa.Pruner.run_once>`, so one
        worker at a time prunes across processes.
    :param prune_batch_size: rows deleted per prune transaction (default 1000).
    :param handler_context: called with the job's context before each handler call;
        the handler runs inside what it returns — a context manager for ``Worker``,
        an async one for ``AsyncWorker`` (default ``None``: nothing around the
        call). In transaction mode it is entered inside the handler's SAVEPOINT, so
        a failure in it counts as the handler's. What frameworks plug in:
        :meth:`programma_sa.flask.Programma.handler_context` runs each handler in
        the Flask app context.
    :param schedules: periodic :class:`~programma_sa.Schedule` objects whose jobs
        this worker enqueues between its claims (default none); any number of
        workers may run the same schedules: each fire time is enqueued once.
    :param lease_renewal: lease mode: while a job is held — waiting for a handler
        or running one — renew its lease (default True), when a third of it has
        passed and at least every ``heartbeat`` seconds, so a handler may run past
        the job's visibility timeout; the timeout stays the crash-recovery window
        (a worker that dies stops renewing). False: the visibility timeout bounds
        the time from the claim to the outcome, as before programma_0005.
    :param direct_claim: ``Worker`` on PostgreSQL with psycopg 3, given an Engine:
        execute its one-topic lease claim with psycopg directly, as a prepared
        statement on a connection it keeps checked out from the engine's pool while
        it runs (default True) — the same statement and results, a third of the
        client time. Used only while the engine has no listener of the events that
        would then miss the claim (``before_cursor_execute`` and the like: see
        docs/worker.md), and no ``echo``. False: every claim goes through SQLAlchemy.
        Ignored elsewhere (``AsyncWorker``, SQLite, MariaDB).
    :param cancel_grace_period: seconds an ``AsyncWorker`` gives a handler whose
        job was cancelled to end on its own (it sees ``ctx.cancelled``) before it
        cancels the handler's task (default 5.0). A sync handler cannot be stopped
        from outside: it should look at ``ctx.cancelled``.
    """

    topics: Sequence[str]
    mode: WorkerMode = "lease"
    heartbeat: float = 5.0
    max_jobs: int | None = None
    concurrency: int = 1
    listen: bool = True
    database_url: str | URL | None = None
    retry: RetryPolicy | None = DEFAULT_RETRY
    topic_retry: Mapping[str, RetryPolicy | None] = field(default_factory=dict)
    auto_complete: bool = True
    shutdown_timeout: float = 30.0
    retention: Retention | None = None
    prune_interval: float = DEFAULT_PRUNE_INTERVAL
    prune_batch_size: int = DEFAULT_BATCH_SIZE
    handler_context: HandlerContext | None = None
    schedules: Sequence[Schedule] = ()
    lease_renewal: bool = True
    cancel_grace_period: float = DEFAULT_CANCEL_GRACE_PERIOD
    direct_claim: bool = True

    def __post_init__(self) -> None:
        if self.mode not in _MODES:
            raise ConfigurationError(f"mode must be one of {', '.join(_MODES)}, got {self.mode!r}")
        if self.retry is not None and not isinstance(self.retry, RetryPolicy):
            raise ConfigurationError(f"retry must be a RetryPolicy or None, got {self.retry!r}")
        if self.retention is not None and not isinstance(self.retention, Retention):
            raise ConfigurationError(
                f"retention must be a Retention or None, got {self.retention!r}"
            )
        if self.handler_context is not None and not callable(self.handler_context):
            raise ConfigurationError(
                f"handler_context must be callable or None, got {self.handler_context!r}"
            )
        for name in ("listen", "auto_complete", "lease_renewal", "direct_claim"):
            flag = getattr(self, name)
            if not isinstance(flag, bool):
                raise ConfigurationError(f"{name} must be True or False, got {flag!r}")
        normalised = {
            "topics": _topics(self.topics),
            "heartbeat": _positive_seconds(self.heartbeat, "heartbeat"),
            "max_jobs": _max_jobs(self.max_jobs),
            "concurrency": _positive_int(self.concurrency, "concurrency"),
            "shutdown_timeout": _positive_seconds(
                self.shutdown_timeout, "shutdown_timeout", allow_zero=True
            ),
            "prune_interval": _positive_seconds(self.prune_interval, "prune_interval"),
            "prune_batch_size": _positive_int(self.prune_batch_size, "prune_batch_size"),
            "cancel_grace_period": _positive_seconds(
                self.cancel_grace_period, "cancel_grace_period", allow_zero=True
            ),
            "database_url": _database_url(self.database_url),
            "topic_retry": _topic_retry(self.topic_retry),
            "schedules": check_schedules(self.schedules),
        }
        for name, value in normalised.items():
            object.__setattr__(self, name, value)

    def retry_for(self, topic: str) -> RetryPolicy | None:
        """The retry policy of ``topic``'s jobs: its ``topic_retry`` entry, else ``retry``."""
        return self.topic_retry.get(topic, self.retry)

    def options(self) -> WorkerOptions:
        """Every setting but ``topics``, as the workers' keyword arguments."""
        options = {field.name: getattr(self, field.name) for field in fields(self)}
        del options["topics"]
        return cast(WorkerOptions, options)


class WorkerOptions(TypedDict, total=False):
    """The keyword arguments of ``Worker`` and ``AsyncWorker``: the fields of
    :class:`WorkerSettings` besides ``topics`` (a test keeps the two in step)."""

    mode: WorkerMode
    heartbeat: float
    max_jobs: int | None
    concurrency: int
    listen: bool
    database_url: str | URL | None
    retry: RetryPolicy | None
    topic_retry: Mapping[str, RetryPolicy | None]
    auto_complete: bool
    shutdown_timeout: float
    retention: Retention | None
    prune_interval: float
    prune_batch_size: int
    handler_context: HandlerContext | None
    schedules: Sequence[Schedule]
    lease_renewal: bool
    cancel_grace_period: float
    direct_claim: bool
