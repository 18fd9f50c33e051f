"""psycopg connections of our own that LISTEN: where they connect, and the command.

LISTEN registrations belong to a session and notifications arrive between
transactions, so whoever listens — a worker (:mod:`programma_sa.worker.listen`) or a
caller waiting for a job (:mod:`programma_sa._wait`) — holds a psycopg 3 connection
of its own in autocommit mode, whatever driver the application's engine uses. This
module is the one place outside :mod:`programma_sa._drivers` that writes SQL: the
``LISTEN`` command, with the channel quoted as an identifier by psycopg.
"""

from __future__ import annotations

import psycopg
from psycopg import sql
from psycopg.conninfo import make_conninfo
from sqlalchemy.engine import URL

__all__ = ["conninfo_from_url", "listen_command"]

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


def listen_command(channel: str) -> sql.Composed:
    """``LISTEN "<channel>"``."""
    return sql.SQL("LISTEN {}").format(sql.Identifier(channel))
