"""Tasks: plain functions declared once, enqueued by a typed call, served by one worker.

::

    tasks = TaskRegistry(JobQueue(Job))

    @tasks.task
    def send_receipt(order: Order, note: str = "") -> None:
        mailer.send(order.email, note)

    with Session(engine) as session, session.begin():
        session.add(order)
        send_receipt.enqueue(session, order, note="thanks")   # checked here, not in the worker

    Worker(tasks, engine).run()                              # serves every task's topic

A :class:`Task` is still its function (``send_receipt(order)`` calls it). Its call
is bound against the signature and stored as a JSON document before anything is
written (:mod:`.arguments`); a :class:`TaskRegistry` gives a worker its topics, a
handler dispatching by topic (:mod:`.dispatch`) and each task's retry policy.
"""

from __future__ import annotations

import copy
import dataclasses
import enum
import functools
import inspect
import logging
import typing
import uuid
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Generic, ParamSpec, TypeVar, overload

from .. import _validation as check
from .._queue_base import QueueBase
from .._session_types import AsyncSessionLike, SessionLike
from ..async_queue import AsyncJobQueue
from ..exceptions import ConfigurationError, InvalidJobInput
from ..models import JobState
from ..queue import JobQueue
from ..retry import RetryPolicy
from ..uniqueness import OnConflict, check_on_conflict, check_unique_states
from ..worker.served import WorkerParts
from ..worker.settings import WorkerMode, WorkerOptions
from .arguments import Arguments
from .codecs import EncodeContext
from .dispatch import AsyncTaskHandler, TaskHandler
from .hooks import HookPoints
from .tracing import NO_TRACING, NoTracing, Sending, Tracing
from .unique import Unique

__all__ = ["JobOptions", "Task", "TaskRegistry"]

log = logging.getLogger("programma_sa.tasks")

P = ParamSpec("P")
R = TypeVar("R")

_MODES: tuple[WorkerMode, ...] = typing.get_args(WorkerMode)


class _Inherit(enum.Enum):
    """A task setting left to its registry's."""

    FROM_REGISTRY = "from the registry"


FROM_REGISTRY = _Inherit.FROM_REGISTRY


@dataclass(frozen=True)
class JobOptions:
    """How a task's jobs are enqueued: what :meth:`JobQueue.add_job
    <programma_sa.JobQueue.add_job>` takes besides the topic and the data.

    ``retry_after_seconds`` and ``priority`` are the task's defaults, and
    ``on_conflict`` and ``unique_states`` its :class:`Unique` declaration's; every
    option may be set per call through :meth:`Task.using`. A ``unique_key`` given
    there wins over the key the task derives from the call.
    """

    attributes: Mapping[str, Any] | None = None
    run_after_seconds: float | None = None
    run_after_date: datetime | str | None = None
    retry_after_seconds: int | None = 30
    priority: int = 0
    unique_key: str | None = None
    unique_states: Collection[JobState | str] | None = None
    on_conflict: OnConflict = "keep"

    def spec_fields(self, carrier: Mapping[str, str]) -> dict[str, Any]:
        """These options as :class:`~programma_sa.JobSpec` fields (all but
        ``on_conflict``, which applies to a whole ``add_jobs``), the attributes with
        the trace context in ``carrier`` (the caller's own attributes win)."""
        options = {name: getattr(self, name) for name in _SPEC_FIELDS}
        if carrier:
            options["attributes"] = {**carrier, **(self.attributes or {})}
        return options


_JOB_OPTION_NAMES = tuple(field.name for field in dataclasses.fields(JobOptions))
_SPEC_FIELDS = tuple(name for name in _JOB_OPTION_NAMES if name != "on_conflict")
#: The options :meth:`Task.using` checks at once (``None``: the default, unchecked).
_CHECKED_NOW: dict[str, Callable[[Any], object]] = {
    "priority": check.check_priority,
    "unique_key": check.check_unique_key,
    "unique_states": check_unique_states,
    "on_conflict": check_on_conflict,
}


