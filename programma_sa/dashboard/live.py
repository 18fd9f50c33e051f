"""Live updates: one LISTEN connection, any number of open event streams.

Every enqueue announces itself with ``pg_notify`` on the queue's channel (see
:mod:`programma_sa.worker.listen`). :class:`ChangeFeed` listens there once for the
whole dashboard, on a connection of its own (a :class:`~programma_sa.worker.listen.Listener`,
which reconnects by itself), and counts the notifications; each server-sent event
stream waits for that count to move. Changes nobody announces (a worker completing
a job) reach the pages through their polling fallback, which runs whether or not
the event stream is up.
"""

from __future__ import annotations

import asyncio
import threading

from sqlalchemy import Table
from sqlalchemy.engine import URL

from .._drivers.postgresql import notify_channel
from ..worker.listen import Listener, conninfo_from_url

__all__ = ["KEEPALIVE_SECONDS", "ChangeFeed", "event"]

#: How long a stream waits before it sends a comment line, so that proxies keep it.
KEEPALIVE_SECONDS = 15.0


def event(version: int | None) -> bytes:
    """One server-sent event: ``changed`` with the feed's count, or a keep-alive comment."""
    if version is None:
        return b": keep-alive\n\n"
    return f"event: changed\ndata: {version}\n\n".encode()


class ChangeFeed:
    """The count of changes announced on a jobs table's channel, to wait on from
    threads (Flask) or from an event loop (Starlette)."""

    def __init__(self, url: URL, table: Table) -> None:
        self._listener = Listener(
            conninfo_from_url(url), notify_channel(table), None, self._changed
        )
        self._condition = threading.Condition()
        self._version = 0
        self._started = False
        self._waiters: set[tuple[asyncio.AbstractEventLoop, asyncio.Event]] = set()

    @property
    def version(self) -> int:
        """How many changes (and listener (re)connections) have been seen."""
        with self._condition:
            return self._version

    def start(self) -> None:
        """Start listening (once; later calls do nothing)."""
        with self._condition:
            if self._started:
                return
            self._started = True
        self._listener.start()

    def stop(self) -> None:
        with self._condition:
            started, self._started = self._started, False
        if started:
            self._listener.stop()

    def wait_listening(self, timeout: float) -> bool:
        """Whether the LISTEN is in place within ``timeout`` seconds (for tests)."""
        return self._listener.wait_listening(timeout)

    def _changed(self) -> None:
        """The listener's callback (its thread): count, and wake every waiter."""
        with self._condition:
            self._version += 1
            self._condition.notify_all()
            waiters = list(self._waiters)
        for loop, ready in waiters:
            loop.call_soon_threadsafe(ready.set)

    def wait(self, seen: int, timeout: float) -> int | None:
        """Block until the count differs from ``seen``; the new count, or ``None``
        after ``timeout`` seconds."""
        with self._condition:
            moved = self._condition.wait_for(lambda: self._version != seen, timeout)
            return self._version if moved else None

    async def wait_async(self, seen: int, timeout: float) -> int | None:
        """:meth:`wait` for an event loop."""
        ready = asyncio.Event()
        waiter = (asyncio.get_running_loop(), ready)
        with self._condition:
            if self._version != seen:
                return self._version
            self._waiters.add(waiter)
        try:
            await asyncio.wait_for(ready.wait(), timeout)
        except asyncio.TimeoutError:
            return None
        finally:
            with self._condition:
                self._waiters.discard(waiter)
        return self.version
