"""One API over ``Worker`` and ``AsyncWorker``, so that each worker test is written once.

A shared test is an ``async def`` that takes the ``harness`` fixture: the asyncio
flavours run their ``AsyncWorker`` on the test's event loop; the sync flavour calls its
blocking ``Worker`` from that loop (nothing else runs there). Test-side calls that block
in one flavour and are awaited in the other are methods: ``await harness.run_once(worker)``,
``await harness.join(worker, timeout)``.

A handler is written once, as an ``async def`` body in which every call that is a
coroutine under asyncio (``ctx.move_to_done()``, ``ctx.session.flush()``,
``harness.sleep(…)``) is spelled ``await awaited(…)``. :meth:`Harness.worker` adapts the
body: the ``AsyncWorker`` takes it as it is, the ``Worker`` a plain function that runs it
to its end without an event loop (:func:`blocking`) — under the sync worker every
awaited value is already a result, so the body never suspends.
"""

from __future__ import annotations

import asyncio
import inspect
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from contextlib import asynccontextmanager
from typing import Any, ClassVar, TypeVar

import pytest
from sqlalchemy import Engine, Executable
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
)
from sqlalchemy.orm import Session, sessionmaker

from programma_sa import (
    AsyncJobContext,
    AsyncJobQueue,
    AsyncWorker,
    JobContext,
    JobQueue,
    PassResult,
    Worker,
)

from ..app import Job
from ..asyncio.urls import async_url
from ..backends import (
    ASYNC_DRIVERS,
    DATABASE,
    SYNC_DRIVER,
    make_async_engine,
    make_engine,
)

T = TypeVar("T")
Context = JobContext | AsyncJobContext
#: A handler body: an ``async def`` (or an object with an ``async def __call__``).
Body = Callable[[Any], Coroutine[Any, Any, Any]]
AnyWorker = Worker | AsyncWorker
AnyEngine = Engine | AsyncEngine

#: What a shared test runs on: the sync Worker, and the AsyncWorker on each asyncio driver.
FLAVOURS = ("sync", *(f"async-{driver}" for driver in ASYNC_DRIVERS))
ASYNC_FLAVOURS = FLAVOURS[1:]


def on(*flavours: str) -> pytest.MarkDecorator:
    """Run a shared test on ``flavours`` only, instead of every one of :data:`FLAVOURS`
    (on SQLite and MariaDB an asyncio flavour is its one asyncio driver's)."""
    if DATABASE != "postgresql":
        flavours = tuple(dict.fromkeys(f if f == "sync" else ASYNC_FLAVOURS[0] for f in flavours))
    return pytest.mark.parametrize("harness", flavours, indirect=True)


async def awaited(value: T | Awaitable[T]) -> T:
    """``value``, awaited if it is awaitable: one spelling for a call that returns a
    result in the sync flavour and a coroutine in the asyncio ones."""
    if inspect.isawaitable(value):
        return await value
    return value


def blocking(body: Body) -> Callable[[JobContext], Any]:
    """The sync ``Worker``'s handler for ``body``: runs it to its end, no event loop."""

    def run(ctx: JobContext) -> Any:
        coroutine = body(ctx)
        try:
            coroutine.send(None)
        except StopIteration as end:
            return end.value
        coroutine.close()
        raise AssertionError(f"{body!r} suspended under the sync Worker: await only awaited(…)")

    return run


async def noop(ctx: Context) -> None:
    """A handler body that does nothing (its job completes)."""


class AsyncGate:
    """``asyncio.Event`` with ``threading.Event``'s ``wait(timeout) -> bool`` (a coroutine)."""

    def __init__(self) -> None:
        self._event = asyncio.Event()

    def set(self) -> None:
        self._event.set()

    def is_set(self) -> bool:
        return self._event.is_set()

    async def wait(self, timeout: float) -> bool:
        try:
            await asyncio.wait_for(self._event.wait(), timeout)
        except asyncio.TimeoutError:
            return False
        return True