class Task(HookPoints, Generic[P, R]):
    """A function declared with :meth:`TaskRegistry.task`; calling it calls the function.

    :ivar topic: the topic of its jobs.
    :ivar registry: the :class:`TaskRegistry` it belongs to.
    :ivar retry: its retry policy (``None``: the worker's ``retry``).
    :ivar mode: the worker mode it needs (``None``: either).
    :ivar unique: how it derives a unique key from each call (``None``: it does not).
    :ivar function: the function itself.
    """

    def __init__(
        self,
        registry: TaskRegistry,
        function: Callable[P, R],
        *,
        topic: str,
        retry: RetryPolicy | None,
        mode: WorkerMode | None,
        job: JobOptions,
        unique: Unique | None = None,
    ) -> None:
        super().__init__()
        functools.update_wrapper(self, function)
        self.registry = registry
        self.function = function
        self.topic = topic
        self.retry = retry
        self.mode = mode
        self.job = job
        #: Whether the function is a coroutine function (``async def``).
        self.is_async = inspect.iscoroutinefunction(function)
        #: The signature and the codecs of its arguments.
        self.arguments = Arguments(function, topic)
        self.unique = None if unique is None else unique.checked(self.arguments)

    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> R:
        """Call the function itself, here and now (no job)."""
        return self.function(*args, **kwargs)

    def __repr__(self) -> str:
        return f"<Task {self.topic}>"

    @property
    def observed(self) -> bool:
        """Whether a run of this task has hooks or a span around it."""
        registry = self.registry
        return registry.tracing is not NO_TRACING or registry.hooked or self.hooked

    def using(self, **options: Any) -> Task[P, R]:
        """This task with other job options for the next enqueues: ``attributes``,
        ``run_after_seconds``, ``run_after_date``, ``retry_after_seconds``,
        ``priority``, ``unique_key`` (instead of the key the task derives),
        ``unique_states``, ``on_conflict`` (see :class:`JobOptions`)::

            send_receipt.using(run_after_seconds=3600, priority=10).enqueue(session, order)

        ``priority``, ``unique_key``, ``unique_states`` and ``on_conflict`` are
        checked here; the others when the configured task enqueues (before anything
        is written, as every option).

        :raises InvalidJobInput: an option that is not one of those, or a bad value.
        """
        unknown = set(options).difference(_JOB_OPTION_NAMES)
        if unknown:
            raise InvalidJobInput(
                f"task {self.topic!r}: using() takes {', '.join(_JOB_OPTION_NAMES)}; "
                f"not {', '.join(sorted(unknown))}"
            )
        for name, value in options.items():
            if name in _CHECKED_NOW and value is not None:
                try:
                    _CHECKED_NOW[name](value)
                except InvalidJobInput as error:
                    raise InvalidJobInput(f"task {self.topic!r}: {error}") from None
        configured = copy.copy(self)
        configured.job = dataclasses.replace(self.job, **options)
        return configured

    # -- enqueue -----------------------------------------------------------------------

    def enqueue(self, session: SessionLike, *args: P.args, **kwargs: P.kwargs) -> uuid.UUID:
        """Enqueue a call of this task in the session's transaction; return the job id.

        The call is bound against the function's signature and every argument
        encoded first: a wrong call raises :class:`~programma_sa.InvalidJobInput`
        naming the task and the argument, before anything is written, and the
        transaction stays usable. A mapped instance not flushed yet is flushed (the
        session's own pending rows with it) to learn its primary key.
        """
        calls = self._one_call(args, kwargs)
        if calls.need_flush:
            session.flush()
            calls.encode_flushed()
        with calls.sending() as specs:
            queue = self.registry.queue
            on_conflict = self.job.on_conflict
            job_id = queue.add_job(session, self.topic, **specs[0], on_conflict=on_conflict)
            return calls.sent([job_id])[0]

    def enqueue_many(
        self, session: SessionLike, calls: Iterable[tuple[Any, ...] | Mapping[str, Any]]
    ) -> list[uuid.UUID]:
        """Enqueue many calls in one statement; the job ids in the order of ``calls``.

        Each call is a tuple of positional arguments or a mapping of keyword
        arguments. Every call is checked before anything is written.
        """
        many = self._bind_each(calls)
        if many.need_flush:
            session.flush()
            many.encode_flushed()
        with many.sending() as specs:
            queue = self.registry.queue
            return many.sent(
                queue.add_jobs(session, self.topic, specs, on_conflict=self.job.on_conflict)
            )

    async def enqueue_async(
        self, session: AsyncSessionLike, *args: P.args, **kwargs: P.kwargs
    ) -> uuid.UUID:
        """:meth:`enqueue` on an ``AsyncSession``."""
        calls = self._one_call(args, kwargs)
        if calls.need_flush:
            await session.flush()
            calls.encode_flushed()
        with calls.sending() as specs:
            queue = self.registry.async_queue
            on_conflict = self.job.on_conflict
            job_id = await queue.add_job(session, self.topic, **specs[0], on_conflict=on_conflict)
            return calls.sent([job_id])[0]

    async def enqueue_many_async(
        self, session: AsyncSessionLike, calls: Iterable[tuple[Any, ...] | Mapping[str, Any]]
    ) -> list[uuid.UUID]:
        """:meth:`enqueue_many` on an ``AsyncSession``."""
        many = self._bind_each(calls)
        if many.need_flush:
            await session.flush()
            many.encode_flushed()
        with many.sending() as specs:
            queue = self.registry.async_queue
            on_conflict = self.job.on_conflict
            return many.sent(
                await queue.add_jobs(session, self.topic, specs, on_conflict=on_conflict)
            )

    def _one_call(self, args: tuple[Any, ...], kwargs: Mapping[str, Any]) -> _Calls:
        where = self.arguments.where
        return _Calls(self, [(where, self.arguments.bind(args, kwargs, where))])

    def _bind_each(self, calls: Iterable[tuple[Any, ...] | Mapping[str, Any]]) -> _Calls:
        """The calls of :meth:`enqueue_many`, bound."""
        bound = []
        for index, call in enumerate(calls):
            where = f"{self.arguments.where}, call #{index}"
            if isinstance(call, tuple):
                bound.append((where, self.arguments.bind(call, {}, where)))
            elif isinstance(call, Mapping):
                bound.append((where, self.arguments.bind((), call, where)))
            else:
                raise InvalidJobInput(
                    f"{where}: a call is a tuple of positional arguments or a mapping of "
                    f"keyword arguments, got {type(call).__name__}"
                )
        return _Calls(self, bound)


