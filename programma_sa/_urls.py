"""Database URLs: one normalisation for the library and every command.

Applications name PostgreSQL in several ways — ``postgres://`` (Heroku and most
platforms), a bare ``postgresql://`` (SQLAlchemy 2.0 then picks psycopg2, which may
not be installed), ``postgresql+psycopg://``, ``postgresql+psycopg2://``, and
``postgresql+asyncpg://`` (the usual FastAPI URL). Every place that connects from a
URL needs a driver that fits it: a sync engine cannot run on asyncpg, an async one
not on psycopg2. So:

* :func:`parse_url` — a checked PostgreSQL URL in canonical form: ``postgres`` reads
  as ``postgresql``, and a URL naming no driver gets psycopg 3 (installed with
  programma-sa); a driver the URL names is kept. A SQLite URL (``sqlite://``,
  ``sqlite+aiosqlite://``) is kept as it is (docs/sqlite.md);
* :func:`sync_url` — the URL for ``create_engine``: asyncpg becomes psycopg 3 (the
  same database, through the driver programma-sa installs);
* :func:`async_url` — the URL for ``create_async_engine``: asyncpg is kept, any other
  driver becomes psycopg 3 (in its async mode).

On SQLite the same two: ``sqlite+pysqlite`` (the standard library's) for a sync
engine, ``sqlite+aiosqlite`` for an async one. On MariaDB and MySQL (``mariadb://``,
``mysql://``, docs/mariadb.md) the backend named is kept (SQLAlchemy's ``mysql``
dialect runs on MariaDB servers too), and the driver becomes PyMySQL for a sync
engine, aiomysql for an async one (the ``mariadb`` extra installs both).

Both check that the chosen driver's package can be imported (and, for asyncio, that
greenlet can), and say in one line what to install instead of a traceback. No
message ever shows a URL with its password.
"""

from __future__ import annotations

import importlib
from typing import Any

from sqlalchemy import exc as sa_exc
from sqlalchemy.engine import URL, Dialect, make_url

from .exceptions import ConfigurationError

__all__ = ["async_url", "engine_options", "parse_url", "sync_url"]

#: The driver programma-sa installs (psycopg 3): sync and async in one package.
DEFAULT_DRIVER = "psycopg"
_DEFAULT_DRIVERNAME = f"postgresql+{DEFAULT_DRIVER}"
#: The asyncio driver an async engine keeps; any other becomes psycopg 3.
_ASYNC_ONLY = "asyncpg"
#: ``pip install`` names of driver packages whose module is named differently.
_PIP_NAMES = {"psycopg2": "psycopg2-binary", "pymysql": "PyMySQL"}
_ASYNCIO_EXTRA = 'pip install greenlet (the "asyncio" extra)'
#: SQLite's drivers: the standard library's for sync engines, aiosqlite for async ones.
_SQLITE_SYNC = "sqlite+pysqlite"
_SQLITE_ASYNC = "sqlite+aiosqlite"
#: MariaDB's and MySQL's backend names, and their drivers (sync, async).
_MYSQL_BACKENDS = ("mariadb", "mysql")
_MYSQL_SYNC, _MYSQL_ASYNC = "pymysql", "aiomysql"


def parse_url(url: str | URL, what: str = "database URL") -> URL:
    """``url`` as a checked PostgreSQL URL, ``postgres://`` and a missing driver
    normalised (see the module docs); a SQLite URL as it is; a MariaDB/MySQL URL
    with PyMySQL when it names no driver.

    :param what: how error messages name the URL (``"--database-url"``, ...).
    :raises ConfigurationError: not a URL, or neither a PostgreSQL nor a SQLite one.
    """
    if isinstance(url, str):
        try:
            url = make_url(url)
        except (sa_exc.ArgumentError, ValueError):
            # Not echoed: the text may hold a password.
            raise ConfigurationError(f"{what} is not a valid database URL") from None
    elif not isinstance(url, URL):
        raise ConfigurationError(f"{what} must be a URL string, got {type(url).__name__}")
    backend, plus, driver = url.drivername.partition("+")
    if backend == "sqlite":
        return url
    if backend in _MYSQL_BACKENDS:
        return url if plus else url.set(drivername=f"{backend}+{_MYSQL_SYNC}")
    if backend not in ("postgresql", "postgres"):
        raise ConfigurationError(
            f"{what} must be a PostgreSQL URL (or a SQLite or MariaDB/MySQL one), "
            f"got {url.drivername}://…"
        )
    return url.set(drivername=f"postgresql+{driver if plus else DEFAULT_DRIVER}")