class Harness(ABC):
    """A worker flavour behind one API: its classes, engines and waits.

    Workers made by :meth:`worker` and engines made by :meth:`engine` are stopped and
    disposed by :meth:`close`, after the test. Methods marked *handler side* return a
    result or a coroutine: call them in a handler body as ``await awaited(…)``.
    """

    #: ``"sync"`` or ``"async"``: the kind of handler the worker takes.
    kind: ClassVar[str]
    worker_class: ClassVar[type[Worker] | type[AsyncWorker]]
    queue_class: ClassVar[type[JobQueue] | type[AsyncJobQueue]]
    session_class: ClassVar[type[Session] | type[AsyncSession]]
    sessionmaker_class: ClassVar[type[sessionmaker[Any]] | type[async_sessionmaker[Any]]]

    def __init__(self, database_url: str, driver: str, bind: AnyEngine) -> None:
        self.database_url = database_url
        #: The DBAPI driver of the worker's engines: ``psycopg`` or ``asyncpg``.
        self.driver = driver
        #: The engine workers use unless given another (the sync one is the tests' own).
        self.bind = bind
        #: The queue workers use unless given another.
        self.queue: JobQueue | AsyncJobQueue = self.queue_class(Job)
        self._workers: list[AnyWorker] = []
        self._engines: list[AnyEngine] = []

    def worker(
        self,
        body: Body,
        topics: str | list[str] = "t",
        *,
        queue: JobQueue | AsyncJobQueue | None = None,
        bind: AnyEngine | None = None,
        **settings: Any,
    ) -> AnyWorker:
        """A worker of this flavour running ``body`` (polling only unless ``listen=True``)."""
        settings.setdefault("listen", False)
        worker = self.worker_class(
            self.queue if queue is None else queue,  # type: ignore[arg-type]
            self.bind if bind is None else bind,  # type: ignore[arg-type]
            topics,
            self.handler(body),
            **settings,
        )
        self._workers.append(worker)
        return worker

    @abstractmethod
    def handler(self, body: Body) -> Callable[..., Any]:
        """What this flavour's worker takes as the handler running ``body``."""

    def engine(self, application_name: str | None = None) -> AnyEngine:
        """A new engine of this flavour (a pool of its own), disposed after the test."""
        if application_name is None or DATABASE != "postgresql":
            connect_args: dict[str, Any] = {}
        elif self.driver == "asyncpg":
            connect_args = {"server_settings": {"application_name": application_name}}
        else:
            connect_args = {"application_name": application_name}
        engine = self._create_engine(connect_args)
        self._engines.append(engine)
        return engine

    @abstractmethod
    def _create_engine(self, connect_args: dict[str, Any]) -> AnyEngine:
        """A new engine of this flavour with these ``connect_args``."""

    @staticmethod
    def sync_engine(engine: AnyEngine) -> Engine:
        """The ``Engine`` that SQLAlchemy events of ``engine`` are listened on."""
        return engine.sync_engine if isinstance(engine, AsyncEngine) else engine

    async def run_once(self, worker: AnyWorker) -> PassResult:
        """``worker.run_once()``: called, or awaited."""
        return await awaited(worker.run_once())

    async def join(self, worker: AnyWorker, timeout: float) -> bool:
        """``worker.join(timeout)``: called, or awaited."""
        return await awaited(worker.join(timeout))

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[Any]:
        """A session of this flavour on :attr:`bind`, in a transaction rolled back at the end."""
        session = self.session_class(self.bind)  # type: ignore[arg-type]
        try:
            await awaited(session.begin())
            yield session
        finally:
            await awaited(session.rollback())
            await awaited(session.close())

    @abstractmethod
    async def run_sync(self, session: Any, function: Callable[..., T], *args: Any) -> T:
        """``function(sync_session, *args)`` on ``session`` of :meth:`transaction`."""

    @abstractmethod
    def gate(self) -> threading.Event | AsyncGate:
        """An event a handler waits on (*handler side*: ``wait(timeout) -> bool``)."""

    @abstractmethod
    def sleep(self, seconds: float) -> Awaitable[None] | None:
        """*Handler side*: sleep without holding up other handlers."""

    @abstractmethod
    def execute(self, engine: AnyEngine, statement: Executable) -> Awaitable[None] | None:
        """*Handler side*: run ``statement`` on a connection of ``engine``, not the pass's."""

    async def close(self) -> None:
        """Stop the workers (each must end within 10 s), then dispose the engines."""
        for worker in self._workers:
            worker.stop()
        for worker in self._workers:
            assert await self.join(worker, 10), "a worker did not stop"
        for engine in self._engines:
            await awaited(engine.dispose())


class SyncHarness(Harness):
    """``Worker``: handler threads, ``Session``, the tests' own psycopg engine."""

    kind = "sync"
    worker_class = Worker
    queue_class = JobQueue
    session_class = Session
    sessionmaker_class = sessionmaker

    def handler(self, body: Body) -> Callable[..., Any]:
        return blocking(body)

    def _create_engine(self, connect_args: dict[str, Any]) -> AnyEngine:
        return make_engine(self.database_url, connect_args=connect_args)

    async def run_sync(self, session: Any, function: Callable[..., T], *args: Any) -> T:
        return function(session, *args)

    def gate(self) -> threading.Event:
        return threading.Event()

    def sleep(self, seconds: float) -> None:
        time.sleep(seconds)

    def execute(self, engine: Any, statement: Executable) -> None:
        with engine.connect() as connection:
            connection.execute(statement)


class AsyncHarness(Harness):
    """``AsyncWorker``: handler tasks, ``AsyncSession``, an engine of the harness's driver."""

    kind = "async"
    worker_class = AsyncWorker
    queue_class = AsyncJobQueue
    session_class = AsyncSession
    sessionmaker_class = async_sessionmaker

    def __init__(self, database_url: str, driver: str) -> None:
        bind = make_async_engine(async_url(database_url, driver), pool_size=10)
        super().__init__(database_url, driver, bind)
        self._engines.append(bind)

    def handler(self, body: Body) -> Callable[..., Any]:
        return body

    def _create_engine(self, connect_args: dict[str, Any]) -> AnyEngine:
        url = async_url(self.database_url, self.driver)
        return make_async_engine(url, connect_args=connect_args)

    async def run_sync(self, session: Any, function: Callable[..., T], *args: Any) -> T:
        return await session.run_sync(function, *args)  # type: ignore[no-any-return]

    def gate(self) -> AsyncGate:
        return AsyncGate()

    def sleep(self, seconds: float) -> Awaitable[None]:
        return asyncio.sleep(seconds)

    async def execute(self, engine: Any, statement: Executable) -> None:
        async with engine.connect() as connection:
            await connection.execute(statement)


@asynccontextmanager
async def harnesses(database_url: str, engine: Engine) -> AsyncIterator[Callable[[str], Harness]]:
    """Make harnesses by flavour; at the end, stop their workers and dispose their engines.

    ``engine`` is the tests' own (sync) engine: the sync flavour's workers use it.
    """
    made: list[Harness] = []

    def make(flavour: str) -> Harness:
        if flavour == "sync":
            harness: Harness = SyncHarness(database_url, SYNC_DRIVER, engine)
        else:
            harness = AsyncHarness(database_url, flavour.removeprefix("async-"))
        made.append(harness)
        return harness

    try:
        yield make
    finally:
        for harness in made:
            await harness.close()
