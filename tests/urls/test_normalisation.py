"""One normalisation of database URLs (``programma_sa._urls``), without a database."""

from __future__ import annotations

import sys

import pytest

from programma_sa import ConfigurationError
from programma_sa._urls import async_url, parse_url, sync_url

#: (given, parsed, for a sync engine, for an async engine)
CASES = [
    ("postgres://u@h/d", "postgresql+psycopg", "postgresql+psycopg", "postgresql+psycopg"),
    ("postgresql://u@h/d", "postgresql+psycopg", "postgresql+psycopg", "postgresql+psycopg"),
    (
        "postgresql+psycopg://u@h/d",
        "postgresql+psycopg",
        "postgresql+psycopg",
        "postgresql+psycopg",
    ),
    (
        "postgresql+psycopg2://u@h/d",
        "postgresql+psycopg2",
        "postgresql+psycopg2",
        "postgresql+psycopg",
    ),
    (
        "postgresql+asyncpg://u@h/d",
        "postgresql+asyncpg",
        "postgresql+psycopg",
        "postgresql+asyncpg",
    ),
    (
        "postgresql+psycopg_async://u@h/d",
        "postgresql+psycopg_async",
        "postgresql+psycopg",
        "postgresql+psycopg",
    ),
    # MariaDB and MySQL: PyMySQL for sync engines, aiomysql for async ones.
    ("mariadb://u@h/d", "mariadb+pymysql", "mariadb+pymysql", "mariadb+aiomysql"),
    ("mysql://u@h/d", "mysql+pymysql", "mysql+pymysql", "mysql+aiomysql"),
    ("mysql+aiomysql://u@h/d", "mysql+aiomysql", "mysql+pymysql", "mysql+aiomysql"),
    ("mariadb+pymysql://u@h/d", "mariadb+pymysql", "mariadb+pymysql", "mariadb+aiomysql"),
]


@pytest.mark.parametrize(("given", "parsed", "sync", "asynchronous"), CASES)
def test_each_form_gets_the_driver_its_context_needs(
    given: str, parsed: str, sync: str, asynchronous: str
) -> None:
    assert parse_url(given).drivername == parsed
    assert sync_url(given).drivername == sync
    assert async_url(given).drivername == asynchronous
    # Only the driver changes: the address is the one given.
    for url in (parse_url(given), sync_url(given), async_url(given)):
        assert (url.username, url.host, url.database) == ("u", "h", "d")


@pytest.mark.parametrize(
    ("given", "message"),
    [
        (
            "oracle://u:s3cret@h/d",
            "--database-url must be a PostgreSQL URL (or a SQLite or MariaDB/MySQL one), "
            "got oracle://…",
        ),
        ("::not a url s3cret::", "--database-url is not a valid database URL"),
    ],
)
def test_a_url_that_is_not_postgresql_is_refused_without_its_password(
    given: str, message: str
) -> None:
    with pytest.raises(ConfigurationError) as refused:
        parse_url(given, "--database-url")
    assert str(refused.value) == message


def test_a_driver_sqlalchemy_does_not_know_is_named() -> None:
    with pytest.raises(ConfigurationError) as refused:
        sync_url("postgresql+nosuchdriver://u:s3cret@h/d")
    assert str(refused.value) == (
        "postgresql+nosuchdriver://… names a driver SQLAlchemy does not know"
    )


def test_a_driver_package_that_is_not_installed_is_one_line_saying_what_to_install(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(sys.modules, "psycopg2", None)  # `import psycopg2` now fails
    with pytest.raises(ConfigurationError) as refused:
        sync_url("postgresql+psycopg2://u:s3cret@h/d")
    assert str(refused.value) == (
        "postgresql+psycopg2://… needs the psycopg2 package, which is not installed: "
        "pip install psycopg2-binary, or use postgresql+psycopg:// "
        "(psycopg 3, installed with programma-sa)"
    )
    # An async engine never needed psycopg2: it uses psycopg 3.
    assert async_url("postgresql+psycopg2://u@h/d").drivername == "postgresql+psycopg"


def test_asyncio_without_greenlet_is_one_line_saying_what_to_install(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(sys.modules, "greenlet", None)
    with pytest.raises(ConfigurationError) as refused:
        async_url("postgresql+asyncpg://u@h/d")
    assert str(refused.value) == (
        "asyncio needs the greenlet package, which is not installed: "
        'pip install greenlet (the "asyncio" extra)'
    )
    assert sync_url("postgresql+asyncpg://u@h/d").drivername == "postgresql+psycopg"