def sync_url(url: str | URL, what: str = "database URL") -> URL:
    """The URL for a sync engine (``create_engine``): an asyncio driver (asyncpg)
    becomes psycopg 3.

    :raises ConfigurationError: as :func:`parse_url`, or the driver's package is
        not installed.
    """
    parsed = parse_url(url, what)
    if _dialect(parsed).is_async:
        backend = parsed.get_backend_name()
        if backend in _MYSQL_BACKENDS:
            parsed = parsed.set(drivername=f"{backend}+{_MYSQL_SYNC}")
        else:
            sqlite = backend == "sqlite"
            parsed = parsed.set(drivername=_SQLITE_SYNC if sqlite else _DEFAULT_DRIVERNAME)
    _import_driver(parsed)
    return parsed


def async_url(url: str | URL, what: str = "database URL") -> URL:
    """The URL for an async engine (``create_async_engine``): asyncpg is kept, any
    other driver becomes psycopg 3 (its async mode).

    :raises ConfigurationError: as :func:`parse_url`, or greenlet or the driver's
        package is not installed.
    """
    parsed = parse_url(url, what)
    backend = parsed.get_backend_name()
    if backend == "sqlite":
        if not _dialect(parsed).is_async:
            parsed = parsed.set(drivername=_SQLITE_ASYNC)
    elif backend in _MYSQL_BACKENDS:
        if not _dialect(parsed).is_async:
            parsed = parsed.set(drivername=f"{backend}+{_MYSQL_ASYNC}")
    elif parsed.get_driver_name() != _ASYNC_ONLY:
        parsed = parsed.set(drivername=_DEFAULT_DRIVERNAME)
    try:
        importlib.import_module("greenlet")  # what SQLAlchemy's asyncio support runs on
    except ImportError:
        raise ConfigurationError(
            f"asyncio needs the greenlet package, which is not installed: {_ASYNCIO_EXTRA}"
        ) from None
    _import_driver(parsed)
    return parsed


def engine_options(url: URL) -> dict[str, Any]:
    """What an engine the library makes for ``url`` needs beyond the URL: READ
    COMMITTED on MariaDB/MySQL, whose default REPEATABLE READ makes a claim's locking
    read keep gap and next-key locks on every index entry it scanned (other jobs'
    rows, finished ones) until its transaction ends — enqueues and other workers'
    completions would wait for it. Under READ COMMITTED it keeps the locks of the
    rows it took only (docs/mariadb.md)."""
    if url.get_backend_name() in _MYSQL_BACKENDS:
        return {"isolation_level": "READ COMMITTED"}
    return {}


def _dialect(url: URL) -> type[Dialect]:
    try:
        return url.get_dialect()
    except sa_exc.NoSuchModuleError:
        raise ConfigurationError(
            f"{url.drivername}://… names a driver SQLAlchemy does not know"
        ) from None


def _import_driver(url: URL) -> None:
    """Refuse a URL whose driver's package cannot be imported, saying what to install."""
    try:
        _dialect(url).import_dbapi()
    except ImportError as error:
        module = (error.name or url.get_driver_name()).partition(".")[0]
        package = _PIP_NAMES.get(module, module)
        raise ConfigurationError(
            f"{url.drivername}://… needs the {module} package, which is not installed: "
            f"pip install {package}, or use {_DEFAULT_DRIVERNAME}:// "
            "(psycopg 3, installed with programma-sa)"
        ) from None
