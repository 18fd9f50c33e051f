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

PgBouncer in transaction-pooling mode cannot carry LISTEN: run such workers with
``listen=False`` (polling only), or point ``database_url`` at a direct connection.

This module is the one place outside :mod:`._statements` that writes SQL: the
``LISTEN`` command, with the channel quoted as an identifier by psycopg.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable

import psycopg
from psycopg import sql
from psycopg.conninfo import make_conninfo
from sqlalchemy.engine import URL

__all__ = ["Listener", "conninfo_from_url"]

log = logging.getLogger("programma_sa.listener")

# libpq's own parameter names; anything else in a SQLAlchemy URL's query string
# (driver or dialect options) is not for libpq and would make it refuse to connect.
_LIBPQ_KEYWORDS = frozenset(
    default.keyword.decode() for default in psycopg.pq.Conninfo.get_defaults()
)


def conninfo_from_url(url: URL) -> str:
    """A libpq connection string for the database a SQLAlchemy URL points at.

    Works for any PostgreSQL driver in the URL (``+psycopg``, ``+psycopg2``,
    ``+asyncpg``): only the address and libpq options are kept.
    """
    params: dict[str, str] = {
        key: str(value)
        for key, value in url.translate_connect_args(username="user", database="dbname").items()
    }
    for key, value in url.query.items():
        if key in _LIBPQ_KEYWORDS:
            params[key] = value if isinstance(value, str) else ",".join(value)
    # Shown in pg_stat_activity unless the URL names an application itself.
    params.setdefault("fallback_application_name", "programma-sa-listener")
    params.setdefault("connect_timeout", "10")
    # Notice a connection dropped without a FIN (libpq ignores these on Unix sockets).
    params.setdefault("keepalives", "1")
    params.setdefault("keepalives_idle", "30")
    params.setdefault("keepalives_interval", "10")
    params.setdefault("keepalives_count", "3")
    return make_conninfo(**params)


class Listener:
    """A background thread that LISTENs on one channel and wakes a worker."""

    #: How often the thread looks up from waiting to check whether it should stop.
    poll_interval = 0.5
    #: Reconnection backoff: first wait, and the cap it doubles up to.
    reconnect_initial = 0.1
    reconnect_max = 5.0

    def __init__(
        self,
        conninfo: str,
        channel: str,
        topics: Iterable[str],
        on_wake: Callable[[], None],
    ) -> None:
        self._conninfo = conninfo
        self._channel = channel
        self._topics = frozenset(topics)
        self._on_wake = on_wake
        self._stop = threading.Event()
        self._listening = threading.Event()
        self._backend_pid: int | None = None
        self._thread = threading.Thread(
            target=self._run, name=f"programma-listener:{channel}", daemon=True
        )

    @property
    def backend_pid(self) -> int | None:
        """The server process id of the current listening connection (``None`` if down)."""
        return self._backend_pid

    def start(self) -> None:
        self._thread.start()

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
                # Never let the listener die: the worker keeps polling meanwhile.
                log.warning(
                    "LISTEN connection on %s lost (%s); reconnecting in %.1f s",
                    self._channel,
                    str(error).strip().splitlines()[0] if str(error).strip() else type(error),
                    delay,
                )
                self._backend_pid = None
                self._stop.wait(delay)
                delay = min(delay * 2, self.reconnect_max)

    def _listen(self) -> None:
        with psycopg.connect(self._conninfo, autocommit=True) as connection:
            connection.execute(sql.SQL("LISTEN {}").format(sql.Identifier(self._channel)))
            self._backend_pid = connection.info.backend_pid
            self._listening.set()
            log.info("listening on %s (backend %s)", self._channel, self._backend_pid)
            # Anything enqueued while nobody listened was announced to nobody.
            self._on_wake()
            while not self._stop.is_set():
                for notification in connection.notifies(timeout=self.poll_interval):
                    if notification.payload in self._topics:
                        self._on_wake()
