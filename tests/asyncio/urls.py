"""The test database's URL with an asyncio driver."""

from __future__ import annotations

from sqlalchemy.engine import make_url

#: The asyncio drivers every async test runs on.
DRIVERS = ("psycopg", "asyncpg")


def async_url(database_url: str, driver: str) -> str:
    """``database_url`` with the async ``driver``: psycopg 3 (async mode) or asyncpg.

    Only the driver changes, so the embedded backend's unix-socket URL
    (``?host=/path``) carries over; both drivers accept it.
    """
    url = make_url(database_url).set(drivername=f"postgresql+{driver}")
    return url.render_as_string(hide_password=False)
