"""Raw psycopg 3 connections for the reliability tests (LISTEN, fault checks)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import psycopg
from psycopg import sql
from sqlalchemy import Table
from sqlalchemy.engine import make_url

from programma_sa._drivers.postgresql import notify_channel


def libpq_url(url: str) -> str:
    """The libpq form of a SQLAlchemy URL (``postgresql+psycopg://`` → ``postgresql://``)."""
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


@contextmanager
def listening(url: str, table: Table) -> Iterator[psycopg.Connection[tuple[object, ...]]]:
    """An autocommit connection that LISTENs on the enqueue channel of ``table``.

    The channel name holds a ``:``, so it is quoted as an identifier.
    """
    with psycopg.connect(libpq_url(url), autocommit=True) as connection:
        connection.execute(sql.SQL("LISTEN {}").format(sql.Identifier(notify_channel(table))))
        yield connection