class _Calls:
    """Bound calls of one task on their way into the jobs table: their documents,
    the flush that mapped instances pending in the session may need, the producer
    span, and the errors of the enqueue named after the task."""

    def __init__(self, task: Task[..., Any], bound: list[tuple[str, dict[str, Any]]]) -> None:
        self._task = task
        self._bound = bound
        self._documents: list[dict[str, Any]] = []
        #: Whether a mapped instance is pending in the session: flush, then
        #: :meth:`encode_flushed`.
        self.need_flush = self._encode()
        self._sending = Sending()

    def _encode(self) -> bool:
        pending = False
        self._documents = []
        for where, given in self._bound:
            context = EncodeContext()
            self._documents.append(self._task.arguments.encode(given, context, where))
            pending = pending or bool(context.pending)
        return pending

    def encode_flushed(self) -> None:
        """Encode again once the session flushed: every instance has its key now."""
        if self._encode():
            raise InvalidJobInput(
                f"{self._task.arguments.where}: a mapped instance has no primary key after "
                "the session flushed: it is pending in another session"
            )

    @contextmanager
    def sending(self) -> Iterator[list[dict[str, Any]]]:
        """The jobs to add (``add_job`` keywords / ``add_jobs`` specs, each with its
        unique key), in the producer span; an error of the enqueue names the task."""
        task = self._task
        producing = task.registry.tracing.producing(task.topic, len(self._documents))
        with producing as self._sending:
            options = task.job.spec_fields(self._sending.carrier)
            try:
                yield [
                    {"data": document, **options, "unique_key": self._key(document)}
                    for document in self._documents
                ]
            except InvalidJobInput as error:
                raise type(error)(f"{task.arguments.where}: {error}") from error

    def _key(self, document: dict[str, Any]) -> str | None:
        """The call's unique key: the one given to ``using``, else the task's derived one."""
        task = self._task
        if task.job.unique_key is not None or task.unique is None:
            return task.job.unique_key
        return task.unique.key(task.topic, task.arguments, document)

    def sent(self, job_ids: list[uuid.UUID]) -> list[uuid.UUID]:
        """Note the enqueued jobs' ids on the producer span; return them."""
        self._sending.sent(job_ids)
        return job_ids


