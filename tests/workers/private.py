"""The only place the worker tests import private names of ``programma_sa``.

``programma_sa.worker.listen`` (the LISTEN connections),
``programma_sa._drivers`` (the NOTIFY channel's name, the claim statement) and
``programma_sa.worker.sync_driver`` (the direct claim) are internal: when they move,
adjust this module alone.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from typing import Any

import pytest
from sqlalchemy import Table
from sqlalchemy.engine import URL

from programma_sa._drivers import statements_for
from programma_sa._drivers.postgresql import notify_channel
from programma_sa.worker import sync_driver
from programma_sa.worker.listen import AsyncListener, Listener, conninfo_from_url

from .harness import awaited
from .support import wait_for


async def listening(worker: Any) -> Listener | AsyncListener:
    """``worker.listener``, once it is listening (within 10 s)."""
    listener: Listener | AsyncListener = await wait_for(lambda: worker.listener)
    assert await awaited(listener.wait_listening(10))
    return listener


@asynccontextmanager
async def listener_beside(
    kind: str, url: URL, table: Table, topics: Sequence[str], wake: Callable[[], None]
) -> AsyncIterator[Listener | AsyncListener]:
    """A listener of the ``kind`` a worker of that kind runs, on ``table``'s channel,
    calling ``wake`` for each wake-up; started, and stopped at the end."""
    listener_class = Listener if kind == "sync" else AsyncListener
    listener = listener_class(conninfo_from_url(url), notify_channel(table), topics, wake)
    listener.start()
    try:
        yield listener
    finally:
        if isinstance(listener, Listener):
            listener.stop(5)
        else:
            await listener.stop()


class DirectClaimSpy:
    """Counts the claims a sync Worker executes directly (``direct_claim``): each
    call still runs the real claim on the database."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.claimed: list[Any] = []  # the ids of the jobs each direct claim returned
        self.calls = 0
        real = sync_driver.execute_direct

        def spy(cursor: Any, dialect: Any, operation: Any) -> Any:
            jobs = real(cursor, dialect, operation)
            self.calls += 1
            self.claimed.extend(job.id for job in jobs)
            return jobs

        monkeypatch.setattr(sync_driver, "execute_direct", spy)


def kept_claim_backend(worker: Any) -> int | None:
    """The backend pid of the connection a sync Worker keeps for its direct claims."""
    direct = worker.direct_claims
    connection = None if direct is None else direct._connection
    if connection is None:
        return None
    pid: int = connection.connection.driver_connection.info.backend_pid
    return pid


def claim_statement(table: Table) -> Any:
    """The driver's claim statement on PostgreSQL (what an engine event's
    ``context.compiled.statement`` is for a claim)."""
    return statements_for("postgresql", table).claim
