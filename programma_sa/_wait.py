"""Waiting for a job to finish: a notification first, a poll as the fallback.

The worker announces each finished job's topic on the table's *finished* channel
(:func:`~programma_sa._drivers.postgresql.finished_channel`) when it writes a job
COMPLETED, FAILED or CANCELLED. A waiter LISTENs there on a psycopg connection of
its own, *then* reads the job (so a job finishing in between is not missed), and
reads it again on every announcement of its topic and at least every
``poll_interval`` seconds — the fallback for what no announcement covers: a job
finished by the caller's own ``move_job_to_done``, a listener that could not
connect (PgBouncer in transaction pooling), a notification lost with a connection.
On SQLite, which has no LISTEN, the wait only polls.

Each read is a short statement on a pooled connection of the caller's engine (in
autocommit: no transaction stays open while waiting).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import AsyncIterator, Generator, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import psycopg
from sqlalchemy import Engine

from . import _validation as check
from ._drivers.postgresql import finished_channel
from ._execute import drive, drive_async, execute, execute_async
from ._job_records import JobDetail
from ._listening import conninfo_from_url, listen_command
from ._operations.jobs import JobOperations
from .exceptions import ConfigurationError, InvalidJobInput, JobNotFound, WaitTimeout
from .models import TERMINAL_STATES

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncEngine

__all__ = ["DEFAULT_POLL_INTERVAL", "wait_for_job", "wait_for_job_async"]

log = logging.getLogger("programma_sa.wait")

#: Seconds between two reads of the job when no announcement comes.
DEFAULT_POLL_INTERVAL = 1.0


def _checked(timeout: object, poll_interval: object) -> tuple[float, float]:
    seconds = check.optional_seconds(timeout, "timeout")
    if seconds is None:
        raise InvalidJobInput("timeout must be a number of seconds, got None")
    interval = check.optional_seconds(poll_interval, "poll_interval")
    if interval is None or interval == 0:
        raise InvalidJobInput(f"poll_interval must be more than 0 seconds, got {poll_interval!r}")
    return seconds, interval


@dataclass(frozen=True)
class _Read:
    """A step of :func:`_waiting`: read the job (send back its ``JobDetail`` or ``None``)."""


@dataclass(frozen=True)
class _Wait:
    """A step of :func:`_waiting`: wait up to ``seconds`` for an announcement of
    ``topic`` (or just sleep, without a listener)."""

    topic: str
    seconds: float


def _waiting(
    job_id: uuid.UUID, timeout: float, interval: float
) -> Generator[_Read | _Wait, JobDetail | None, JobDetail]:
    """The wait, as steps for a sync or an async driver (:func:`~._execute.drive`)."""
    deadline = time.monotonic() + timeout
    while True:
        job = yield _Read()
        if job is None:
            raise JobNotFound(f"no job with id {job_id}")
        if job.state.value in TERMINAL_STATES:
            return job
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise WaitTimeout(
                f"job {job_id} did not finish within {timeout:g} s (it is {job.state.value})"
            )
        yield _Wait(job.topic, min(interval, remaining))


def _unheard(error: Exception) -> None:
    log.warning(
        "cannot LISTEN for finished jobs (%s); waiting by polling only",
        str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__,
    )


def _can_listen(dialect: str) -> bool:
    """Only PostgreSQL has LISTEN; elsewhere (SQLite, MariaDB) the wait polls, quietly."""
    return dialect == "postgresql"


@contextlib.contextmanager
def _listening(engine: Engine, channel: str) -> Iterator[psycopg.Connection[Any] | None]:
    if not _can_listen(engine.dialect.name):
        yield None
        return
    try:
        connection = psycopg.connect(conninfo_from_url(engine.url), autocommit=True)
    except psycopg.Error as error:
        _unheard(error)
        yield None
        return
    with connection:
        connection.execute(listen_command(channel))
        yield connection


def wait_for_job(
    engine: object,
    operations: JobOperations,
    job_id: uuid.UUID | str,
    *,
    timeout: object,
    poll_interval: object = DEFAULT_POLL_INTERVAL,
) -> JobDetail:
    """Block until the job is COMPLETED, FAILED or CANCELLED and return it."""
    if not isinstance(engine, Engine):
        raise ConfigurationError(f"wait_for_job needs an Engine, got {engine!r}")
    seconds, interval = _checked(timeout, poll_interval)
    read = operations.get_job(job_id)

    with _listening(engine, finished_channel(operations.table)) as listener:

        def step(step: _Read | _Wait) -> JobDetail | None:
            if isinstance(step, _Read):
                with engine.connect() as connection:
                    autocommit = connection.execution_options(isolation_level="AUTOCOMMIT")
                    return execute(autocommit, read)
            if listener is None:
                time.sleep(step.seconds)
                return None
            # Any announcement of the job's topic may be its own: read it again.
            for notification in listener.notifies(timeout=step.seconds):
                if notification.payload == step.topic:
                    break
            return None

        return drive(_waiting(read.params["p_job_id"], seconds, interval), step)


@contextlib.asynccontextmanager
async def _listening_async(
    engine: AsyncEngine, channel: str
) -> AsyncIterator[psycopg.AsyncConnection[Any] | None]:
    if not _can_listen(engine.dialect.name):
        yield None
        return
    try:
        connection = await psycopg.AsyncConnection.connect(
            conninfo_from_url(engine.url), autocommit=True
        )
    except psycopg.Error as error:
        _unheard(error)
        yield None
        return
    async with connection:
        await connection.execute(listen_command(channel))
        yield connection


async def _announced(listener: psycopg.AsyncConnection[Any], topic: str, wait: float) -> None:
    async for notification in listener.notifies(timeout=wait):
        if notification.payload == topic:
            return


async def wait_for_job_async(
    engine: object,
    operations: JobOperations,
    job_id: uuid.UUID | str,
    *,
    timeout: object,
    poll_interval: object = DEFAULT_POLL_INTERVAL,
) -> JobDetail:
    """:func:`wait_for_job` with an ``AsyncEngine``."""
    from sqlalchemy.ext.asyncio import AsyncEngine

    if not isinstance(engine, AsyncEngine):
        raise ConfigurationError(f"wait_for_job needs an AsyncEngine, got {engine!r}")
    seconds, interval = _checked(timeout, poll_interval)
    read = operations.get_job(job_id)

    async with _listening_async(engine, finished_channel(operations.table)) as listener:

        async def step(step: _Read | _Wait) -> JobDetail | None:
            if isinstance(step, _Read):
                async with engine.connect() as connection:
                    autocommit = await connection.execution_options(isolation_level="AUTOCOMMIT")
                    return await execute_async(autocommit, read)
            if listener is None:
                await asyncio.sleep(step.seconds)
            else:
                await _announced(listener, step.topic, step.seconds)
            return None

        return await drive_async(_waiting(read.params["p_job_id"], seconds, interval), step)
