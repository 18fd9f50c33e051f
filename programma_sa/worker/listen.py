"""LISTEN/NOTIFY wake-ups for idle workers.

Every enqueue (with ``JobQueue(notify=True)``, the default) runs
``pg_notify(<channel>, <topic>)`` inside the enqueuing transaction: PostgreSQL
delivers the notification when that transaction commits and drops it when it rolls
back, so a worker is woken exactly for jobs that exist.

:class:`Listener` holds one psycopg 3 connection of its own in autocommit mode
(LISTEN registrations belong to a session and notifications arrive between
transactions, so it cannot share the worker's pooled, transactional connections),
runs ``LISTEN "<channel>"`` and calls ``on_wake`` whenever a notification names one
of the worker's topics. The worker's heartbeat poll stays as the fallback, so a
missed notification only costs latency, never a job.

A listener connection that dies (server restart, ``pg_terminate_backend``,
network) is noticed on the next read and opened again with bounded exponential
backoff; ``on_wake`` is called after every (re)connection because notifications
sent while nobody listened are lost. TCP keepalives are switched on for the
listener so that a silently dropped connection is noticed too.

:class:`AsyncListener` does the same as an asyncio task on a
``psycopg.AsyncConnection`` (for :class:`~programma_sa.AsyncWorker`); both share
everything but the waiting.

PgBouncer in transaction-pooling mode cannot carry LISTEN: run such workers with
``listen=False`` (polling only), or point ``database_url`` at a direct connection.

The connection string and the ``LISTEN`` command come from
:mod:`programma_sa._listening`, shared with callers waiting for a job.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections.abc import Callable, Iterable

import psycopg

from .._listening import conninfo_from_url, listen_command

__all__ = ["AsyncListener", "Listener", "conninfo_from_url"]  # conninfo_from_url: old path

log = logging.getLogger("programma_sa.listener")


class _ListenerBase:
    """What both listeners share: the settings, the LISTEN command, what a
    notification or a lost connection means."""

    #: How often the listener looks up from waiting to check whether it should stop.
    poll_interval = 0.5
    #: Reconnection backoff: first wait, and the cap it doubles up to.
    reconnect_initial = 0.1
    reconnect_max = 5.0

    def __init__(
        self,
        conninfo: str,
        channel: str,
        topics: Iterable[str] | None,
        on_wake: Callable[[], None],
        *,
        control_channel: str | None = None,
        on_control: Callable[[str], None] | None = None,
    ) -> None:
        self._conninfo = conninfo
        self._channel = channel
        # None: every topic (the dashboard's change feed watches them all).
        self._topics = None if topics is None else frozenset(topics)
        self._on_wake = on_wake
        # The control channel (a job's cancellation) is listened to on the same
        # connection: one connection per worker, whatever it listens for.
        self._control_channel = control_channel
        self._on_control = on_control
        self._backend_pid: int | None = None

    @property
    def backend_pid(self) -> int | None:
        """The server process id of the current listening connection (``None`` if down)."""
        return self._backend_pid

    def _channels(self) -> list[str]:
        """The channels to LISTEN on: the enqueue channel, and the control channel."""
        return [self._channel] + ([self._control_channel] if self._control_channel else [])

    def _listening_on(self, backend_pid: int) -> None:
        self._backend_pid = backend_pid
        self._mark_listening()
        log.info("listening on %s (backend %s)", self._channel, backend_pid)
        # Anything enqueued while nobody listened was announced to nobody.
        self._on_wake()

    def _mark_listening(self) -> None:
        """Release whoever waits for the first LISTEN (a thread's or a task's event)."""
        raise NotImplementedError

    def _notified(self, notification: psycopg.Notify) -> None:
        if notification.channel == self._channel:
            if self._topics is None or notification.payload in self._topics:
                self._on_wake()
        elif self._on_control is not None:
            self._on_control(notification.payload)

    def _lost(self, error: Exception, delay: float) -> float:
        """Log a lost connection; return the backoff after ``delay``."""
        # Never let the listener die: the worker keeps polling meanwhile.
        log.warning(
            "LISTEN connection on %s lost (%s); reconnecting in %.1f s",
            self._channel,
            str(error).strip().splitlines()[0] if str(error).strip() else type(error),
            delay,
        )
        self._backend_pid = None
        return min(delay * 2, self.reconnect_max)


class Listener(_ListenerBase):
    """A background thread that LISTENs on the enqueue channel (and the control
    channel) and wakes a worker (and passes it each control message)."""

    def __init__(
        self,
        conninfo: str,
        channel: str,
        topics: Iterable[str] | None,
        on_wake: Callable[[], None],
        *,
        control_channel: str | None = None,
        on_control: Callable[[str], None] | None = None,
    ) -> None:
        super().__init__(
            conninfo,
            channel,
            topics,
            on_wake,
            control_channel=control_channel,
            on_control=on_control,
        )
        self._stop = threading.Event()
        self._listening = threading.Event()
        self._thread = threading.Thread(
            target=self._run, name=f"programma-listener:{channel}", daemon=True
        )

    def start(self) -> None:
        self._thread.start()

    def _mark_listening(self) -> None:
        self._listening.set()

    def wait_listening(self, timeout: float) -> bool:
        """Block until the first ``LISTEN`` is in place (or ``timeout`` seconds pass)."""
        return self._listening.wait(timeout)

    def stop(self, timeout: float | None = None) -> None:
        """Ask the thread to close its connection and end (within ``poll_interval``).

        ``timeout``: wait that long for it to finish (default: do not wait).
        """
        self._stop.set()
        if timeout is not None and self._thread.is_alive():
            self._thread.join(timeout)

    def _run(self) -> None:
        delay = self.reconnect_initial
        while not self._stop.is_set():
            try:
                self._listen()
                delay = self.reconnect_initial
            except Exception as error:
                if self._stop.is_set():
                    # Stopped while the connection failed (its server dropped the
                    # database the worker has just left, say): the end of the
                    # connection is the stop's, not a loss to report.
                    return
                next_delay = self._lost(error, delay)
                self._stop.wait(delay)
                delay = next_delay

    def _listen(self) -> None:
        with psycopg.connect(self._conninfo, autocommit=True) as connection:
            for channel in self._channels():
                connection.execute(listen_command(channel))
            self._listening_on(connection.info.backend_pid)
            while not self._stop.is_set():
                for notification in connection.notifies(timeout=self.poll_interval):
                    self._notified(notification)


class AsyncListener(_ListenerBase):
    """An asyncio task that LISTENs on one channel and wakes an async worker.

    ``on_wake`` and ``on_control`` are called on the event loop (they must not
    block). Create, start and stop it on the loop that runs the worker.
    """

    def __init__(
        self,
        conninfo: str,
        channel: str,
        topics: Iterable[str] | None,
        on_wake: Callable[[], None],
        *,
        control_channel: str | None = None,
        on_control: Callable[[str], None] | None = None,
    ) -> None:
        super().__init__(
            conninfo,
            channel,
            topics,
            on_wake,
            control_channel=control_channel,
            on_control=on_control,
        )
        self._stopping = False
        self._listening = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(
            self._run(), name=f"programma-listener:{self._channel}"
        )

    def _mark_listening(self) -> None:
        self._listening.set()

    async def wait_listening(self, timeout: float) -> bool:
        """Wait until the first ``LISTEN`` is in place (or ``timeout`` seconds pass)."""
        try:
            await asyncio.wait_for(self._listening.wait(), timeout)
        except asyncio.TimeoutError:
            return False
        return True

    async def stop(self) -> None:
        """Close the connection and end the task (at once: the task is cancelled)."""
        self._stopping = True
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        self._backend_pid = None

    async def _run(self) -> None:
        delay = self.reconnect_initial
        while not self._stopping:
            try:
                await self._listen()
                delay = self.reconnect_initial
            except Exception as error:
                next_delay = self._lost(error, delay)
                await asyncio.sleep(delay)
                delay = next_delay

    async def _listen(self) -> None:
        connection = await psycopg.AsyncConnection.connect(self._conninfo, autocommit=True)
        async with connection:
            for channel in self._channels():
                await connection.execute(listen_command(channel))
            self._listening_on(connection.info.backend_pid)
            while not self._stopping:
                # The timeout bounds each wait, so a stop is seen even if the task
                # is not cancelled; a dead connection raises here at once.
                async for notification in connection.notifies(timeout=self.poll_interval):
                    self._notified(notification)