class TaskRegistry(HookPoints):
    """The tasks of one jobs table: declare them, enqueue them, serve them.

    :param queue: a :class:`~programma_sa.JobQueue` or
        :class:`~programma_sa.AsyncJobQueue`; the registry keeps both faces of its
        table (:attr:`queue` for :meth:`Task.enqueue`, :attr:`async_queue` for
        :meth:`Task.enqueue_async`), with its ``notify`` and ``max_payload_bytes``.
    :param retry: the retry policy of tasks that declare none (default ``None``:
        the worker's ``retry`` setting).
    :param retry_after_seconds: the visibility timeout of tasks that declare none
        (default 30).
    :param mode: the worker mode of tasks that declare none (default ``None``:
        served by a worker of either mode).
    :param tracing: OpenTelemetry spans and trace context (:mod:`.tracing`; needs
        ``programma-sa[otel]``).

    ``Worker(registry, engine)`` (or ``AsyncWorker``, or ``programma-sa worker
    module:registry``) serves its tasks; see :meth:`worker_parts`.
    """

    def __init__(
        self,
        queue: JobQueue | AsyncJobQueue,
        *,
        retry: RetryPolicy | None = None,
        retry_after_seconds: int | None = 30,
        mode: WorkerMode | None = None,
        tracing: bool = False,
    ) -> None:
        super().__init__()
        if not isinstance(queue, QueueBase):
            raise ConfigurationError(
                f"a TaskRegistry needs a JobQueue or an AsyncJobQueue, got {queue!r}"
            )
        #: The sync face of the registry's jobs table.
        self.queue = queue if isinstance(queue, JobQueue) else _face(JobQueue, queue)
        #: The asyncio face of the same table.
        self.async_queue = (
            queue if isinstance(queue, AsyncJobQueue) else _face(AsyncJobQueue, queue)
        )
        self._defaults = _TaskSettings(retry, retry_after_seconds, mode)
        #: Producer and consumer spans (:mod:`.tracing`), or nothing.
        self.tracing: NoTracing = Tracing() if tracing else NO_TRACING
        self._tasks: dict[str, Task[..., Any]] = {}

    # -- declaring tasks ---------------------------------------------------------------

    @overload
    def task(self, function: Callable[P, R], /) -> Task[P, R]: ...

    @overload
    def task(
        self,
        function: None = None,
        /,
        *,
        topic: str | None = None,
        retry: RetryPolicy | _Inherit | None = FROM_REGISTRY,
        retry_after_seconds: int | _Inherit | None = FROM_REGISTRY,
        mode: WorkerMode | _Inherit | None = FROM_REGISTRY,
        priority: int = 0,
        unique: Unique | None = None,
    ) -> Callable[[Callable[P, R]], Task[P, R]]: ...

    def task(
        self,
        function: Callable[..., Any] | None = None,
        /,
        *,
        topic: str | None = None,
        retry: RetryPolicy | _Inherit | None = FROM_REGISTRY,
        retry_after_seconds: int | _Inherit | None = FROM_REGISTRY,
        mode: WorkerMode | _Inherit | None = FROM_REGISTRY,
        priority: int = 0,
        unique: Unique | None = None,
    ) -> Any:
        """Declare a task: ``@registry.task`` or ``@registry.task(topic=..., ...)``.

        :param topic: the topic of its jobs (default: the function's module and
            qualified name, ``myapp.jobs.send_receipt``).
        :param retry: its retry policy (``None``: the worker's).
        :param retry_after_seconds: its visibility timeout (``None``: never
            redelivered).
        :param mode: the worker mode it needs, ``"lease"`` or ``"transaction"``
            (``None``: either).
        :param priority: the priority of its jobs (default 0; higher is claimed
            first); a call may give another through :meth:`Task.using`.
        :param unique: its jobs are unique by the chosen arguments of each call
            (:class:`Unique`); ``None``: no unique key unless a call gives one.
        :raises ConfigurationError: a bad setting, or a topic already declared.
        """

        def declare(function: Callable[P, R]) -> Task[P, R]:
            settings = _TaskSettings(
                retry=self._defaults.retry if retry is FROM_REGISTRY else retry,
                retry_after_seconds=(
                    self._defaults.retry_after_seconds
                    if retry_after_seconds is FROM_REGISTRY
                    else retry_after_seconds
                ),
                mode=self._defaults.mode if mode is FROM_REGISTRY else mode,
                topic=_topic(function, topic),
                priority=priority,
            )
            if settings.topic in self._tasks:
                taken = self._tasks[settings.topic]
                raise ConfigurationError(f"topic {settings.topic!r} is already {taken!r}'s")
            task = Task(
                self,
                function,
                topic=settings.topic,
                retry=settings.retry,
                mode=settings.mode,
                job=_job_options(settings, unique),
                unique=unique,
            )
            self._tasks[task.topic] = task
            return task

        return declare if function is None else declare(function)

    # -- the declared tasks ------------------------------------------------------------

    def __getitem__(self, topic: str) -> Task[..., Any]:
        """The task of ``topic`` (``KeyError`` if there is none)."""
        return self._tasks[topic]

    def __iter__(self) -> Iterator[Task[..., Any]]:
        return iter(list(self._tasks.values()))

    def __len__(self) -> int:
        return len(self._tasks)

    @property
    def topics(self) -> list[str]:
        """The topics of the declared tasks, in declaration order."""
        return list(self._tasks)

    # -- serving them ------------------------------------------------------------------

    def worker_parts(
        self, topics: str | Sequence[str] | None, options: WorkerOptions, *, asynchronous: bool
    ) -> WorkerParts:
        """What a worker given this registry is built from (its ``HandlerSource``).

        * ``topics``: the tasks to serve (``None``: all the worker's mode serves).
        * The mode: ``options["mode"]`` if given, else the one mode the tasks ask for
          (``"lease"`` if none asks); a task asking for the other mode is left to a
          worker of that mode (logged), and one named in ``topics`` is an error.
        * A sync ``Worker`` cannot run ``async def`` tasks (an ``AsyncWorker`` runs
          both kinds): naming one, or serving all with one among them, is an error.
        * The tasks' own retry policies go into ``topic_retry`` (entries of the
          caller's own ``topic_retry`` win).

        :raises ConfigurationError: as above, or a topic that is no task's.
        """
        named = [topics] if isinstance(topics, str) else topics
        chosen = self._named_tasks(named)
        mode = options.get("mode") or _one_mode(chosen)
        served = [task for task in chosen if task.mode in (None, mode)]
        left = [task for task in chosen if task not in served]
        if left and named is not None:
            raise ConfigurationError(
                f"task {left[0].topic!r} needs a {left[0].mode}-mode worker, not {mode}"
            )
        if not asynchronous:
            async_tasks = [task.topic for task in served if task.is_async]
            if async_tasks:
                raise ConfigurationError(
                    f"tasks {', '.join(async_tasks)} are async def: serve them with an "
                    "AsyncWorker (it runs plain tasks too), or name the topics this Worker serves"
                )
        if not served:
            raise ConfigurationError(f"no task of this registry runs in {mode} mode")
        if left:
            log.info(
                "tasks %s are left to a %s-mode worker",
                ", ".join(task.topic for task in left),
                left[0].mode,
            )
        retries = {task.topic: task.retry for task in served if task.retry is not None}
        tasks = {task.topic: task for task in served}
        return WorkerParts(
            queue=self.async_queue if asynchronous else self.queue,
            topics=list(tasks),
            handler=AsyncTaskHandler(tasks) if asynchronous else TaskHandler(tasks),
            options={
                **options,
                "mode": mode,
                "topic_retry": {**retries, **options.get("topic_retry", {})},
            },
        )

    def _named_tasks(self, topics: Sequence[str] | None) -> list[Task[..., Any]]:
        if not self._tasks:
            raise ConfigurationError("the registry has no task to serve")
        if topics is None:
            return list(self._tasks.values())
        unknown = [topic for topic in topics if topic not in self._tasks]
        if unknown:
            raise ConfigurationError(f"topic {unknown[0]!r} is not the topic of a task here")
        return [self._tasks[topic] for topic in dict.fromkeys(topics)]


