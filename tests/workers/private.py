"""The only place the worker tests import private names of ``programma_sa``.

``programma_sa.worker.listen`` (the LISTEN connections) and
``programma_sa._drivers.postgresql`` (the NOTIFY channel's name) are internal: when
they move, adjust this module alone.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from typing import Any

from sqlalchemy import Table
from sqlalchemy.engine import URL

from programma_sa._drivers.postgresql import notify_channel
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