Q = TypeVar("Q", bound=QueueBase)


def _job_options(settings: _TaskSettings, unique: Unique | None) -> JobOptions:
    """A declared task's job options: its settings, and its uniqueness's policy."""
    options = JobOptions(
        retry_after_seconds=settings.retry_after_seconds, priority=settings.priority
    )
    if unique is None:
        return options
    if not isinstance(unique, Unique):
        raise ConfigurationError(f"unique must be a Unique or None, got {unique!r}")
    return dataclasses.replace(options, on_conflict=unique.on_conflict, unique_states=unique.states)


def _face(kind: type[Q], queue: QueueBase) -> Q:
    """The ``kind`` face of ``queue``'s table, with its settings."""
    return kind(queue.table, notify=queue.notify, max_payload_bytes=queue.max_payload_bytes)


def _one_mode(tasks: list[Task[..., Any]]) -> WorkerMode:
    """The mode a worker takes when none is given: the one its tasks ask for."""
    asked = {task.mode for task in tasks if task.mode is not None}
    if len(asked) > 1:
        raise ConfigurationError(
            "the tasks ask for both lease and transaction mode: pass mode= to serve "
            "those of one mode (and run a worker per mode)"
        )
    return asked.pop() if asked else "lease"


def _topic(function: Callable[..., Any], topic: str | None) -> str:
    """The given topic, or a stable one from the function's module and qualified name."""
    if not callable(function):
        raise ConfigurationError(f"a task is a function, got {function!r}")
    if topic is None:
        module = getattr(function, "__module__", None)
        if module in (None, "__main__"):
            raise ConfigurationError(
                f"task {function!r} is defined in __main__: its default topic would change "
                "when the module is imported by a worker; give it a topic="
            )
        topic = f"{module}.{function.__qualname__}"
    try:
        return check.check_topic(topic)
    except InvalidJobInput as error:
        raise ConfigurationError(str(error)) from error


@dataclass(frozen=True)
class _TaskSettings:
    """A task's (or the registry's default) settings, checked."""

    retry: RetryPolicy | None
    retry_after_seconds: int | None
    mode: WorkerMode | None
    topic: str = ""
    priority: int = 0

    def __post_init__(self) -> None:
        if self.retry is not None and not isinstance(self.retry, RetryPolicy):
            raise ConfigurationError(f"retry must be a RetryPolicy or None, got {self.retry!r}")
        if self.mode is not None and self.mode not in _MODES:
            raise ConfigurationError(f"mode must be lease, transaction or None, got {self.mode!r}")
        try:
            seconds = check.retry_seconds(self.retry_after_seconds)
            check.check_priority(self.priority)
        except InvalidJobInput as error:
            raise ConfigurationError(str(error)) from error
        object.__setattr__(self, "retry_after_seconds", seconds)
